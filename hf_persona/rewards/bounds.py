"""Reward ranges and the floor for degenerate completions.

Every reward of :mod:`hf_persona.rewards` has a documented range ``[low, high]`` (``high`` may be
``+inf``) and gives an empty or whitespace-only completion exactly ``low``, without scoring it: a
model in RL must never learn that saying nothing pays. Scores of the other completions are clipped
into the range, so no real completion scores below an empty one.

* :func:`is_blank`: the completion (a string, a ``{"content": ...}`` message or a list of messages)
  holds no text.
* :class:`BoundedReward`: a mixin for a TRL reward class ``reward(prompts, completions, **columns)``;
  with ``reward_range = (low, high)`` set on the instance, blank completions get ``low`` and are left
  out of the wrapped call (with their rows of every per-completion column), the rest are clipped.
* :func:`check_min_score`: validates a ``min_score`` option.
"""

from __future__ import annotations

import math

from hf_persona.errors import HFPersonaError


def is_blank(completion) -> bool:
    """True for a completion with no text: ``""``, whitespace, a message with such a ``content``, an empty
    message list, or a message list whose (assistant) contents are all blank. Values of other types are
    not blank (the reward reports them)."""
    if isinstance(completion, str):
        return not completion.strip()
    if isinstance(completion, dict):
        return "content" in completion and not str(completion["content"] or "").strip()
    if isinstance(completion, (list, tuple)):
        if not all(isinstance(m, dict) and "content" in m for m in completion):
            return False
        own = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return all(not str(m["content"] or "").strip() for m in own)
    return False


def check_completions(completions, reward: str) -> list:
    """``completions`` as a list, or an :class:`HFPersonaError` naming the reward."""
    if completions is None:
        raise HFPersonaError(f"{reward}: no completions given")
    if isinstance(completions, (str, bytes)):
        raise HFPersonaError(f"{reward}: completions must be a list with one completion per prompt, got a single "
                             f"{type(completions).__name__}")
    try:
        return list(completions)
    except TypeError:
        raise HFPersonaError(f"{reward}: completions must be a list with one completion per prompt, got "
                             f"{type(completions).__name__}") from None


def check_min_score(value, reward: str, below: float) -> float:
    """A finite real ``min_score`` under the reward's maximum ``below``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HFPersonaError(f"{reward}: min_score must be a finite number, got {value!r}")
    if value >= below:
        raise HFPersonaError(f"{reward}: min_score must be below the reward's maximum {below:g}, got {value!r}")
    return float(value)


def _rows(value, keep: list[int], n: int, name: str, reward: str):
    """The rows ``keep`` of a per-completion column; other values (trainer state, callbacks) as they are."""
    if not isinstance(value, (list, tuple)):
        return value
    if len(value) != n:
        raise HFPersonaError(f"{reward}: column {name!r} has {len(value)} rows for {n} completions")
    return [value[i] for i in keep]


def floor_blank(score, reward: str, bounds: tuple[float, float], prompts, completions, columns: dict) -> list:
    """``score(prompts, completions, **columns)`` on the non-blank completions, clipped to ``bounds``;
    blank completions get ``bounds[0]``. ``None`` scores (no reward for that completion) stay ``None``."""
    low, high = bounds
    completions = check_completions(completions, reward)
    n = len(completions)
    keep = [i for i, c in enumerate(completions) if not is_blank(c)]
    out: list = [low] * n
    if not keep:
        return out
    if len(keep) < n:
        prompts = _rows(prompts, keep, n, "prompts", reward)
        columns = {k: _rows(v, keep, n, k, reward) for k, v in columns.items()}
        completions = [completions[i] for i in keep]
    scores = list(score(prompts, completions, **columns))
    if len(scores) != len(keep):
        raise HFPersonaError(f"{reward}: scored {len(scores)} values for {len(keep)} completions")
    for i, s in zip(keep, scores):
        out[i] = None if s is None else min(max(float(s), low), high)
    return out


class BoundedReward:
    """Mixin for a TRL reward class: blank completions score ``reward_range[0]``, the others are clipped
    to ``reward_range``. Put it first among the bases; the instance sets ``reward_range``."""

    reward_range: tuple[float, float] = (-math.inf, math.inf)

    def __call__(self, prompts=None, completions=None, **columns) -> list:
        name = getattr(self, "__name__", type(self).__name__)
        return floor_blank(super().__call__, name, self.reward_range, prompts, completions, columns)
