"""Built-in plugin: P2Bot's Receiver.

Registers the model ``receiver`` (``ReceiverConfig`` / ``ReceiverModel``) with ``AutoConfig`` and
``AutoModel``, the reward ``persona_perception`` (:mod:`hf_persona.rewards.persona_perception`) and
the commands ``hf-persona train receiver``, ``hf-persona eval receiver`` and
``hf-persona receiver heatmap`` (:mod:`hf_persona.commands.receiver`). The model is registered by
reference and the reward factory and the commands import their implementation when called, so
loading this plugin imports neither torch nor transformers.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


@hookimpl
def register_models(register):
    # by reference: the classes (torch, transformers) are imported when a lookup needs them
    register("receiver", "hf_persona.models.receiver:ReceiverConfig", "hf_persona.models.receiver:ReceiverModel",
             auto_class="AutoModel", card="receiver")


def _persona_perception_factory(**options):
    from hf_persona.rewards.persona_perception import persona_perception

    return persona_perception(**options)


@hookimpl
def register_rewards(register):
    register("persona_perception", _persona_perception_factory)


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
