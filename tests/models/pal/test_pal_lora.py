"""PAL over a causal LM as a LoRA adapter: what is saved, what loads, and one LM shared by adapters."""

from __future__ import annotations

import json

import pytest
import torch

from hf_persona.errors import HFPersonaError
from hf_persona.models.pal import PALForCausalLM
from hf_persona.training.pal import (
    PAL_ADAPTER_CONFIG,
    PAL_FUSION_WEIGHTS,
    add_pal_lora,
    load_pal_adapter,
    save_pal_adapter,
)


def _inputs(tok):
    x = tok(["hello , i lost my job .", "i feel alone"], return_tensors="pt", padding=True)
    p = tok(["i am a nurse .", "i have a dog ."], return_tensors="pt", padding=True)
    return dict(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                persona_input_ids=p["input_ids"], persona_attention_mask=p["attention_mask"])


def _perturbed(tiny_llama_dir):
    """A PAL-LoRA model whose adapter, PAL token rows and fusion all differ from their start."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = PALForCausalLM.from_backbone(tiny_llama_dir, tokenizer=tok)
    peft_backbone = add_pal_lora(model, tok, rank=4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    return model.eval(), tok, peft_backbone


def _training_file(folder, backbone):
    (folder / "pal_training.json").write_text(json.dumps({"kind": "causal", "backbone": backbone}))


def test_adapter_round_trip_gives_the_same_logits(tiny_llama_dir, tmp_path):
    model, tok, peft_backbone = _perturbed(tiny_llama_dir)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("trainable_tokens" in n for n in trainable)
    assert {"fusion_gate"} <= trainable and not any(n.endswith("q_proj.base_layer.weight") for n in trainable)
    save_pal_adapter(model, peft_backbone, tmp_path / "pal")
    tok.save_pretrained(tmp_path / "pal")
    _training_file(tmp_path / "pal", tiny_llama_dir)
    files = {p.name for p in (tmp_path / "pal").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", PAL_ADAPTER_CONFIG, PAL_FUSION_WEIGHTS} <= files
    assert "model.safetensors" not in files
    from safetensors import safe_open

    with safe_open(str(tmp_path / "pal" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.endswith("embed_tokens.weight") for k in keys)  # the PAL rows only, not the matrix
    rows = [k for k in keys if "trainable_tokens" in k]
    assert rows
    loaded, tok2, _ = load_pal_adapter(tmp_path / "pal")
    batch = _inputs(tok)
    with torch.no_grad():
        want_p, got_p = model(**batch).logits, loaded(**batch).logits
        plain = {k: v for k, v in batch.items() if not k.startswith("persona")}
        want, got = model(**plain).logits, loaded(**plain).logits
    torch.testing.assert_close(got_p, want_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want_p, want)  # the persona matters: the gate is open
    assert len(tok2) == len(tok)


def test_one_lm_serves_two_adapters(tiny_llama_dir, tmp_path):
    """A second adapter (the persona extractor's) on the same LM: switching changes the LM's
    output, switching back restores PAL exactly."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model, tok, peft_backbone = _perturbed(tiny_llama_dir)
    save_pal_adapter(model, peft_backbone, tmp_path / "pal")
    tok.save_pretrained(tmp_path / "pal")
    _training_file(tmp_path / "pal", tiny_llama_dir)
    other = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    other.save_pretrained(tmp_path / "other")

    alone, _, _ = load_pal_adapter(tmp_path / "pal")
    pal, _, shared = load_pal_adapter(tmp_path / "pal", extra_adapters={"other": tmp_path / "other"})
    batch = _inputs(tok)
    with torch.no_grad():
        first = pal(**batch).logits
        torch.testing.assert_close(first, alone(**batch).logits)
        shared.set_adapter("other")
        switched = pal(**batch).logits
        shared.set_adapter("pal")
        back = pal(**batch).logits
    assert not torch.allclose(first, switched)
    torch.testing.assert_close(back, first)
    with pytest.raises(HFPersonaError, match="PAL's own adapter name"):
        load_pal_adapter(tmp_path / "pal", extra_adapters={"pal": tmp_path / "other"})


def test_train_pal_lora_keeps_the_backbone_and_saves_the_adapter(tiny_llama_dir, tmp_path):
    from hf_persona.data import sample_path
    from hf_persona.data.pesconv import annotate
    from hf_persona.evaluation.pal import evaluate_pal, load_pal_for_eval
    from hf_persona.training.pal import train_pal

    annotate(lambda batch: [["i talk about my job."] for _ in batch], sample_path("esconv"), tmp_path / "pesconv",
             progress=False)
    summary = train_pal(tmp_path / "pesconv", tmp_path / "pal", backbone=tiny_llama_dir, lora=4, max_steps=2,
                        eval_steps=2, batch_size=4, warmup_steps=0, learning_rate=1e-2, max_eval_examples=4,
                        max_source_length=96, max_persona_length=16, max_target_length=8, progress=False)
    assert summary["lora_rank"] == 4 and summary["global_step"] == 2 and summary["fusion_gate_mean_abs"] > 0
    assert not (tmp_path / "pal" / "model.safetensors").exists()
    assert summary.output_dir == tmp_path / "pal" and type(summary.model).__name__ == "PALForCausalLM"  # RecipeResult
    model, tok, cfg = load_pal_for_eval(tmp_path / "pal")
    assert cfg["lora_rank"] == 4 and model.fusion_gate.abs().max() > 0
    metrics = evaluate_pal(tmp_path / "pal", tmp_path / "pesconv", max_examples=4, max_generate=2,
                           decoding=dict(do_sample=False, max_new_tokens=4))
    assert metrics["n_generated"] == 2
    with pytest.raises(HFPersonaError, match="causal LM"):
        train_pal(tmp_path / "pesconv", tmp_path / "bad", backbone="minilm", lora=4, max_steps=1)


def test_not_an_adapter_folder(tmp_path):
    with pytest.raises(HFPersonaError, match="not a PAL adapter folder"):
        load_pal_adapter(tmp_path)


def test_lora_on_an_lm_with_tied_embeddings(tiny_llama_dir, tmp_path):
    """SmolLM2 ties its LM head to the embedding: the PAL token rows are one trainable tensor for
    both, and training (with evaluations) and saving work; transformers could not checkpoint such a
    model, so a LoRA run writes no Trainer checkpoints."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_persona.data import sample_path
    from hf_persona.data.pesconv import annotate
    from hf_persona.training.pal import train_pal

    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    lm.config.tie_word_embeddings = True
    tied = AutoModelForCausalLM.from_config(lm.config)
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    tied.save_pretrained(tmp_path / "tied")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path / "tied")
    annotate(lambda batch: [["i talk about my job."] for _ in batch], sample_path("esconv"), tmp_path / "pesconv",
             progress=False)
    summary = train_pal(tmp_path / "pesconv", tmp_path / "pal", backbone=str(tmp_path / "tied"), lora=2, max_steps=2,
                        eval_steps=1, batch_size=2, warmup_steps=0, learning_rate=1e-2, max_eval_examples=2,
                        max_source_length=64, max_persona_length=16, max_target_length=8, progress=False)
    assert summary["global_step"] == 2 and not list((tmp_path / "pal").glob("checkpoint-*"))
    # a wall-clock budget stops the run without asking for the checkpoint it cannot write
    cut = train_pal(tmp_path / "pesconv", tmp_path / "cut", backbone=str(tmp_path / "tied"), lora=2, max_steps=5,
                    budget_minutes=1e-6, eval_steps=5, batch_size=2, warmup_steps=0, max_eval_examples=2,
                    max_source_length=64, max_persona_length=16, max_target_length=8, progress=False)
    assert cut["stopped_by_budget"] and cut["global_step"] == 1
    assert (tmp_path / "cut" / "adapter_model.safetensors").is_file()
    model, tok, _ = load_pal_adapter(tmp_path / "pal")
    assert model.backbone.get_output_embeddings() is not None
    batch = _inputs(tok)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
