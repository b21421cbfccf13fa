"""P2Bot Transmitter: causal LM with a next-utterance-prediction head (Liu et al., 2020)."""

from .configuration_transmitter import TransmitterConfig
from .modeling_transmitter import TransmitterForDialogue, TransmitterOutput, TransmitterPreTrainedModel
from .processing_transmitter import (
    build_context_ids,
    build_example,
    encode_response,
    pad_batch,
    prepare_tokenizer,
    special_token_ids,
)

# save_pretrained writes auto_map and copies the code, so checkpoints load with trust_remote_code
TransmitterConfig.register_for_auto_class()
TransmitterForDialogue.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "TransmitterConfig",
    "TransmitterForDialogue",
    "TransmitterOutput",
    "TransmitterPreTrainedModel",
    "build_context_ids",
    "build_example",
    "encode_response",
    "pad_batch",
    "prepare_tokenizer",
    "special_token_ids",
]
