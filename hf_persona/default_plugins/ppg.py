"""Built-in plugin: partner-persona generation (PPG, Lu et al. 2022).

Registers the rewards ``critic`` (the frozen critic on (persona, completion)) and ``ppg_critic``
(the reward of a generated partner persona through the DRG and the critic), both from
:mod:`hf_persona.rewards.critic`, and the commands ``hf-persona train ppg``, ``train drg``,
``train critic``, ``train ppg-rl`` and ``eval ppg`` (:mod:`hf_persona.commands.ppg`). The reward
factories and the commands import their implementation when called, so loading this plugin imports
neither torch nor transformers.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


def _critic_reward_factory(**options):
    from hf_persona.rewards.critic import critic_reward_factory

    return critic_reward_factory(**options)


def _ppg_critic_reward_factory(**options):
    from hf_persona.rewards.critic import ppg_critic_reward_factory

    return ppg_critic_reward_factory(**options)


@hookimpl
def register_rewards(register):
    register("critic", _critic_reward_factory)
    register("ppg_critic", _ppg_critic_reward_factory)


@hookimpl
def register_recipe_models(register):
    # plain BERT / causal LMs; train ppg, drg and critic write ppg_meta.json with the task beside them
    for task in ("ppg", "drg", "critic"):
        register(task, "ppg_meta.json", card=task, match={"task": task})


@hookimpl
def register_commands(cli):
    from hf_persona.commands.ppg import add_commands

    add_commands(cli)


__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("critic_reward_factory", "ppg_critic_reward_factory"), "hf_persona.rewards.critic"),
    **dict.fromkeys(("train_ppg_cmd", "train_drg_cmd", "train_critic_cmd", "train_ppg_rl_cmd", "eval_ppg_cmd"),
                    "hf_persona.commands.ppg"),
})
