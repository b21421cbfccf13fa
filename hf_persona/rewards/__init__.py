"""Reward functions in TRL's convention, ``f(prompts, completions, **columns) -> list[float]``.

One module per reward family; the factories are registered through the ``register_rewards``
hook (see :mod:`hf_persona.default_plugins`) and looked up with ``hf_persona.get_reward(name, ...)``.

* :mod:`hf_persona.rewards.persona_perception`: P2Bot's Receiver as a reward (``persona_perception``).
"""

from .persona_perception import PersonaPerceptionReward, discounted_returns, load_receiver, persona_perception

__all__ = ["PersonaPerceptionReward", "discounted_returns", "load_receiver", "persona_perception"]
