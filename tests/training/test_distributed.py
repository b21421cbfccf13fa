"""Multi-process training: loss scaling under gradient accumulation and DDP, torchrun on CPU (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_every_registered_model_scales_no_loss_itself():
    """Our models return a mean loss and ignore ``num_items_in_batch``; transformers' Trainer must then
    divide by the accumulation steps and not multiply by the number of processes. A model class with
    ``**kwargs`` in forward and no ``accepts_loss_kwargs = False`` gets neither (silently wrong sizes)."""
    from hf_persona.plugins import get_model_spec, list_plugins

    for name in list_plugins()["models"]:
        cls = get_model_spec(name).model_class
        assert getattr(cls, "accepts_loss_kwargs", True) is False, name


def _tiny_transmitter(minilm_path):
    from transformers import AutoTokenizer, BertConfig

    from hf_persona.models.transmitter import TransmitterConfig, TransmitterForDialogue, prepare_tokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    prepare_tokenizer(tok)
    torch.manual_seed(0)
    cfg = TransmitterConfig(
        backbone_config=BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0),
        max_context_tokens=64, max_response_tokens=12, nup_dropout=0.0)
    model = TransmitterForDialogue(cfg)
    model.adapt_to_tokenizer(tok)
    return model, tok


def _one_sgd_step(model, tok, tmp_path, batch_size, accumulation):
    from transformers import Trainer, TrainingArguments

    from hf_persona.training.transmitter import TransmitterCollator

    example = {"persona": ["i like cats ."], "history": ["hi , do you have pets ?"], "response": "yes , a cat .",
               "distractor": "i drive a bus ."}
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.5,
                             optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             remove_unused_columns=False, logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=[example] * 4, data_collator=TransmitterCollator(tok, 64, 12))
    trainer.train()
    return model.nup_head.weight.detach().clone(), trainer.state.log_history[0]["loss"]


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(minilm_path, tmp_path):
    """Four identical examples: two micro-batches of two accumulated must move the weights exactly as
    one batch of four (each micro-batch has the same mean loss). Without the model saying that its
    loss is a mean, the Trainer skips the division by the accumulation steps and the update doubles."""
    model, tok = _tiny_transmitter(minilm_path)
    start = model.nup_head.weight.detach().clone()
    whole, loss_whole = _one_sgd_step(model, tok, tmp_path / "a", batch_size=4, accumulation=1)
    model, _ = _tiny_transmitter(minilm_path)
    accumulated, loss_acc = _one_sgd_step(model, tok, tmp_path / "b", batch_size=2, accumulation=2)
    assert not torch.allclose(whole, start)
    assert torch.allclose(accumulated - start, whole - start, rtol=1e-4, atol=1e-7)
    assert loss_acc == pytest.approx(loss_whole, rel=1e-4)


def torchrun_cli(args, tmp_path, nproc, stderr=False):
    """``hf-persona ARGS`` under ``torchrun --nproc_per_node NPROC`` (CPU, gloo): its stdout (and
    stderr after it when ``stderr``); a failure shows the end of both."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "hf_persona.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + (proc.stderr if stderr else "")


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def transmitter_without_dropout(tmp_path_factory, minilm_path):
    """A saved tiny Transmitter without any dropout: runs that differ only in how the batch is split
    must agree (``train transmitter`` continues training a Transmitter folder as it is)."""
    folder = tmp_path_factory.mktemp("tx_nodrop")
    model, tok = _tiny_transmitter(minilm_path)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_two_processes_train_like_one_with_the_same_global_batch(transmitter_without_dropout, tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo on CPU) with 2 examples per process equals one process
    accumulating two batches of 2: accelerate hands batch k of the seeded order to rank k mod 2,
    and DDP averages the two gradients as accumulation does. Only rank 0 prints the summary."""
    from hf_persona.cli import main
    from hf_persona.data import sample_path

    common = ["train", "transmitter", "--backbone", transmitter_without_dropout, "--data", str(sample_path("personachat")),
              "--max-steps", "2", "--batch-size", "2", "--max-context-tokens", "64", "--lr", "1e-3", "--no-resume"]
    out = torchrun_cli([*common, "--output-dir", tmp_path / "ddp", "--json", tmp_path / "ddp.json"], tmp_path, 2)
    assert out.count("saved to") == 1 and out.count("global_step") == 1
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world_size"] == 2 and ddp["examples_seen"] == 8
    main([*common, "--gradient-accumulation-steps", "2", "--output-dir", str(tmp_path / "one"),
          "--json", str(tmp_path / "one.json")])
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["world_size"] == 1 and one["examples_seen"] == 8
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    start = _weights(Path(transmitter_without_dropout))  # both runs moved it
    assert not torch.allclose(a["nup_head.weight"], start["nup_head.weight"])
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)


def test_pal_under_torchrun_is_one_run_of_world_size_two(tiny_bert_dir, tmp_path):
    from hf_persona.data import sample_path
    from hf_persona.data.pesconv import annotate

    def extractor(batch):  # a deterministic stand-in: one sentence per seeker utterance
        return [[f"i talk about {' '.join(u.split()[-3:-1]) or 'nothing'} often." for u in utts[-2:]]
                for utts in batch]

    annotate(extractor, sample_path("esconv"), tmp_path / "pesconv", progress=False)
    out = torchrun_cli(["train", "pal", "--data", tmp_path / "pesconv", "--backbone", tiny_bert_dir,
                     "--output-dir", tmp_path / "pal", "--max-steps", 2, "--eval-steps", 2, "--batch-size", 2,
                     "--max-eval-examples", 4, "--json", tmp_path / "pal.json"], tmp_path, 2)
    assert out.count("saved to") == 1
    summary = json.loads((tmp_path / "pal.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    assert (tmp_path / "pal" / "model.safetensors").is_file()
