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
``trust_remote_code=True``: ``proc = model.strategy_contrast_processor()``.

How it runs inside ``model.generate(..., logits_processor=LogitsProcessorList([proc]))``:

* PAL's ``_get_logits_processor`` moves the processor to the front of the processor list, so
  it combines raw scores *before* repetition penalty, temperature, top-k and top-p, and binds
  it to the model for that call (``generate`` unbinds it when it returns).
* While bound, PAL's forward runs the persona-free decoder pass in the same batch as the
  persona pass (rows [0, R) over H_final, rows [R, 2R) over H_D), so the persona-free prefix is
  never recomputed: it lives in the same KV cache, and PAL's ``_reorder_cache`` applies every
  beam reordering to both halves. The processor receives the persona-free last-position logits
  from that forward.
* Greedy / sampling: the processor sees raw logits and returns the raw combination (eq. 6 up to
  normalisation). Beam search: transformers hands processors log-probabilities; the processor
  then combines log-probabilities and renormalises with ``log_softmax`` so beams keep
  comparable scores (eq. 6 is a proportionality).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from transformers import LogitsProcessor

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


class StrategyContrastiveLogitsProcessor(LogitsProcessor):
    """``(1 + alpha) * logits(d, p) - alpha * logits(d)`` with alpha read from each sequence's strategy.

    Args:
        strategy_token_ids: vocabulary ids of the eight strategy tokens, in the order of
            ``strategy_names`` (``model.config.strategy_token_ids``).
        alpha: see :func:`resolve_strategy_alphas` (None = ``base_table`` = paper Table 2).
        base_table: the table ``alpha`` starts from (``model.config.strategy_alpha``).
        strategy_position: index in the decoder sequence of the strategy slot (1: right after
            the decoder start token). A strategy forced through ``decoder_input_ids`` counts too.
        unknown_strategy_alpha: alpha for a sequence whose strategy slot holds a non-strategy
            token (an untrained model may do that). Default 0: plain decoding.
        combine_before_lm_head: where the combination is computed (same result up to float
            rounding). True (default): inside PAL's forward, on the input of the output
            projection, ``W((1+a) h_p - a h_d) + b = (1+a)(W h_p + b) - a(W h_d + b)``, so the
            vocabulary projection runs once per row instead of twice; valid because the logits
            of PAL's backbones (BERT, BART, Blenderbot, T5) are an affine map of that input.
            False: both halves are projected and the processor combines the two logit vectors.

    Use it only with PAL's ``generate``; called outside of it (no persona-free pass for the
    step) it raises ``RuntimeError``. After a call, ``last_alpha`` holds the per-row alphas used.
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
        self._model = None
        self._scores_are_log_probs = False
        self._pending = None
        self._pending_alpha = None
        self._paired = None
        self._row_tokens = None
        self.last_alpha = None

    # -- binding (called by PAL's generate plumbing) --------------------------------------
    def _bind(self, model, scores_are_log_probs: bool) -> None:
        self._model = model
        self._scores_are_log_probs = bool(scores_are_log_probs)
        self._reset_state()

    def _unbind(self) -> None:
        self._model = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._pending = None
        self._pending_alpha = None
        self._paired = None
        self._row_tokens = None

    def _receive_persona_free_logits(self, logits: torch.Tensor) -> None:
        self._pending = logits

    def _receive_combined(self, alpha: torch.Tensor) -> None:
        self._pending = "combined"
        self._pending_alpha = alpha

    # -- strategy tracking inside the model's forward ----------------------------------------
    def _track_strategy_tokens(self, decoder_input_ids: torch.LongTensor, past_length: int) -> torch.Tensor:
        """Called by PAL's forward with the new decoder tokens of each row (after ``past_length``
        cached ones); remembers each row's strategy-slot token and returns the rows' alphas."""
        rows, new = decoder_input_ids.shape
        if self._row_tokens is None or past_length == 0 or self._row_tokens.shape[0] != rows:
            self._row_tokens = torch.full((rows,), -1, dtype=torch.long, device=decoder_input_ids.device)
        pos = self.strategy_position
        if past_length <= pos < past_length + new:
            self._row_tokens = decoder_input_ids[:, pos - past_length].clone()
        return self.alphas_from_tokens(self._row_tokens)

    def _reorder_rows(self, beam_idx: torch.LongTensor) -> None:
        if self._row_tokens is not None:
            self._row_tokens = self._row_tokens.index_select(0, beam_idx.to(self._row_tokens.device))

    def alphas_from_tokens(self, tokens: torch.LongTensor) -> torch.Tensor:
        """Alpha per row from each row's strategy-slot token (-1: not decoded yet -> 0)."""
        values = [
            0.0 if t < 0 else self._token_alpha.get(t, self.unknown_strategy_alpha) for t in tokens.tolist()
        ]
        return torch.tensor(values, dtype=torch.float32, device=tokens.device)

    def _paired_encoder_states(self, persona_states, dialogue_states, attention_mask):
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

    # -- alpha per row -----------------------------------------------------------------------
    def alphas_for(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Per-row alpha for the decoder sequences ``input_ids`` ([rows, length]): 0 while the
        strategy slot is not decoded yet, the strategy's alpha afterwards."""
        rows, length = input_ids.shape
        if length <= self.strategy_position:
            return torch.zeros(rows, dtype=torch.float32, device=input_ids.device)
        values = [
            self._token_alpha.get(int(t), self.unknown_strategy_alpha)
            for t in input_ids[:, self.strategy_position].tolist()
        ]
        return torch.tensor(values, dtype=torch.float32, device=input_ids.device)

    def combine(self, scores: torch.Tensor, persona_free: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The eq. 6 combination for one step (rows with alpha 0 are returned untouched)."""
        a = alpha.to(scores.dtype)[:, None]
        persona_free = persona_free.to(scores.dtype)
        if self._scores_are_log_probs:
            persona_free = torch.log_softmax(persona_free, dim=-1)
            combined = torch.log_softmax((1 + a) * scores - a * persona_free, dim=-1)
        else:
            combined = (1 + a) * scores - a * persona_free
        return torch.where(a == 0, scores, combined)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        persona_free, model_alpha = self._pending, self._pending_alpha
        self._pending, self._pending_alpha = None, None
        if persona_free is None:
            raise RuntimeError(
                "StrategyContrastiveLogitsProcessor got no persona-free pass for this step: pass it to "
                "generate() of a PAL model (PALForConditionalGeneration), which runs the persona-free pass"
            )
        alpha = self.alphas_for(input_ids).to(scores.device)
        self.last_alpha = alpha
        if isinstance(persona_free, str):
            # the model already combined before its output projection, with the alphas it tracked
            if model_alpha is None or not torch.equal(model_alpha.to(alpha.device), alpha):
                raise RuntimeError(
                    f"strategy tracking out of step: the model combined with alphas {model_alpha} but the "
                    f"sequences give {alpha}"
                )
            return scores
        if persona_free.shape != scores.shape:
            raise RuntimeError(
                f"persona-free logits {tuple(persona_free.shape)} do not match the scores {tuple(scores.shape)}"
            )
        return self.combine(scores, persona_free, alpha)


__all__ = ["StrategyContrastiveLogitsProcessor", "resolve_strategy_alphas"]
