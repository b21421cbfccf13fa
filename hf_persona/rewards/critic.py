"""The ``critic`` reward family of partner-persona generation (PPG, Lu et al. 2022).

* :func:`critic_reward_factory`, registered as ``critic``: the frozen critic scores
  (persona, completion) pairs (:class:`hf_persona.training.ppg_rl.CriticReward`); the DRG's reward.
* :func:`ppg_critic_reward_factory`, registered as ``ppg_critic``: the reward of a generated partner
  persona, through the DRG's greedy response and the critic
  (:class:`hf_persona.training.ppg_rl.PPGCriticReward`); the PPG's reward.

Both return TRL reward functions ``reward(prompts, completions, **columns) -> list[float]``. Heavy
imports (torch, transformers) happen inside the factories.
"""

from __future__ import annotations


def critic_reward_factory(model=None, mode="label", persona_column="partner_persona", batch_size=64):
    """``get_reward("critic", model=CRITIC_DIR, mode="label"|"prob", persona_column=...)``."""
    from hf_persona.errors import HFPersonaError
    from hf_persona.training.ppg_rl import CriticReward

    if not model:
        raise HFPersonaError("the critic reward needs model=<folder of a critic trained with 'hf-persona train critic'>")
    return CriticReward(model, mode=mode, persona_column=persona_column, batch_size=batch_size)


def ppg_critic_reward_factory(drg=None, critic=None, mode="label", batch_size=32):
    """``get_reward("ppg_critic", drg=DRG_DIR, critic=CRITIC_DIR)``: reward of generated partner personas."""
    from hf_persona.errors import HFPersonaError
    from hf_persona.training import ppg as P
    from hf_persona.training.ppg_rl import PPGCriticReward

    if not drg or not critic:
        raise HFPersonaError("the ppg_critic reward needs drg=<DRG folder> and critic=<critic folder>")
    model, tok = P.load_generator(drg)
    return PPGCriticReward(model, tok, critic, mode=mode, batch_size=batch_size)

