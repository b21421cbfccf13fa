"""Tiny random models of every kind the library ships, built in seconds: for tests and smoke runs.

They have the real shapes and code paths (a 2-layer llama with a chat template under PAL and the
persona extractor, as LoRA adapters on one LM; a 2-layer BERT under CoBERT and the Receiver), the
MiniLM vocabulary, and random weights: what they write is noise.
"""

from __future__ import annotations

import json
from pathlib import Path

#: A ChatML template like SmolLM2-Instruct's (without its default system message).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_bert(folder) -> str:
    """A tiny random BERT (hidden 32, 2 layers) with the MiniLM tokenizer, saved in ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .backbones import resolve

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return str(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_llama(folder) -> str:
    """A tiny random llama (hidden 32, 2 layers) with the MiniLM vocabulary plus ChatML tokens and
    template: the shape of SmolLM2-Instruct, saved in ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .backbones import resolve

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return str(folder)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_adapters(work_dir) -> tuple[Path, Path]:
    """``(pal_folder, extractor_folder)``: random LoRA adapters of PAL (with its fusion, gate open)
    and of the persona extractor over one tiny llama, in the shipped format."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models.pal import PALForCausalLM
    from .training.pal import TRAINING_CONFIG_NAME, add_pal_lora, save_pal_adapter
    from .training.persona_extractor import EXTRACTOR_CONFIG_NAME, lora_config

    work_dir = Path(work_dir)
    base = tiny_llama(work_dir / "tiny_llama")
    pal_dir, extractor_dir = work_dir / "tiny_pal", work_dir / "tiny_extractor"
    if not (pal_dir / TRAINING_CONFIG_NAME).is_file():
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = PALForCausalLM.from_backbone(base, tokenizer=tokenizer)
        peft_backbone = add_pal_lora(model, tokenizer, rank=2)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.05 * torch.randn_like(param))
        save_pal_adapter(model, peft_backbone, pal_dir)
        tokenizer.save_pretrained(pal_dir)
        (pal_dir / TRAINING_CONFIG_NAME).write_text(json.dumps({"variant": "pal", "backbone": base, "kind": "causal"}))
    if not (extractor_dir / EXTRACTOR_CONFIG_NAME).is_file():
        torch.manual_seed(1)
        tokenizer = AutoTokenizer.from_pretrained(base)
        config = lora_config(2)
        config.init_lora_weights = False
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(extractor_dir)
        tokenizer.save_pretrained(extractor_dir)
        (extractor_dir / EXTRACTOR_CONFIG_NAME).write_text(json.dumps({
            "kind": "causal", "backbone": base, "source_separator": " <|im_end|> ", "target_separator": " | ",
            "max_source_length": 96, "max_target_length": 12}))
    return pal_dir, extractor_dir


def tiny_encoders(work_dir):
    """``(cobert, receiver)``: CoBERT and the Receiver around one tiny random BERT (eval mode)."""
    from .models.receiver import ReceiverModel
    from .training.cobert import build_model

    bert = tiny_bert(Path(work_dir) / "tiny_bert")
    return build_model("cobert", backbone=bert).eval(), ReceiverModel.from_encoder_pretrained(bert).eval()
