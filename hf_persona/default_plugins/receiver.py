"""Built-in plugin: P2Bot's Receiver.

Registers the model ``receiver`` (``ReceiverConfig`` / ``ReceiverModel``) with ``AutoConfig`` and
``AutoModel``, the reward ``persona_perception`` (:mod:`hf_persona.rewards.persona_perception`) and
the commands ``hf-persona train receiver``, ``hf-persona eval receiver`` and
``hf-persona receiver heatmap`` (:mod:`hf_persona.commands.receiver`). Heavy imports happen inside
the hooks.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


@hookimpl
def register_models(register):
    from hf_persona.models.receiver import ReceiverConfig, ReceiverModel

    register("receiver", ReceiverConfig, ReceiverModel, auto_class="AutoModel")


@hookimpl
def register_rewards(register):
    from hf_persona.rewards.persona_perception import persona_perception

    register("persona_perception", persona_perception)


@hookimpl
def register_commands(cli):
    from hf_persona.commands.receiver import add_commands

    add_commands(cli)


__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("discounted_returns", "load_receiver", "PersonaPerceptionReward", "persona_perception"),
                    "hf_persona.rewards.persona_perception"),
    "evaluate_receiver": "hf_persona.evaluation.receiver",
    "render_relevance_heatmap": "hf_persona.evaluation.plots",
})
