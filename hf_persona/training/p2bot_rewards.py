"""P2Bot self-play rewards (paper section 3.3) as TRL-style batched reward functions.

Every reward is a callable ``reward(prompts, completions, **columns) -> list[float]`` (one float per
completion; higher is better), usable in TRL's ``GRPOTrainer(reward_funcs=...)`` and through
``hf_persona.get_reward(name, **options)``:

* ``language_style`` (RS.1, eq. 6): length-normalised log-probability of the completion under a
  frozen language model (a Hub causal LM such as ``gpt2``, or a trained Transmitter scoring the
  utterance without persona or history).
* ``discourse_coherence`` (RS.2, eq. 7): ``log p(next = 1 | persona, history, completion)`` from a
  Transmitter's next-utterance-prediction head (``form="prob_minus_half"`` gives the authors'
  code variant ``p - 0.5``). Columns: ``persona`` and ``history``.
* ``repetition_penalty`` (the authors' information penalty): minus the largest cosine similarity
  between the completion's word-count vector and any earlier utterance. Column: ``history``.

RS.3 (persona perception, eq. 8) is the Receiver plugin's ``persona_perception`` reward in its
``mode="discounted"`` form, fed by the self-play columns of
:func:`hf_persona.training.selfplay.episode_columns`.
"""

from __future__ import annotations

import math
from collections import Counter

from ..errors import HFPersonaError


def completion_texts(completions) -> list:
    """Plain strings from TRL completions (strings, or conversational ``[{"content": ...}]``)."""
    out = []
    for c in completions:
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list) and c and isinstance(c[-1], dict) and "content" in c[-1]:
            out.append(str(c[-1]["content"]))
        elif isinstance(c, dict) and "content" in c:
            out.append(str(c["content"]))
        else:
            raise TypeError(f"a completion must be a string or a list of chat messages, got {type(c).__name__}")
    return out


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


class LanguageStyleReward:
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

        texts = completion_texts(completions)
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


class DiscourseCoherenceReward:
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

        texts = completion_texts(completions)
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


class RepetitionPenalty:
    """Minus the largest bag-of-words cosine between a completion and the utterances in ``history``.

    0 for a completion sharing no word with any earlier utterance, -1 for an exact repeat.
    """

    __name__ = "repetition_penalty"

    def __call__(self, prompts, completions, **columns) -> list:
        texts = completion_texts(completions)
        histories = _column(columns, "history", len(texts), "repetition_penalty")
        out = []
        for text, history in zip(texts, histories):
            if isinstance(history, str):
                raise HFPersonaError("repetition_penalty: each 'history' value must be a list of utterances")
            out.append(-max((bow_cosine(text, h) for h in history), default=0.0))
        return out
