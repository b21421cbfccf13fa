"""Built-in plugin: the persona extractor and PESConv annotation.

Adds the commands ``hf-persona train persona-extractor``, ``hf-persona eval persona-extractor`` and
``hf-persona annotate-persona`` (:mod:`hf_persona.commands.persona_extractor`). Heavy imports happen
inside the hook.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


@hookimpl
def register_recipe_models(register):
    # a plain encoder-decoder or causal LM; train persona-extractor writes persona_extractor.json beside it
    register("persona_extractor", "persona_extractor.json", card="persona_extractor")


@hookimpl
def register_commands(cli):
    from hf_persona.commands.persona_extractor import add_commands

    add_commands(cli)


__getattr__ = moved_names(__name__, dict.fromkeys(
    ("train_persona_extractor_cmd", "eval_persona_extractor_cmd", "annotate_persona_cmd"),
    "hf_persona.commands.persona_extractor"))
