"""Built-in plugin: the PAL model and strategy contrastive decoding.

Registers ``pal`` (``PALConfig`` / ``PALForConditionalGeneration``) with ``AutoConfig`` and
``AutoModelForSeq2SeqLM``, ``pal_causal`` (``PALCausalConfig`` / ``PALForCausalLM``) with
``AutoModelForCausalLM``, the logits processor ``strategy_contrast``
(``hf_persona.get_logits_processor("strategy_contrast", model=model, alpha=...)``) and the
commands ``hf-persona train pal`` / ``eval pal`` (:mod:`hf_persona.commands.pal`).
The models are registered by reference and the factories and commands import their
implementation when called, so loading this plugin imports neither torch nor transformers.
"""

from __future__ import annotations

from hf_persona import hookimpl


_MODELS = "hf_persona.models.pal"


@hookimpl
def register_models(register):
    # by reference: the classes (torch, transformers) are imported when a lookup needs them
    # a folder with pal_training.json (written by `train pal`) gets the PAL card whatever its model_type
    register("pal", f"{_MODELS}:PALConfig", f"{_MODELS}:PALForConditionalGeneration",
             auto_class="AutoModelForSeq2SeqLM", card="pal", sidecars=("pal_training.json",))
    register("pal_causal", f"{_MODELS}:PALCausalConfig", f"{_MODELS}:PALForCausalLM",
             auto_class="AutoModelForCausalLM", card="pal_causal")


def _strategy_contrast_factory(**options):
    from hf_persona.generation import strategy_contrast

    return strategy_contrast(**options)


@hookimpl
def register_logits_processors(register):
    register("strategy_contrast", _strategy_contrast_factory)


@hookimpl
def register_commands(cli):
    from hf_persona.commands.pal import add_commands

    add_commands(cli)
