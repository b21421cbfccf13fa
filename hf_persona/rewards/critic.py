"""The ``critic`` reward family of partner-persona generation (PPG, Lu et al. 2022).

* :func:`critic_reward_factory`, registered as ``critic``: the frozen critic scores
  (persona, completion) pairs (:class:`CriticReward`, built on
  :class:`hf_persona.training.ppg_rl.CriticReward`); the DRG's reward.
* :func:`ppg_critic_reward_factory`, registered as ``ppg_critic``: the reward of a generated partner
  persona, through the DRG's greedy response and the critic (:class:`PPGCriticReward`, built on
  :class:`hf_persona.training.ppg_rl.PPGCriticReward`); the PPG's reward.

Both return TRL reward functions ``reward(prompts, completions, **columns) -> list[float]``. Range:
``mode="label"`` gives -1 or +1, ``mode="prob"`` the positive-class probability in ``[0, 1]``. An
empty or whitespace-only completion (a response, or a generated persona) is not scored and gets the
minimum, -1 or 0 (:mod:`hf_persona.rewards.bounds`). ``ppg_critic`` gives ``None`` (no reward) for a
prompt that cannot fit the DRG, as before. Heavy imports (torch, transformers) happen inside the
factories.
"""

from __future__ import annotations

from hf_persona.training import ppg_rl as _impl

from .bounds import BoundedReward

#: the range of each mode: (minimum, maximum)
RANGES = {"label": (-1.0, 1.0), "prob": (0.0, 1.0)}


class CriticReward(BoundedReward, _impl.CriticReward):
    """The critic reward in ``[-1, 1]`` (label) or ``[0, 1]`` (prob); an empty completion gets the minimum."""

    def __init__(self, critic, mode="label", persona_column="partner_persona", batch_size=64):
        super().__init__(critic, mode=mode, persona_column=persona_column, batch_size=batch_size)
        self.reward_range = RANGES[self.mode]


class PPGCriticReward(BoundedReward, _impl.PPGCriticReward):
    """The PPG reward in ``[-1, 1]`` (label) or ``[0, 1]`` (prob); an empty generated persona gets the
    minimum. ``last_responses`` holds the DRG responses of the scored (non-empty) completions."""

    def __init__(self, drg_model, drg_tokenizer, critic, mode="label", **options):
        super().__init__(drg_model, drg_tokenizer, critic, mode=mode, **options)
        self.reward_range = RANGES[self.mode]


def critic_reward_factory(model=None, mode="label", persona_column="partner_persona", batch_size=64):
    """``get_reward("critic", model=CRITIC_DIR, mode="label"|"prob", persona_column=...)``."""
    from hf_persona.errors import HFPersonaError

    if not model:
        raise HFPersonaError("the critic reward needs model=<folder of a critic trained with 'hf-persona train critic'>")
    return CriticReward(model, mode=mode, persona_column=persona_column, batch_size=batch_size)


def ppg_critic_reward_factory(drg=None, critic=None, mode="label", batch_size=32):
    """``get_reward("ppg_critic", drg=DRG_DIR, critic=CRITIC_DIR)``: reward of generated partner personas."""
    from hf_persona.errors import HFPersonaError
    from hf_persona.training import ppg as P

    if not drg or not critic:
        raise HFPersonaError("the ppg_critic reward needs drg=<DRG folder> and critic=<critic folder>")
    model, tok = P.load_generator(drg)
    return PPGCriticReward(model, tok, critic, mode=mode, batch_size=batch_size)
