"""Reward functions in TRL's convention, ``f(prompts, completions, **columns) -> list[float]``.

One module per reward family; the factories are registered through the ``register_rewards``
hook (see :mod:`hf_persona.default_plugins`) and looked up with ``hf_persona.get_reward(name, ...)``.

* :mod:`hf_persona.rewards.persona_perception`: P2Bot's Receiver as a reward (``persona_perception``).
* :mod:`hf_persona.rewards.critic`: PPG's persona-consistency critic as a reward (``critic``,
  ``ppg_critic``).
* :mod:`hf_persona.rewards.p2bot`: P2Bot's other self-play rewards (``language_style``,
  ``discourse_coherence``, ``repetition_penalty``).
* :mod:`hf_persona.rewards.bounds`: the documented ranges and the floor for empty completions;
  :func:`completion_text` (:mod:`hf_persona.rewards.text`): the text of a TRL completion.
"""

from .critic import (
                    CriticReward,
                    CriticScore,
                    PPGCriticReward,
                    PPGCriticScore,
                    critic_reward_factory,
                    ppg_critic_reward_factory,
)
from .p2bot import (
                    DiscourseCoherenceReward,
                    DiscourseCoherenceScore,
                    LanguageStyleReward,
                    LanguageStyleScore,
                    RepetitionPenalty,
                    RepetitionScore,
                    bow_cosine,
                    discourse_coherence,
                    language_style,
                    repetition_penalty,
)
from .persona_perception import PersonaPerceptionReward, discounted_returns, load_receiver, persona_perception
from .text import completion_text

__all__ = ["CriticReward", "CriticScore", "DiscourseCoherenceReward", "DiscourseCoherenceScore", "LanguageStyleReward",
           "LanguageStyleScore", "PPGCriticReward", "PPGCriticScore", "PersonaPerceptionReward", "RepetitionPenalty",
           "RepetitionScore", "bow_cosine", "completion_text", "critic_reward_factory", "discounted_returns",
           "discourse_coherence", "language_style", "load_receiver", "persona_perception",
           "ppg_critic_reward_factory", "repetition_penalty"]
