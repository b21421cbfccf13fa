"""P2Bot's self-play reward factories: ``language_style`` (RS.1), ``discourse_coherence`` (RS.2) and
``repetition_penalty`` (the authors' information penalty).

The Transmitter plugin registers them under those names, so ``hf_persona.get_reward(name, ...)``
calls them; each returns a TRL reward function ``reward(prompts, completions, **columns) -> list[float]``
from :mod:`hf_persona.training.p2bot_rewards`, which documents the equations and the columns. RS.3
(persona perception) is :mod:`hf_persona.rewards.persona_perception`.

The reward classes are imported inside the factories, so importing this module stays cheap.
"""

from __future__ import annotations

from hf_persona.errors import HFPersonaError


def language_style(model=None, tokenizer=None, **options):
    """``get_reward("language_style", model=LM, ...)``: RS.1, a :class:`LanguageStyleReward`."""
    from hf_persona.training.p2bot_rewards import LanguageStyleReward

    return LanguageStyleReward(model=model, tokenizer=tokenizer, **options)


def discourse_coherence(model=None, tokenizer=None, **options):
    """``get_reward("discourse_coherence", model=TRANSMITTER, ...)``: RS.2, a :class:`DiscourseCoherenceReward`."""
    from hf_persona.training.p2bot_rewards import DiscourseCoherenceReward

    return DiscourseCoherenceReward(model=model, tokenizer=tokenizer, **options)


def repetition_penalty(**options):
    """``get_reward("repetition_penalty")``: the information penalty, a :class:`RepetitionPenalty` (no options)."""
    from hf_persona.training.p2bot_rewards import RepetitionPenalty

    if options:
        raise HFPersonaError(f"repetition_penalty takes no options, got {sorted(options)}")
    return RepetitionPenalty()
