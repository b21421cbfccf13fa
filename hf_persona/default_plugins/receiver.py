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

import importlib
import warnings

from hf_persona import hookimpl


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


_MOVED = {
    **dict.fromkeys(("discounted_returns", "load_receiver", "PersonaPerceptionReward", "persona_perception"),
                    "hf_persona.rewards.persona_perception"),
    "evaluate_receiver": "hf_persona.evaluation.receiver",
    "render_relevance_heatmap": "hf_persona.evaluation.plots",
}


def __getattr__(name):
    if name in _MOVED:
        warnings.warn(f"hf_persona.default_plugins.receiver.{name} moved to {_MOVED[name]}.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
