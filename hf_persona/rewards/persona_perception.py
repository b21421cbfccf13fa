"""The ``persona_perception`` reward family: P2Bot's Receiver scores a completion against a persona.

* :func:`persona_perception` is the reward factory registered under ``persona_perception``
  (``hf_persona.get_reward("persona_perception", model=...)``); it returns a
  :class:`PersonaPerceptionReward`, a TRL reward function
  ``reward(prompts, completions, **columns) -> list[float]`` with the range ``[min_score, +inf)``
  (``min_score`` -1.0 by default): an empty or whitespace-only completion scores exactly
  ``min_score`` and lower scores are raised to it.
* :func:`discounted_returns` is P2Bot's RS.3 (eq. 8) over the own and partner turn scores of one
  dialogue.
* :func:`load_receiver` turns a :class:`~hf_persona.models.receiver.ReceiverModel`, a saved folder,
  a Hub id or a plain encoder into a Receiver ready to score (also used by the Receiver's evaluation
  and commands).

Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from hf_persona.errors import HFPersonaError

from .bounds import check_completions, check_min_score, is_blank
from .text import completion_text

#: the default minimum of the reward (what an empty completion scores)
MIN_SCORE = -1.0


def discounted_returns(own_scores: Sequence[float], partner_scores: Sequence[float], gamma: float = 0.5) -> list[float]:
    """P2Bot RS.3 (eq. 8) for every own turn of one dialogue.

    The dialogue runs ``x_1, a_1, x_2, a_2, ..., x_N, a_N`` (partner turn ``x_k`` before own turn
    ``a_k``). ``own_scores[k]`` is ``r(a_{k+1})`` (own turn against own persona), ``partner_scores[k]``
    is ``r(x_{k+1})`` (partner turn against the partner's persona; the first one is never used, and
    ``partner_scores`` may be one shorter than ``own_scores``, aligned at the start). Returns

        R3(a_n) = r(a_n) + Σ_{k>n} (γ^{2(k-n)-1} · r(x_k) + γ^{2(k-n)} · r(a_k)).
    """
    if not 0 <= gamma <= 1:
        raise HFPersonaError(f"gamma must lie in [0, 1], got {gamma}")
    own = [float(x) for x in own_scores]
    partner = [float(x) for x in partner_scores]
    if len(partner) not in (len(own), len(own) - 1) and own:
        raise HFPersonaError(
            f"partner_scores must have as many turns as own_scores ({len(own)}) or one fewer, got {len(partner)}"
        )
    out = []
    for n in range(len(own)):
        total = own[n]
        for k in range(n + 1, len(own)):
            if k < len(partner):
                total += gamma ** (2 * (k - n) - 1) * partner[k]
            total += gamma ** (2 * (k - n)) * own[k]
        out.append(total)
    return out


def _text_of(value, what: str, index: int) -> str:
    """A completion/turn as text (:func:`~hf_persona.rewards.text.completion_text`), or an error naming it."""
    try:
        return completion_text(value)
    except TypeError:
        raise HFPersonaError(f"persona_perception: {what} #{index} is {type(value).__name__}; expected a string "
                             "or a list of {'role', 'content'} messages") from None


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _persona_of(value, column: str, index: int) -> list[str]:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split("\n") if p.strip()]
        if len(parts) <= 1:
            parts = [p.strip() for p in _SENTENCE_END.split(value) if p.strip()]
        value = parts
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise HFPersonaError(
            f"persona_perception: column {column!r} row {index} must be a list of persona sentences (or one "
            f"string), got {type(value).__name__}"
        )
    value = [s for s in value if s.strip()]
    if not value:
        raise HFPersonaError(f"persona_perception: column {column!r} row {index} has no persona sentence")
    return list(value)


def load_receiver(model, device=None):
    """A Receiver from a :class:`ReceiverModel`, a saved Receiver folder / Hub id, or a plain encoder.

    A plain encoder (``"minilm"``, ``bert-base-uncased`` ...) gives an *untrained* zero-shot Receiver
    (shared encoder, no segment ids) and logs a warning.
    """
    import json

    from hf_persona.backbones import resolve
    from hf_persona.models.receiver import ReceiverModel
    from hf_persona.utils import get_logger

    if model is None:
        raise HFPersonaError("persona_perception needs model=<Receiver folder, Hub id or ReceiverModel>")
    if isinstance(model, ReceiverModel) or getattr(model, "_is_p2bot_receiver", False):
        receiver = model
    elif isinstance(model, (str, Path)):
        source = resolve(str(model))
        config_file = Path(source) / "config.json"
        is_receiver = True
        if config_file.is_file():
            try:
                is_receiver = json.loads(config_file.read_text()).get("model_type") == "p2bot_receiver"
            except ValueError as err:
                raise HFPersonaError(f"{config_file} is not valid JSON: {err}") from err
        if is_receiver:
            receiver = ReceiverModel.from_pretrained(source)
        else:
            get_logger(__name__).warning(
                "persona_perception: %s is a plain encoder, not a trained Receiver; scoring zero-shot", source
            )
            receiver = ReceiverModel.from_encoder_pretrained(source, share_encoders=True, segment_ids=False)
        receiver.requires_grad_(False)
    else:
        raise HFPersonaError(
            f"persona_perception: model must be a ReceiverModel, a folder or a Hub id, got {type(model).__name__}"
        )
    if device is not None:
        receiver.to(device)
    receiver.eval()
    return receiver


class PersonaPerceptionReward:
    """TRL-style reward ``f(prompts, completions, **columns) -> list[float]`` (see :func:`persona_perception`)."""

    __name__ = "persona_perception"

    def __init__(
        self,
        receiver,
        tokenizer=None,
        persona_column: str = "persona",
        mode: str = "turn",
        gamma: float = 0.5,
        future_column: str = "future_turns",
        partner_persona_column: str = "partner_persona",
        batch_size: int = 256,
        min_score: float = MIN_SCORE,
    ):
        if mode not in ("turn", "discounted"):
            raise HFPersonaError(f"persona_perception: mode must be 'turn' or 'discounted', got {mode!r}")
        if not 0 <= gamma <= 1:
            raise HFPersonaError(f"persona_perception: gamma must lie in [0, 1], got {gamma}")
        self.receiver, self.tokenizer = receiver, tokenizer
        self.persona_column, self.mode, self.gamma = persona_column, mode, float(gamma)
        self.future_column, self.partner_persona_column = future_column, partner_persona_column
        self.batch_size = batch_size
        self.min_score = check_min_score(min_score, "persona_perception", below=float("inf"))

    def _column(self, columns, name, n):
        if name not in columns:
            raise HFPersonaError(
                f"persona_perception: the dataset has no column {name!r} (columns given: {sorted(columns)}); "
                f"set the matching *_column option"
            )
        values = columns[name]
        if len(values) != n:
            raise HFPersonaError(f"persona_perception: column {name!r} has {len(values)} rows for {n} completions")
        return values

    def __call__(self, prompts=None, completions=None, **columns) -> list[float]:
        """One score per completion, in ``[min_score, +inf)``; an empty completion scores ``min_score``."""
        completions = check_completions(completions, "persona_perception")
        n = len(completions)
        if n == 0:
            return []
        blank = [is_blank(c) for c in completions]
        texts = [None if b else _text_of(c, "completion", i) for i, (b, c) in enumerate(zip(blank, completions))]
        personas = [_persona_of(p, self.persona_column, i) for i, p in enumerate(self._column(columns, self.persona_column, n))]
        # Every (utterance, persona) pair of the batch is scored in one call: one encoder pass over the
        # distinct utterances and one over the distinct persona sentences. An empty completion, and an
        # empty future turn, is not scored: it counts min_score.
        pair_texts, pair_personas = [], []
        plan = []  # per completion: list of (pair index or None for an empty turn, discount)
        for i in range(n):
            if blank[i]:
                plan.append(None)
                continue
            pair_texts.append([texts[i]])
            pair_personas.append(personas[i])
            plan.append([(len(pair_texts) - 1, 1.0)])
        if self.mode == "discounted":
            futures = self._column(columns, self.future_column, n)
            partner_personas = None
            for i, future in enumerate(futures):
                if plan[i] is None:
                    continue
                future = [] if future is None else list(future)
                for j, turn in enumerate(future):
                    if is_blank(turn):
                        plan[i].append((None, self.gamma ** (j + 1)))
                        continue
                    if j % 2 == 0:  # partner turn: scored against the partner's persona
                        if partner_personas is None:
                            partner_personas = self._column(columns, self.partner_persona_column, n)
                        persona = _persona_of(partner_personas[i], self.partner_persona_column, i)
                    else:
                        persona = personas[i]
                    pair_texts.append([_text_of(turn, self.future_column, i)])
                    pair_personas.append(persona)
                    plan[i].append((len(pair_texts) - 1, self.gamma ** (j + 1)))
        scores = self.receiver.utterance_scores_batch(
            pair_texts, pair_personas, tokenizer=self.tokenizer, batch_size=self.batch_size
        ) if pair_texts else []
        out = []
        for steps in plan:
            if steps is None:
                out.append(self.min_score)
                continue
            total = sum(w * (self.min_score if idx is None else scores[idx][0]) for idx, w in steps)
            out.append(max(float(total), self.min_score))
        return out


def persona_perception(
    model=None,
    *,
    tokenizer=None,
    persona_column: str = "persona",
    mode: str = "turn",
    gamma: float = 0.5,
    future_column: str = "future_turns",
    partner_persona_column: str = "partner_persona",
    batch_size: int = 256,
    min_score: float = MIN_SCORE,
    device=None,
):
    """Reward factory for ``hf_persona.get_reward("persona_perception", model=..., ...)``.

    Returns a TRL reward function ``reward(prompts, completions, **columns) -> list[float]`` that
    scores every completion with P2Bot's Receiver against the speaker's persona.

    Options:
        model: a trained Receiver — a :class:`~hf_persona.models.receiver.ReceiverModel`, a folder
            saved by ``hf-persona train receiver`` / ``save_pretrained``, or a Hub id. A plain encoder
            (``"minilm"``, ``"bert-base-uncased"``) gives an untrained zero-shot Receiver (warning logged).
        tokenizer: tokenizer to use (default: the one saved with the Receiver).
        persona_column: dataset column with the speaker's persona, a list of sentences per row (one
            string is split on newlines, else on sentence ends). Default ``"persona"``.
        mode: ``"turn"`` (default): the reward is the Receiver's per-utterance score of the completion,
            ``Agg(H_n·Wᵀ)/√d`` (paper eq. 15). ``"discounted"``: P2Bot's RS.3 (eq. 8); the column
            ``future_column`` holds the turns that followed the completion in the (self-play) dialogue,
            alternating partner / self starting with the partner, ``[x_{n+1}, a_{n+1}, x_{n+2}, ...]``;
            future turn ``j`` (0-based) adds ``γ^{j+1}`` times its score, partner turns scored against
            ``partner_persona_column`` and own turns against ``persona_column``. An empty list gives the
            plain turn score.
        gamma: discount γ of RS.3 (paper: 0.5).
        future_column / partner_persona_column: column names for the discounted form.
        batch_size: sentences per encoder call; every call of the reward scores all its pairs
            together (each distinct string encoded once), so a batch of up to ``batch_size`` distinct
            utterances costs one encoder pass per side.
        min_score: the minimum of the reward (default -1.0): an empty or whitespace-only completion
            scores exactly ``min_score`` without being scored (the Receiver would rate the encoding of an
            empty string, which can sit above an off-persona reply, so RL would learn to say nothing), an
            empty future turn counts ``min_score`` in the discounted sum, and a lower reward is raised to
            ``min_score``. Pick it below the scores of real replies (an untrained or trained Receiver
            scores replies around -0.5 to 1).
        device: where to run the Receiver (default: where it is).

    Range: ``[min_score, +inf)``. The Receiver's scores are otherwise unbounded real numbers (scaled
    dot products of sentence encodings); weight them in your RL reward mix (P2Bot: λ3 = 0.5 on RS.3).
    """
    receiver = load_receiver(model, device=device)
    return PersonaPerceptionReward(
        receiver,
        tokenizer=tokenizer,
        persona_column=persona_column,
        mode=mode,
        gamma=gamma,
        future_column=future_column,
        partner_persona_column=partner_persona_column,
        batch_size=batch_size,
        min_score=min_score,
    )
