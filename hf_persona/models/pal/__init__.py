"""PAL (Cheng et al., 2023): persona-augmented generation over a seq2seq backbone
(``PALForConditionalGeneration``) or a decoder-only LM (``PALForCausalLM``), and strategy
contrastive decoding for both."""

from .configuration_pal import (
    ALPHA_LEVELS,
    DEFAULT_CAUSAL_SYSTEM_PROMPT,
    DEFAULT_STRATEGY_ALPHA,
    STRATEGY_NAMES,
    STRATEGY_TOKENS,
    PALCausalConfig,
    PALConfig,
)
from .generation_pal import PALCausalCache, StrategyContrastCache, StrategyContrastiveLogitsProcessor, resolve_strategy_alphas
from .modeling_pal import PALEncoderOutput, PALForConditionalGeneration, PALPersonaFusion, PALSeq2SeqLMOutput
from .modeling_pal_causal import PALCausalLMOutput, PALForCausalLM
from .processing_pal import (
    PAL_SPECIAL_TOKENS,
    PERSONA_PLACEHOLDER,
    SEEKER_TOKEN,
    SUPPORTER_TOKEN,
    PALCollator,
    PALProcessor,
    add_pal_tokens,
    build_pal_causal_example,
    build_pal_example,
    strategy_token_id,
)

# save_pretrained also writes processor_config.json (AutoProcessor -> PALProcessor) and a usage README
from ...hub import add_usage_files_on_save  # noqa: E402

PALProcessor.register_for_auto_class("AutoProcessor")
add_usage_files_on_save(PALForConditionalGeneration, PALProcessor)
add_usage_files_on_save(PALForCausalLM, PALProcessor)

__all__ = [
    "ALPHA_LEVELS",
    "DEFAULT_STRATEGY_ALPHA",
    "STRATEGY_NAMES",
    "STRATEGY_TOKENS",
    "DEFAULT_CAUSAL_SYSTEM_PROMPT",
    "PALConfig",
    "PALCausalConfig",
    "PALForConditionalGeneration",
    "PALForCausalLM",
    "PALCausalLMOutput",
    "PALCausalCache",
    "StrategyContrastCache",
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
    "PALProcessor",
    "add_pal_tokens",
    "build_pal_example",
    "build_pal_causal_example",
    "strategy_token_id",
]
