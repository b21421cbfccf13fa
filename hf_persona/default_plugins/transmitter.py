"""Built-in plugin: the P2Bot Transmitter.

Registers the model ``transmitter`` (``TransmitterConfig`` / ``TransmitterForDialogue``) with
``AutoConfig`` and ``AutoModelForCausalLM``, the self-play rewards ``language_style`` (RS.1),
``discourse_coherence`` (RS.2) and ``repetition_penalty`` (:mod:`hf_persona.rewards.p2bot`; RS.3
``persona_perception`` comes from the Receiver plugin) and the commands
``hf-persona train transmitter``, ``hf-persona train selfplay`` and ``hf-persona eval transmitter``
(:mod:`hf_persona.commands.transmitter`). Heavy imports happen inside the hooks.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


@hookimpl
def register_models(register):
    from hf_persona.models.transmitter import TransmitterConfig, TransmitterForDialogue

    register("transmitter", TransmitterConfig, TransmitterForDialogue, auto_class="AutoModelForCausalLM")


@hookimpl
def register_rewards(register):
    from hf_persona.rewards.p2bot import discourse_coherence, language_style, repetition_penalty

    register("language_style", language_style)
    register("discourse_coherence", discourse_coherence)
    register("repetition_penalty", repetition_penalty)


@hookimpl
def register_commands(cli):
    from hf_persona.commands.transmitter import add_commands

    add_commands(cli)


__getattr__ = moved_names(__name__, dict.fromkeys(
    ("train_transmitter_cmd", "train_selfplay_cmd", "eval_transmitter_cmd"), "hf_persona.commands.transmitter"))
