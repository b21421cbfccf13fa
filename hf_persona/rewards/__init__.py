"""Reward functions in TRL's convention, ``f(prompts, completions, **columns) -> list[float]``.

One module per reward family; the factories are registered through the ``register_rewards``
hook (see :mod:`hf_persona.default_plugins`) and looked up with ``hf_persona.get_reward(name, ...)``.

* :mod:`hf_persona.rewards.persona_perception`: P2Bot's Receiver as a reward (``persona_perception``).
* :mod:`hf_persona.rewards.critic`: PPG's persona-consistency critic as a reward (``critic``,
  ``ppg_critic``).
* :mod:`hf_persona.rewards.p2bot`: P2Bot's other self-play rewards (``language_style``,
  ``discourse_coherence``, ``repetition_penalty``).
"""

from .critic import critic_reward_factory, ppg_critic_reward_factory
from .p2bot import discourse_coherence, language_style, repetition_penalty
from .persona_perception import PersonaPerceptionReward, discounted_returns, load_receiver, persona_perception

__all__ = ["PersonaPerceptionReward", "critic_reward_factory", "discounted_returns", "discourse_coherence",
           "language_style", "load_receiver", "persona_perception", "ppg_critic_reward_factory", "repetition_penalty"]
