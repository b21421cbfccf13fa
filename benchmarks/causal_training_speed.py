"""Training speed of the causal-LM generators on this CPU: which recipe learns the most tokens per minute.

One optimiser step of SmolLM2-135M-Instruct (AdamW, batch ``--batch-size`` x ``--seq-len`` tokens of
real PERSONA-CHAT dialogue text, loss on every token) under each recipe:

* ``full``: full fine-tuning, fp32;
* ``full_bf16``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (weights and optimiser
  stay fp32);
* ``lora``: LoRA rank 8 (alpha 16) on every linear layer, fp32 (``hf_persona`` LoRA default);
* ``lora_bf16``: LoRA under bf16 autocast;
* ``frozen_half``: full fine-tuning of the upper half of the layers only (embeddings and the lower
  half frozen: no backward pass below the middle);
* ``full_short``: full fine-tuning with half the sequence length (tokens/s at shorter sequences).

Each recipe runs in its own process (its own peak RSS): ``--warmup`` steps, then the median of
``--steps`` timed steps. Writes ``benchmarks/results/causal_training_speed.json``.

    OMP_NUM_THREADS=2 python benchmarks/causal_training_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("full", "full_bf16", "lora", "lora_bf16", "frozen_half", "full_short")


def _texts(data, n):
    from hf_persona.data import read_personachat

    rows = read_personachat(data)
    return [" ".join(r["utterances"]) for r in rows.select(range(min(n, len(rows))))]


def run_one(recipe: str, batch_size: int, seq_len: int, steps: int, warmup: int, data: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_persona.backbones import resolve

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    path = resolve("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    length = seq_len // 2 if recipe == "full_short" else seq_len
    if recipe.startswith("lora"):
        from hf_persona.training.persona_extractor import lora_config
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(8))
    elif recipe == "frozen_half":
        layers = model.model.layers
        for p in model.model.embed_tokens.parameters():
            p.requires_grad_(False)
        for layer in layers[: len(layers) // 2]:
            for p in layer.parameters():
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    texts = _texts(data, batch_size * (steps + warmup))
    enc = tok(texts, truncation=True, max_length=length, padding="max_length", return_tensors="pt")
    bf16 = recipe.endswith("bf16")
    model.train()
    times, losses = [], []
    for i in range(steps + warmup):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        ids, mask = enc["input_ids"][sl], enc["attention_mask"][sl]
        labels = ids.masked_fill(mask == 0, -100)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
    step = statistics.median(times)
    return {"recipe": recipe, "seq_len": length, "batch_size": batch_size, "seconds_per_step": step,
            "tokens_per_second": batch_size * length / step,
            "trainable_parameters": sum(p.numel() for p in params),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "losses": losses}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--data", default=None, help="PERSONA-CHAT file (default: the shared one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "causal_training_speed.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one recipe, print JSON
    a = ap.parse_args(argv)
    from hf_persona.data import shared_data_file

    data = shared_data_file(a.data)
    if a.one:
        print(json.dumps(run_one(a.one, a.batch_size, a.seq_len, a.steps, a.warmup, data)))
        return
    from hf_persona.utils import atomic_write_json, command_line, machine_description

    machine = machine_description()
    results = {}
    for recipe in [r.strip() for r in a.recipes.split(",") if r.strip()]:
        if recipe not in RECIPES:
            raise SystemExit(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        cmd = [sys.executable, __file__, "--one", recipe, "--batch-size", str(a.batch_size), "--seq-len",
               str(a.seq_len), "--steps", str(a.steps), "--warmup", str(a.warmup), "--data", data]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[recipe] = json.loads(out.strip().splitlines()[-1])
        r = results[recipe]
        print(f"{recipe:12s} {r['seconds_per_step']:6.1f} s/step {r['tokens_per_second']:6.0f} tokens/s "
              f"{r['peak_rss_gb']:.1f} GB", flush=True)
    base = results.get("full", {}).get("tokens_per_second")
    summary = {f"{k}.tokens_per_second": v["tokens_per_second"] for k, v in results.items()}
    if base:
        summary.update({f"{k}.speedup_vs_full": v["tokens_per_second"] / base for k, v in results.items()})
    atomic_write_json(a.out, {**summary, "recipes": results, "machine": machine,
                              "threads": int(os.environ.get("OMP_NUM_THREADS", "2")),
                              "command": command_line("benchmarks/causal_training_speed.py", argv)})


if __name__ == "__main__":
    main()
