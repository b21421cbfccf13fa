"""Strategy-based contrastive decoding for PAL (Cheng et al., 2023, section 3.4, eq. 6).

At every decoding step the next-token scores become

    (1 + alpha) * logits(d, p) - alpha * logits(d)

where ``logits(d, p)`` is PAL conditioned on dialogue and persona and ``logits(d)`` is the same
model over the plain dialogue states H_D for the same decoder prefix. ``alpha`` is chosen per
sequence from the strategy token that sequence decoded first (the token right after the
decoder start; paper Table 2 by default) and held for the rest of the response; before that
token exists (the first step, which picks the strategy) the scores pass through unchanged.

This file ships inside the PAL model folder (``modeling_pal.py`` imports it), so
``save_pretrained`` copies it and a user with only transformers installed gets it with
``trust_remote_code=True``: ``model.generate(..., logits_processor=[model.strategy_contrast_processor()])``.

How it runs, on public transformers extension points only
----------------------------------------------------------
* ``PALForConditionalGeneration.generate`` (an ordinary override of the public method) sees the
  processor in ``logits_processor`` and hands ``generate`` a :class:`StrategyContrastCache`
  through the documented user-cache argument (``cache=`` / ``past_key_values=``, see
  :func:`cache_argument_name`). That cache is a public ``EncoderDecoderCache`` holding 2R rows:
  rows [0, R) for the persona pass, rows [R, 2R) for the persona-free pass.
* PAL's ``forward`` recognises the cache and runs both passes in one batch (rows [0, R) over
  H_final, rows [R, 2R) over H_D), so the persona-free prefix is never recomputed and one
  backbone call serves both. It combines the two halves itself, before ``forward`` returns, so
  the combination happens on raw scores before every processor ``generate`` applies
  (repetition penalty, temperature, top-k, top-p) whatever order transformers builds them in.
  With ``combine_before_lm_head`` (default) the halves are combined on the input of the output
  projection, ``W((1+a) h_p - a h_d) + b = (1+a)(W h_p + b) - a(W h_d + b)``, so the vocabulary
  projection runs once per row.
* Beam search reorders the cache through its public ``reorder_cache``; the cache applies every
  reordering to both halves and to the strategy token it tracks per row.
* The processor itself changes nothing: it checks, from the full sequences ``generate`` hands
  it, that the model combined each row with that row's alpha, and raises otherwise. A cache
  that fell out of step with the sequences (a transformers release that feeds ``forward``
  differently) therefore fails loudly instead of decoding wrong text.
* Beam search scores are log-probabilities of the combined logits. Eq. 6 is a proportionality:
  ``log_softmax((1+a) l_p - a l_d) = log_softmax((1+a) log_softmax(l_p) - a log_softmax(l_d))``,
  so combining raw logits and combining log-probabilities give the same beams.

Why not the alternatives: a processor that owns a second, separate persona-free pass (the shape
of transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``) runs the decoder twice per
step and must rediscover beam reorderings from the sequences; ``custom_generate`` would mean
shipping and maintaining our own greedy, sampling and beam-search loops. The user-cache route
keeps transformers' own loops and costs one batched backbone call per step.
"""

from __future__ import annotations

import inspect
import math
from numbers import Real

import torch
from transformers import DynamicCache, EncoderDecoderCache, GenerationMixin, LogitsProcessor

from .configuration_pal import ALPHA_LEVELS, DEFAULT_STRATEGY_ALPHA, STRATEGY_NAMES


def _canonical_strategy(name, strategy_names=STRATEGY_NAMES) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"strategy names must be strings, got {type(name).__name__} {name!r}; valid strategies: {list(strategy_names)}"
        )
    key = name.strip()
    if key.startswith("[") and key.endswith("]"):
        key = key[1:-1].strip()
    for candidate in strategy_names:
        if candidate.lower() == key.lower():
            return candidate
    raise ValueError(f"unknown strategy {name!r}; valid strategies: {list(strategy_names)}")


def _alpha_value(value, where: str, strategy_names=STRATEGY_NAMES) -> float:
    if isinstance(value, str):
        level = value.strip().lower()
        if level not in ALPHA_LEVELS:
            raise ValueError(
                f"{where}: unknown alpha level {value!r}; use a number >= 0 or one of {list(ALPHA_LEVELS)} "
                f"(valid strategies: {list(strategy_names)})"
            )
        return ALPHA_LEVELS[level]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{where}: alpha must be a number >= 0 or one of {list(ALPHA_LEVELS)}, got {type(value).__name__} {value!r} "
            f"(valid strategies: {list(strategy_names)})"
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{where}: alpha must be a finite number >= 0, got {value!r} (valid strategies: {list(strategy_names)})"
        )
    return value


def resolve_strategy_alphas(alpha=None, base_table=None, strategy_names=STRATEGY_NAMES) -> dict:
    """Turn a user's alpha choice into ``{strategy name: alpha}`` for all eight strategies.

    ``alpha`` may be:
      * ``None``: ``base_table`` (default: paper Table 2);
      * a number >= 0 or a level name (``"low"`` 0, ``"medium"`` 0.375, ``"high"`` 0.75): every strategy;
      * a dict ``{strategy: number or level}``: overrides for the strategies it names; the others
        keep ``base_table``. Keys are strategy names, case-insensitive, with or without brackets
        (``"Question"``, ``"[Question]"``).

    Unknown strategies, unknown levels, negative / non-finite / non-numeric values raise an error
    that lists the valid strategy names.
    """
    base = DEFAULT_STRATEGY_ALPHA if base_table is None else base_table
    table = {}
    for name, value in dict(base).items():
        canonical = _canonical_strategy(name, strategy_names)
        table[canonical] = _alpha_value(value, f"alpha table entry {name!r}", strategy_names)
    missing = [n for n in strategy_names if n not in table]
    if missing:
        raise ValueError(f"alpha table misses strategies {missing}; valid strategies: {list(strategy_names)}")
    if alpha is None:
        return table
    if isinstance(alpha, dict):
        if not alpha:
            raise ValueError(f"alpha table is empty; name some of the strategies {list(strategy_names)}")
        for name, value in alpha.items():
            canonical = _canonical_strategy(name, strategy_names)
            table[canonical] = _alpha_value(value, f"alpha for strategy {name!r}", strategy_names)
        return table
    if isinstance(alpha, (str, Real)):
        value = _alpha_value(alpha, "alpha", strategy_names)
        return {name: value for name in strategy_names}
    raise TypeError(
        f"alpha must be None, a number, a level name {list(ALPHA_LEVELS)} or a dict strategy -> alpha, "
        f"got {type(alpha).__name__}; valid strategies: {list(strategy_names)}"
    )



def cache_argument_name(function=None) -> str:
    """The keyword under which ``function`` takes the KV cache: ``"cache"`` from transformers
    5.25 on, ``"past_key_values"`` before. Default ``function``: the public
    ``GenerationMixin.prepare_inputs_for_generation``, i.e. the name ``generate`` takes a user's
    cache under and passes to a model's ``forward``. PAL also asks it of its backbone's ``forward``.
    The one place in PAL that depends on the transformers version (tested in CI on both ends of
    the supported range)."""
    if function is None:
        function = GenerationMixin.prepare_inputs_for_generation
    parameters = inspect.signature(function).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output):
    """The KV cache a model output carries: field ``cache`` from transformers 5.25 on,
    ``past_key_values`` before (read without touching the deprecated alias)."""
    fields = getattr(output, "__dataclass_fields__", {})
    return getattr(output, "cache" if "cache" in fields else "past_key_values", None)


def prepare_pal_generate(logits_processor, kwargs: dict, needs_own_cache: bool = False):
    """The checks both PAL ``generate`` overrides make before handing transformers their cache.

    Returns ``(processor, own_cache)``: the :class:`StrategyContrastiveLogitsProcessor` among
    ``logits_processor`` (or None), and whether the model passes its own cache (with a processor,
    or when ``needs_own_cache``). Then a user's cache, ``use_cache=False`` and assisted decoding are
    refused with a clear error, and empty cache keywords are dropped from ``kwargs``."""
    processors = list(logits_processor) if logits_processor is not None else []
    contrast = [p for p in processors if getattr(p, "_is_pal_strategy_contrast", False)]
    if len(contrast) > 1:
        raise ValueError("pass at most one StrategyContrastiveLogitsProcessor to generate()")
    own_cache = bool(contrast) or needs_own_cache
    if own_cache:
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise ValueError(
                "PAL generation with a persona or the strategy processor brings its own cache; do not pass "
                "cache= / past_key_values="
            )
        if kwargs.get("use_cache") is False:
            raise ValueError("PAL generation with a persona or the strategy processor needs use_cache=True")
        for name in ("assistant_model", "prompt_lookup_num_tokens"):
            if kwargs.get(name) is not None:
                raise ValueError(f"PAL generation with its own cache does not support {name}= (assisted decoding)")
        kwargs.pop("cache", None)
        kwargs.pop("past_key_values", None)
    return (contrast[0] if contrast else None), own_cache


class StrategyContrastiveLogitsProcessor(LogitsProcessor):
    """``(1 + alpha) * logits(d, p) - alpha * logits(d)`` with alpha read from each sequence's strategy.

    Pass it to a PAL model's ``generate(..., logits_processor=[proc])``; the model then runs the
    persona-free pass and combines (see the module docstring). The processor checks each step
    against the sequences and records the alphas in ``last_alpha``.

    Args:
        strategy_token_ids: vocabulary ids of the eight strategy tokens, in the order of
            ``strategy_names`` (``model.config.strategy_token_ids``).
        alpha: see :func:`resolve_strategy_alphas` (None = ``base_table`` = paper Table 2).
        base_table: the table ``alpha`` starts from (``model.config.strategy_alpha``).
        strategy_position: index in the decoder sequence of the strategy slot (1: right after
            the decoder start token). A strategy forced through ``decoder_input_ids`` counts too.
        unknown_strategy_alpha: alpha for a sequence whose strategy slot holds a non-strategy
            token (an untrained model may do that). Default 0: plain decoding.
        combine_before_lm_head: where the model combines (same result up to float rounding).
            True (default): on the input of the output projection, which then runs once per row;
            valid because the logits of PAL's backbones (BERT, BART, Blenderbot, T5) are an
            affine map of that input. False: both halves are projected and their logits combined.

    Called outside a PAL ``generate`` (no model step to check) it raises ``RuntimeError``.
    """

    _is_pal_strategy_contrast = True

    def __init__(
        self,
        strategy_token_ids,
        alpha=None,
        base_table=None,
        strategy_names=STRATEGY_NAMES,
        strategy_position: int = 1,
        unknown_strategy_alpha: float = 0.0,
        combine_before_lm_head: bool = True,
    ):
        if strategy_token_ids is None or len(strategy_token_ids) != len(strategy_names):
            raise ValueError(
                f"strategy_token_ids must give one vocabulary id per strategy {list(strategy_names)}, "
                f"got {strategy_token_ids!r} (build the model with PALForConditionalGeneration.from_backbone)"
            )
        if not isinstance(strategy_position, int) or strategy_position < 0:
            raise ValueError(f"strategy_position must be an int >= 0, got {strategy_position!r}")
        self.strategy_names = tuple(strategy_names)
        self.alphas = resolve_strategy_alphas(alpha, base_table, self.strategy_names)
        self.unknown_strategy_alpha = _alpha_value(unknown_strategy_alpha, "unknown_strategy_alpha", self.strategy_names)
        self.strategy_token_ids = [int(t) for t in strategy_token_ids]
        self.strategy_position = strategy_position
        self._token_alpha = {tid: self.alphas[name] for tid, name in zip(self.strategy_token_ids, self.strategy_names)}
        self.combine_before_lm_head = bool(combine_before_lm_head)
        self._model_alpha = None
        self._position = strategy_position
        self.last_alpha = None

    def reset(self, strategy_position: int | None = None) -> None:
        """Forget the step state (``generate`` calls this before it starts). A causal-LM PAL passes
        ``strategy_position``: the strategy slot follows its prompt, whose length varies per call."""
        self._model_alpha = None
        self._position = self.strategy_position if strategy_position is None else int(strategy_position)
        self.last_alpha = None

    def record_model_step(self, alpha: torch.Tensor) -> None:
        """Called by PAL's forward: the per-row alphas it combined with at this step."""
        self._model_alpha = alpha

    def alphas_from_tokens(self, tokens: torch.LongTensor) -> torch.Tensor:
        """Alpha per row from each row's strategy-slot token (-1: not decoded yet -> 0)."""
        values = [
            0.0 if t < 0 else self._token_alpha.get(t, self.unknown_strategy_alpha) for t in tokens.tolist()
        ]
        return torch.tensor(values, dtype=torch.float32, device=tokens.device)

    def alphas_for(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Per-row alpha for the decoder sequences ``input_ids`` ([rows, length]): 0 while the
        strategy slot is not decoded yet, the strategy's alpha afterwards."""
        rows, length = input_ids.shape
        if length <= self._position:
            return torch.zeros(rows, dtype=torch.float32, device=input_ids.device)
        return self.alphas_from_tokens(input_ids[:, self._position])

    @staticmethod
    def combine(scores: torch.Tensor, persona_free: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Eq. 6 on one set of rows: ``(1 + a) * scores - a * persona_free`` (a broadcast over the
        trailing dims); rows with alpha 0 are returned untouched."""
        a = alpha.to(device=scores.device, dtype=scores.dtype).view(-1, *([1] * (scores.dim() - 1)))
        combined = (1 + a) * scores - a * persona_free.to(scores.dtype)
        return torch.where(a == 0, scores, combined)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        model_alpha, self._model_alpha = self._model_alpha, None
        if model_alpha is None:
            raise RuntimeError(
                "StrategyContrastiveLogitsProcessor got no contrastive model step: pass it to generate() of a PAL "
                "model (PALForConditionalGeneration), whose forward runs the persona-free pass and combines"
            )
        alpha = self.alphas_for(input_ids).to(scores.device)
        if not torch.equal(model_alpha.to(alpha.device), alpha):
            raise RuntimeError(
                f"strategy tracking out of step: the model combined with alphas {model_alpha.tolist()} but the "
                f"sequences give {alpha.tolist()}; the KV cache no longer matches the sequences generate() holds"
            )
        self.last_alpha = alpha
        return scores


class _StrategyTracking:
    """Per-row strategy tracking shared by the contrastive caches: ``strategy_tokens`` holds the
    token in each (persona) row's strategy slot, -1 until decoded; beam reordering moves it."""

    strategy_tokens = None
    strategy_position = 1
    processor = None

    def track_strategy_tokens(self, input_ids: torch.LongTensor, past_length: int) -> torch.Tensor:
        """Record each persona row's strategy-slot token from its new tokens (the ones after
        ``past_length`` cached positions) and return the rows' alphas."""
        rows, new = input_ids.shape
        if self.strategy_tokens is None or past_length == 0:
            self.strategy_tokens = torch.full((rows,), -1, dtype=torch.long, device=input_ids.device)
        elif self.strategy_tokens.shape[0] != rows:
            raise RuntimeError(
                f"the contrastive cache tracks {self.strategy_tokens.shape[0]} sequences but forward got {rows}; "
                "strategy contrastive decoding supports greedy, sampling and beam search"
            )
        pos = self.strategy_position
        if past_length <= pos < past_length + new:
            self.strategy_tokens = input_ids[:, pos - past_length].clone()
        return self.processor.alphas_from_tokens(self.strategy_tokens)

    def _reorder_tracked(self, beam_idx: torch.LongTensor) -> None:
        if self.strategy_tokens is not None:
            self.strategy_tokens = self.strategy_tokens.index_select(0, beam_idx.to(self.strategy_tokens.device))


class StrategyContrastCache(_StrategyTracking, EncoderDecoderCache):
    """The KV cache of one contrastive ``generate`` call: persona rows [0, R), persona-free rows [R, 2R).

    A public ``EncoderDecoderCache`` over two ``DynamicCache``s, handed to ``generate`` as the
    user's cache. On top of the key/value states it keeps, per persona row, the token in the
    strategy slot (``strategy_tokens``; -1 until decoded), and the paired encoder states
    ``[H_final; H_D]`` built once per call. ``reorder_cache`` (beam search) moves all of them.
    """

    def __init__(self, processor: StrategyContrastiveLogitsProcessor):
        super().__init__(DynamicCache(), DynamicCache())
        self.processor = processor
        self.strategy_position = processor.strategy_position
        self.strategy_tokens = None
        self._paired = None

    @property
    def combine_before_lm_head(self) -> bool:
        return self.processor.combine_before_lm_head

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self._reorder_tracked(beam_idx)
        return super().reorder_cache(torch.cat([beam_idx, beam_idx + beam_idx.shape[0]]))

    def batch_repeat_interleave(self, repeats: int):
        raise NotImplementedError("strategy contrastive decoding supports greedy, sampling and beam search")

    def batch_select_indices(self, indices: torch.Tensor):
        raise NotImplementedError("strategy contrastive decoding supports greedy, sampling and beam search")

    def paired_encoder_states(self, persona_states, dialogue_states, attention_mask):
        """``[H_final; H_D]`` and the doubled mask, built once per generate call (the encoder
        outputs stay the same tensors across steps) instead of being copied at every step.

        ``attention_mask`` is the mask of H_final. When H_final has more keys than H_D (persona
        positions appended, ``persona_alignment="concat"``), H_D is padded with zeros to that
        length and the extra keys are masked out of the persona-free rows."""
        cached = self._paired
        if cached is not None and cached[0] is persona_states and cached[1] is dialogue_states and cached[2] is attention_mask:
            return cached[3], cached[4]
        extra = persona_states.shape[1] - dialogue_states.shape[1]
        free_states, free_mask = dialogue_states, attention_mask
        if extra > 0:
            free_states = torch.nn.functional.pad(dialogue_states, (0, 0, 0, extra))
            free_mask = attention_mask.clone()
            free_mask[:, -extra:] = 0
        elif extra < 0:
            raise ValueError(
                f"the persona-conditioned states have {persona_states.shape[1]} keys, fewer than the "
                f"{dialogue_states.shape[1]} dialogue states; they must cover the dialogue positions"
            )
        states = torch.cat([persona_states, free_states], dim=0)
        mask = torch.cat([attention_mask, free_mask], dim=0)
        self._paired = (persona_states, dialogue_states, attention_mask, states, mask)
        return states, mask


class PALCausalCache(_StrategyTracking, DynamicCache):
    """The KV cache of a causal-LM PAL ``generate`` call (``PALForCausalLM``).

    It keeps what the decoder-only model needs across steps besides keys and values: the persona
    states of the fusion layer and the refined persona H^_P computed from the prompt at the
    first step (``persona``), so later steps fuse each new token without re-encoding anything.
    With a strategy contrastive ``processor`` it tracks each row's strategy, whose slot is
    ``strategy_position`` (the first position after the prompt), and, unless the model fuses its
    last layer (then both passes share every cached state), holds 2R rows (persona rows [0, R),
    persona-free rows [R, 2R); ``doubled``). ``reorder_cache`` (beam search) moves all of it.
    """

    def __init__(self, processor: StrategyContrastiveLogitsProcessor | None = None, strategy_position: int = 0):
        super().__init__()
        self.processor = processor
        self.strategy_position = int(strategy_position)
        self.strategy_tokens = None
        self.persona = None  # (H_P, persona mask, H^_P) of the persona rows
        self.doubled = None  # set by the model: True when the cache holds the persona-free rows too

    def reorder_cache(self, beam_idx: torch.LongTensor):
        if self.persona is not None:
            self.persona = tuple(t.index_select(0, beam_idx.to(t.device)) for t in self.persona)
        self._reorder_tracked(beam_idx)
        if self.doubled:
            beam_idx = torch.cat([beam_idx, beam_idx + beam_idx.shape[0]])
        return super().reorder_cache(beam_idx)

    def batch_repeat_interleave(self, repeats: int):
        raise NotImplementedError("PAL generation supports greedy, sampling and beam search")

    def batch_select_indices(self, indices: torch.Tensor):
        raise NotImplementedError("PAL generation supports greedy, sampling and beam search")


__all__ = [
    "PALCausalCache",
    "StrategyContrastCache",
    "StrategyContrastiveLogitsProcessor",
    "cache_argument_name",
    "output_cache",
    "prepare_pal_generate",
    "resolve_strategy_alphas",
]
