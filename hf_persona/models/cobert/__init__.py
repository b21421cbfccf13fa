"""CoBERT persona-aware response selection and its Bi-encoder baseline (transformers one-folder style)."""

from .configuration_cobert import BiEncoderConfig, CoBERTConfig
from .modeling_cobert import (
    BiEncoderForResponseSelection,
    CandidateCache,
    CoBERTForResponseSelection,
    ResponseSelectionOutput,
    build_context_inputs,
    build_persona_inputs,
    build_response_inputs,
    co_attention_match,
)

# save_pretrained also writes a usage README (inputs come from the documented model.build_inputs)
from ...hub import add_usage_files_on_save  # noqa: E402

add_usage_files_on_save(CoBERTForResponseSelection)
add_usage_files_on_save(BiEncoderForResponseSelection)

__all__ = [
    "BiEncoderConfig",
    "BiEncoderForResponseSelection",
    "CandidateCache",
    "CoBERTConfig",
    "CoBERTForResponseSelection",
    "ResponseSelectionOutput",
    "build_context_inputs",
    "build_persona_inputs",
    "build_response_inputs",
    "co_attention_match",
]
