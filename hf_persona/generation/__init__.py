"""Decoding add-ons.

``StrategyContrastiveLogitsProcessor`` (PAL, paper section 3.4) lives in the PAL model folder
(``hf_persona/models/pal/generation_pal.py``) so that it ships with every PAL checkpoint for
users who only have transformers; this package re-exports it and adds the plugin factory.
"""

from hf_persona.models.pal.configuration_pal import ALPHA_LEVELS, DEFAULT_STRATEGY_ALPHA, STRATEGY_NAMES
from hf_persona.models.pal.generation_pal import StrategyContrastiveLogitsProcessor, resolve_strategy_alphas


def strategy_contrast(model=None, tokenizer=None, strategy_token_ids=None, alpha=None, **options):
    """Factory behind ``hf_persona.get_logits_processor("strategy_contrast", ...)``.

    Give the PAL ``model`` (its config supplies the strategy token ids and its default alpha
    table), or a ``tokenizer`` that went through ``add_pal_tokens``, or the ``strategy_token_ids``.
    ``alpha``: None (paper Table 2), a number >= 0, ``"low"``/``"medium"``/``"high"``, or a dict
    strategy -> number/level. Other options go to :class:`StrategyContrastiveLogitsProcessor`.
    """
    base_table = None
    if model is not None:
        config = getattr(model, "config", None)
        if config is None or getattr(config, "model_type", None) not in ("pal", "pal_causal"):
            raise TypeError(
                "strategy_contrast needs a PAL model (PALForConditionalGeneration or PALForCausalLM); got "
                f"{type(model).__name__}"
            )
        strategy_token_ids = config.strategy_token_ids
        base_table = config.strategy_alpha
    elif tokenizer is not None:
        from hf_persona.models.pal.processing_pal import strategy_token_id

        strategy_token_ids = [strategy_token_id(tokenizer, name) for name in STRATEGY_NAMES]
    if strategy_token_ids is None:
        raise ValueError("strategy_contrast needs model=, tokenizer= or strategy_token_ids=")
    return StrategyContrastiveLogitsProcessor(strategy_token_ids, alpha=alpha, base_table=base_table, **options)


__all__ = [
    "ALPHA_LEVELS",
    "DEFAULT_STRATEGY_ALPHA",
    "STRATEGY_NAMES",
    "StrategyContrastiveLogitsProcessor",
    "resolve_strategy_alphas",
    "strategy_contrast",
]
