"""PAL (Cheng et al., 2023): persona-augmented encoder-decoder and strategy contrastive decoding."""

from .configuration_pal import ALPHA_LEVELS, DEFAULT_STRATEGY_ALPHA, STRATEGY_NAMES, STRATEGY_TOKENS, PALConfig
from .generation_pal import StrategyContrastiveLogitsProcessor, resolve_strategy_alphas
from .modeling_pal import PALEncoderOutput, PALForConditionalGeneration, PALPersonaFusion, PALSeq2SeqLMOutput
from .processing_pal import (
    PAL_SPECIAL_TOKENS,
    PERSONA_PLACEHOLDER,
    SEEKER_TOKEN,
    SUPPORTER_TOKEN,
    PALCollator,
    add_pal_tokens,
    build_pal_example,
    strategy_token_id,
)

__all__ = [
    "ALPHA_LEVELS",
    "DEFAULT_STRATEGY_ALPHA",
    "STRATEGY_NAMES",
    "STRATEGY_TOKENS",
    "PALConfig",
    "PALForConditionalGeneration",
    "PALPersonaFusion",
    "PALEncoderOutput",
    "PALSeq2SeqLMOutput",
    "StrategyContrastiveLogitsProcessor",
    "resolve_strategy_alphas",
    "PAL_SPECIAL_TOKENS",
    "PERSONA_PLACEHOLDER",
    "SEEKER_TOKEN",
    "SUPPORTER_TOKEN",
    "PALCollator",
    "add_pal_tokens",
    "build_pal_example",
    "strategy_token_id",
]
