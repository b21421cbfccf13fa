"""P2Bot's self-play reward factories: ``language_style`` (RS.1), ``discourse_coherence`` (RS.2) and
``repetition_penalty`` (the authors' information penalty).

The Transmitter plugin registers them under those names, so ``hf_persona.get_reward(name, ...)``
calls them; each returns a TRL reward function ``reward(prompts, completions, **columns) -> list[float]``,
a class of this module with a documented range (:mod:`hf_persona.rewards.bounds`), built on the unbounded
scorer of the same equation (``LanguageStyleScore``, ``DiscourseCoherenceScore``, ``RepetitionScore``):

==========================  ====================================  ====================================
reward                      range                                 an empty / whitespace completion
==========================  ====================================  ====================================
``language_style``          ``[min_score, 0]`` (mean token        ``min_score`` (default ``-20.0``)
                            log-probability, nats)
``discourse_coherence``     ``[min_score, 0]`` (``log p``);       ``min_score`` (default ``-20.0``;
                            ``[min_score, 0.5]`` (``p - 0.5``)    ``-0.5`` with ``prob_minus_half``)
``repetition_penalty``      ``[-1, 0]``                           ``-1`` (as an exact repeat)
==========================  ====================================  ====================================

An empty completion is not scored (the language model would give its end-of-sequence token a high
log-probability, and an empty bag of words repeats nothing); scores below ``min_score`` are raised to
it, so no completion scores below an empty one. ``-20`` nats per token is a probability of about
``2e-9`` per token, far below the mean log-probability of any text under a trained language model.

The scorers (paper section 3.3), each a callable ``scorer(prompts, completions, **columns) ->
list[float]`` (one float per completion; higher is better) without the range and the floor:

* ``LanguageStyleScore`` (RS.1, eq. 6): length-normalised log-probability of the completion under
  a frozen language model (a Hub causal LM such as ``gpt2``, or a trained Transmitter scoring the
  utterance without persona or history).
* ``DiscourseCoherenceScore`` (RS.2, eq. 7): ``log p(next = 1 | persona, history, completion)`` from
  a Transmitter's next-utterance-prediction head (``form="prob_minus_half"`` gives the authors' code
  variant ``p - 0.5``). Columns: ``persona`` and ``history``.
* ``RepetitionScore`` (the authors' information penalty): minus the largest cosine similarity
  between the completion's word-count vector and any earlier utterance. Column: ``history``.

RS.3 (persona perception, eq. 8) is :mod:`hf_persona.rewards.persona_perception`'s
``persona_perception`` reward in its ``mode="discounted"`` form, fed by the self-play columns of
:func:`hf_persona.training.selfplay.episode_columns`.
"""

from __future__ import annotations

import math
from collections import Counter

from hf_persona.errors import HFPersonaError

from .bounds import BoundedReward, check_min_score
from .text import completion_text


def _column(columns: dict, name: str, n: int, reward: str) -> list:
    if name not in columns or columns[name] is None:
        raise HFPersonaError(f"reward {reward!r} needs a {name!r} column (one value per completion)")
    values = list(columns[name])
    if len(values) != n:
        raise HFPersonaError(f"reward {reward!r}: column {name!r} has {len(values)} values for {n} completions")
    return values


def _load_model_and_tokenizer(model, tokenizer, what: str):
    """Accept a model instance (with ``tokenizer``) or a name / path (loaded frozen)."""
    if model is None:
        raise HFPersonaError(f"reward {what!r} needs model=<a model instance or a path / Hub id>")
    if isinstance(model, str):
        from pathlib import Path

        from transformers import AutoModelForCausalLM, AutoTokenizer

        from hf_persona.backbones import resolve

        path = resolve(model)
        cfg = Path(path) / "config.json"
        if cfg.is_file() and '"p2bot_transmitter"' in cfg.read_text():
            from hf_persona.training.transmitter import load_transmitter

            model, tokenizer = load_transmitter(path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
    if tokenizer is None:
        raise HFPersonaError(f"reward {what!r}: pass tokenizer= together with a model instance")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def _is_transmitter(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "p2bot_transmitter"


class LanguageStyleScore:
    """RS.1: mean token log-probability of each completion under a frozen LM (eq. 6).

    The completion is scored on its own (no persona, no history), followed by the end-of-sequence
    token; with a Transmitter it follows the Transmitter's context for an empty persona and history
    (``<persona> <self> text <eos>``, or the chat frame for a chat-template LM), with another causal
    LM as ``bos text eos``.
    """

    __name__ = "language_style"

    def __init__(self, model=None, tokenizer=None, batch_size: int = 32, max_tokens: int = 64):
        self.model, self.tokenizer = _load_model_and_tokenizer(model, tokenizer, "language_style")
        self.batch_size = int(batch_size)
        self.max_tokens = int(max_tokens)
        self._empty_context = None

    def _sequence(self, text: str):
        tok = self.tokenizer
        eos = tok.eos_token_id
        if _is_transmitter(self.model):
            from hf_persona.models.transmitter import build_context_ids, encode_response

            if self._empty_context is None:  # the same for every completion: built once
                self._empty_context = build_context_ids(tok, [], [], max_context_tokens=64)
            prefix = list(self._empty_context)
            body = encode_response(tok, text, self.max_tokens)[:-1]  # the reply as the Transmitter writes it
        else:
            start = tok.bos_token_id if tok.bos_token_id is not None else eos
            if start is None:
                raise HFPersonaError("language_style needs a tokenizer with a bos or eos token")
            prefix = [start]
            body = list(tok.encode(" " + text.strip(), add_special_tokens=False))[: self.max_tokens]
        scored = body + ([eos] if eos is not None else [])
        if not scored:
            raise HFPersonaError("language_style cannot score an empty completion without an eos token")
        return prefix, scored

    def __call__(self, prompts, completions, **columns) -> list:
        import torch

        texts = [completion_text(c) for c in completions]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), self.batch_size):
            seqs = [self._sequence(t) for t in texts[start:start + self.batch_size]]
            width = max(len(p) + len(s) for p, s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            labels = torch.full((len(seqs), width), -100, dtype=torch.long)
            for i, (p, s) in enumerate(seqs):
                row = p + s
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
                labels[i, len(p): len(row)] = torch.tensor(s)
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            lab = labels[:, 1:].to(device)
            valid = lab != -100
            tok_lp = logp.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
            out.extend((tok_lp.sum(-1) / valid.sum(-1).clamp(min=1)).cpu().tolist())
        return out


class DiscourseCoherenceScore:
    """RS.2: ``log p(next = 1)`` of each completion given ``persona`` and ``history`` (eq. 7)."""

    __name__ = "discourse_coherence"

    def __init__(self, model=None, tokenizer=None, form: str = "log_prob", batch_size: int = 32):
        self.model, self.tokenizer = _load_model_and_tokenizer(model, tokenizer, "discourse_coherence")
        if not _is_transmitter(self.model):
            raise HFPersonaError("discourse_coherence needs a Transmitter (it reads the next-utterance head)")
        if form not in ("log_prob", "prob_minus_half"):
            raise HFPersonaError(f"form must be 'log_prob' (paper) or 'prob_minus_half' (authors' code), got {form!r}")
        self.form = form
        self.batch_size = int(batch_size)

    def __call__(self, prompts, completions, **columns) -> list:
        from hf_persona.models.transmitter import build_example, pad_batch, special_token_ids

        texts = [completion_text(c) for c in completions]
        personas = _column(columns, "persona", len(texts), "discourse_coherence")
        histories = _column(columns, "history", len(texts), "discourse_coherence")
        cfg = self.model.config
        pad = special_token_ids(self.tokenizer)["pad"]
        scores = []
        for start in range(0, len(texts), self.batch_size):
            examples = [
                build_example(self.tokenizer, p, h, t, cfg.max_context_tokens, cfg.max_response_tokens)
                for p, h, t in zip(personas[start:start + self.batch_size], histories[start:start + self.batch_size],
                                   texts[start:start + self.batch_size])
            ]
            scores.extend(self.model.score_batch(pad_batch(examples, pad))["nup_logprob"].tolist())
        if self.form == "prob_minus_half":
            return [math.exp(s) - 0.5 for s in scores]
        return scores


def _bag(text: str) -> Counter:
    from hf_persona.evaluation import tokenize

    return Counter(tokenize(text))


def bow_cosine(a: str, b: str) -> float:
    """Cosine similarity of two texts' word-count vectors (0 when either is empty)."""
    ca, cb = _bag(a), _bag(b)
    if not ca or not cb:
        return 0.0
    dot = sum(v * cb.get(k, 0) for k, v in ca.items())
    return dot / (math.sqrt(sum(v * v for v in ca.values())) * math.sqrt(sum(v * v for v in cb.values())))


class RepetitionScore:
    """Minus the largest bag-of-words cosine between a completion and the utterances in ``history``.

    0 for a completion sharing no word with any earlier utterance, -1 for an exact repeat.
    """

    __name__ = "repetition_penalty"

    def __call__(self, prompts, completions, **columns) -> list:
        texts = [completion_text(c) for c in completions]
        histories = _column(columns, "history", len(texts), "repetition_penalty")
        out = []
        for text, history in zip(texts, histories):
            if isinstance(history, str):
                raise HFPersonaError("repetition_penalty: each 'history' value must be a list of utterances")
            out.append(-max((bow_cosine(text, h) for h in history), default=0.0))
        return out


#: the default floor of the log-probability rewards (nats per token)
LOG_PROB_FLOOR = -20.0


class LanguageStyleReward(BoundedReward, LanguageStyleScore):
    """RS.1 in ``[min_score, 0]``; an empty completion scores ``min_score``."""

    def __init__(self, model=None, tokenizer=None, min_score: float = LOG_PROB_FLOOR, **options):
        low = check_min_score(min_score, "language_style", below=0.0)
        super().__init__(model=model, tokenizer=tokenizer, **options)
        self.reward_range = (low, 0.0)


class DiscourseCoherenceReward(BoundedReward, DiscourseCoherenceScore):
    """RS.2 in ``[min_score, 0]`` (``form="log_prob"``) or ``[min_score, 0.5]`` (``"prob_minus_half"``,
    ``min_score`` -0.5 by default); an empty completion scores ``min_score``."""

    def __init__(self, model=None, tokenizer=None, form: str = "log_prob", min_score: float | None = None,
                 **options):
        high = 0.5 if form == "prob_minus_half" else 0.0
        if min_score is None:
            min_score = -0.5 if form == "prob_minus_half" else LOG_PROB_FLOOR
        low = check_min_score(min_score, "discourse_coherence", below=high)
        super().__init__(model=model, tokenizer=tokenizer, form=form, **options)
        self.reward_range = (low, high)


class RepetitionPenalty(BoundedReward, RepetitionScore):
    """The information penalty in ``[-1, 0]``; an empty completion scores -1."""

    reward_range = (-1.0, 0.0)


def language_style(model=None, tokenizer=None, **options):
    """``get_reward("language_style", model=LM, min_score=-20.0, ...)``: RS.1, a :class:`LanguageStyleReward`."""
    return LanguageStyleReward(model=model, tokenizer=tokenizer, **options)


def discourse_coherence(model=None, tokenizer=None, **options):
    """``get_reward("discourse_coherence", model=TRANSMITTER, ...)``: RS.2, a :class:`DiscourseCoherenceReward`."""
    return DiscourseCoherenceReward(model=model, tokenizer=tokenizer, **options)


def repetition_penalty(**options):
    """``get_reward("repetition_penalty")``: the information penalty, a :class:`RepetitionPenalty` (no options)."""
    if options:
        raise HFPersonaError(f"repetition_penalty takes no options, got {sorted(options)}")
    return RepetitionPenalty()
