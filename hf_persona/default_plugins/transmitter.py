"""Built-in plugin: the P2Bot Transmitter.

Registers the model ``transmitter`` (``TransmitterConfig`` / ``TransmitterForDialogue``) with
``AutoConfig`` and ``AutoModelForCausalLM``, the self-play rewards ``language_style`` (RS.1),
``discourse_coherence`` (RS.2) and ``repetition_penalty`` (:mod:`hf_persona.rewards.p2bot`; RS.3
``persona_perception`` comes from the Receiver plugin) and the commands
``hf-persona train transmitter``, ``hf-persona train selfplay`` and ``hf-persona eval transmitter``
(:mod:`hf_persona.commands.transmitter`). The model is registered by reference and the reward factories
and the commands import their implementation when called, so loading this plugin imports neither
torch nor transformers.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


@hookimpl
def register_models(register):
    # by reference: the classes (torch, transformers) are imported when a lookup needs them
    register("transmitter", "hf_persona.models.transmitter:TransmitterConfig",
             "hf_persona.models.transmitter:TransmitterForDialogue", auto_class="AutoModelForCausalLM",
             card="transmitter")


def _p2bot_reward(name):
    def factory(**options):
        from hf_persona.rewards import p2bot

        return getattr(p2bot, name)(**options)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"Build the ``{name}`` reward (:func:`hf_persona.rewards.p2bot.{name}`)."
    return factory


@hookimpl
def register_rewards(register):
    for name in ("language_style", "discourse_coherence", "repetition_penalty"):
        register(name, _p2bot_reward(name))


@hookimpl
def register_commands(cli):
    from hf_persona.commands.transmitter import add_commands

    add_commands(cli)


__getattr__ = moved_names(__name__, dict.fromkeys(
    ("train_transmitter_cmd", "train_selfplay_cmd", "eval_transmitter_cmd"), "hf_persona.commands.transmitter"))
