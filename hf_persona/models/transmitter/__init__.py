"""P2Bot Transmitter: causal LM with a next-utterance-prediction head (Liu et al., 2020)."""

from ...hub import add_usage_files_on_save
from .configuration_transmitter import TransmitterConfig
from .modeling_transmitter import TransmitterForDialogue, TransmitterOutput, TransmitterPreTrainedModel
from .processing_transmitter import (
    CHAT_SYSTEM_PROMPT,
    TransmitterProcessor,
    build_context_ids,
    build_example,
    encode_response,
    pad_batch,
    prepare_tokenizer,
    special_token_ids,
    uses_chat_format,
)

# save_pretrained writes auto_map and copies the code, so checkpoints load with trust_remote_code
TransmitterConfig.register_for_auto_class()
TransmitterForDialogue.register_for_auto_class("AutoModelForCausalLM")
# ... and processor_config.json (AutoProcessor -> TransmitterProcessor) with a usage README
TransmitterProcessor.register_for_auto_class("AutoProcessor")
add_usage_files_on_save(TransmitterForDialogue, TransmitterProcessor)

__all__ = [
    "CHAT_SYSTEM_PROMPT",
    "TransmitterConfig",
    "TransmitterForDialogue",
    "TransmitterOutput",
    "TransmitterPreTrainedModel",
    "TransmitterProcessor",
    "build_context_ids",
    "build_example",
    "encode_response",
    "pad_batch",
    "prepare_tokenizer",
    "special_token_ids",
    "uses_chat_format",
]
