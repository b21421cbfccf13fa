"""Strategy contrastive decoding vs plain decoding (alpha = 0) for the PAL model of pal_esconv.py.

The PAL model trained by ``benchmarks/pal_esconv.py`` (``--work``, default ``runs/pal_bench/pal``)
samples a response for the first ``--generate-examples`` PESConv valid examples twice with the
paper's decoding (top-k 10, top-p 0.9, temperature 0.5, repetition penalty 1.03, 10-50 new
tokens) and the same random stream (seed 0, re-seeded per batch): once with the per-strategy alpha
table of the paper (Table 2: Question 0, Restatement 0.75, Reflection 0, Self-disclosure 0,
Affirmation 0.75, Suggestions 0.75, Information 0.75, Others 0.375) through the
StrategyContrastiveLogitsProcessor, once with alpha = 0 for every strategy (which the processor's
tests show is token-for-token plain ``generate``). Reports dist2, ead2, cos_sim and bleu2 for both
(the paper: D-2 25.56 -> 30.27, E-2 33.05 -> 41.82, cos-sim 0.229 -> 0.244, B-2 9.28 -> 8.75).

    python benchmarks/decoding_quality.py --work runs/pal_bench

Writes ``benchmarks/results/decoding_quality.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KEYS = ("dist2", "ead2", "cos_sim", "bleu2")
PAPER = {"alpha0": {"dist2": 25.56, "ead2": 33.05, "cos_sim": 0.229, "bleu2": 9.28},
         "alpha_table": {"dist2": 30.27, "ead2": 41.82, "cos_sim": 0.244, "bleu2": 8.75}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/pal_bench", help="pal_esconv.py working folder (pal/ and pesconv/).")
    p.add_argument("--generate-examples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force-strategy-first", action="store_true",
                   help="Restrict the first generated token to the 8 strategy tokens (for briefly trained models).")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decoding_quality.json"))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.errors import HFPersonaError
    from hf_persona.evaluation.pal import SentenceEmbedder, evaluate_pal
    from hf_persona.utils import atomic_write_json, machine_description

    machine = machine_description()  # at the start: the load average other jobs put on the CPU

    work = Path(args.work)
    if not (work / "pal" / "pal_training.json").is_file():
        raise HFPersonaError(f"{work}/pal: no trained PAL model; run benchmarks/pal_esconv.py --work {work} first")
    embedder = SentenceEmbedder()
    runs = {}
    for name, alpha in (("alpha0", 0.0), ("alpha_table", "table")):
        t0 = time.monotonic()
        m = evaluate_pal(work / "pal", work / "pesconv", max_examples=args.generate_examples,
                         max_generate=args.generate_examples, alpha=alpha, batch_size=args.batch_size,
                         seed=args.seed, embedder=embedder, teacher_forced=False, return_samples=3,
                         force_strategy_first=args.force_strategy_first)
        runs[name] = m
        print(f"{name}: " + ", ".join(f"{k}={m[k]:.4f}" for k in KEYS) + f" ({time.monotonic() - t0:.0f}s)", flush=True)
    result = {name: {k: runs[name][k] for k in KEYS + ("dist1", "ead1", "rougeL", "bleu4", "mean_response_words",
                                                        "acc_generated")}
              for name in runs}
    result["delta_table_minus_alpha0"] = {k: result["alpha_table"][k] - result["alpha0"][k] for k in KEYS}
    result["setup"] = {
        "model": str(work / "pal"),
        "examples": runs["alpha0"]["n_generated"],
        "split": "PESConv valid (see pal_esconv.json setup)",
        "decoding": "top-k 10, top-p 0.9, temperature 0.5, repetition penalty 1.03, 10-50 new tokens",
        "seed": args.seed,
        "force_strategy_first": args.force_strategy_first,
        "alpha_table": "paper Table 2 (the PAL config's strategy_alpha)",
        "alpha0": "StrategyContrastiveLogitsProcessor with alpha 0 for every strategy",
        "device": machine,
        "samples": {name: runs[name]["samples"] for name in runs},
    }
    result["paper"] = PAPER
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
