"""Built-in plugin: CoBERT and the Bi-encoder baseline (persona-aware response selection).

Registers the models ``cobert`` (``CoBERTConfig`` / ``CoBERTForResponseSelection``) and
``persona_biencoder`` (``BiEncoderConfig`` / ``BiEncoderForResponseSelection``) with ``AutoConfig``
and ``AutoModel``, and the commands ``hf-persona train cobert`` and ``hf-persona eval cobert``
(:mod:`hf_persona.commands.cobert`). The models are registered by reference and the commands import
their implementation when they run, so loading this plugin imports neither torch nor transformers.

The names this module used to hold still import from here, with a ``DeprecationWarning`` that
names their new home.
"""

from __future__ import annotations

from hf_persona import hookimpl
from hf_persona.utils import moved_names


_MODELS = "hf_persona.models.cobert"


@hookimpl
def register_models(register):
    # by reference: the classes (torch, transformers) are imported when a lookup needs them
    register("cobert", f"{_MODELS}:CoBERTConfig", f"{_MODELS}:CoBERTForResponseSelection", auto_class="AutoModel",
             card="cobert")
    register("persona_biencoder", f"{_MODELS}:BiEncoderConfig", f"{_MODELS}:BiEncoderForResponseSelection",
             auto_class="AutoModel", card="persona_biencoder")


@hookimpl
def register_commands(cli):
    from hf_persona.commands.cobert import add_commands

    add_commands(cli)


__getattr__ = moved_names(__name__, dict.fromkeys(("train_cobert_cmd", "eval_cobert_cmd"),
                                                  "hf_persona.commands.cobert"))
