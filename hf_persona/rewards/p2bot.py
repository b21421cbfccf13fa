"""P2Bot's self-play reward factories: ``language_style`` (RS.1), ``discourse_coherence`` (RS.2) and
``repetition_penalty`` (the authors' information penalty).

The Transmitter plugin registers them under those names, so ``hf_persona.get_reward(name, ...)``
calls them; each returns a TRL reward function ``reward(prompts, completions, **columns) -> list[float]``,
a class of this module built on :mod:`hf_persona.training.p2bot_rewards` (which documents the equations
and the columns) with a documented range (:mod:`hf_persona.rewards.bounds`):

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
RS.3 (persona perception) is :mod:`hf_persona.rewards.persona_perception`.
"""

from __future__ import annotations

from hf_persona.errors import HFPersonaError
from hf_persona.training import p2bot_rewards as _impl

from .bounds import BoundedReward, check_min_score

#: the default floor of the log-probability rewards (nats per token)
LOG_PROB_FLOOR = -20.0


class LanguageStyleReward(BoundedReward, _impl.LanguageStyleReward):
    """RS.1 in ``[min_score, 0]``; an empty completion scores ``min_score``."""

    def __init__(self, model=None, tokenizer=None, min_score: float = LOG_PROB_FLOOR, **options):
        low = check_min_score(min_score, "language_style", below=0.0)
        super().__init__(model=model, tokenizer=tokenizer, **options)
        self.reward_range = (low, 0.0)


class DiscourseCoherenceReward(BoundedReward, _impl.DiscourseCoherenceReward):
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


class RepetitionPenalty(BoundedReward, _impl.RepetitionPenalty):
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
