"""CoBERT vs the Bi-encoder baseline on PERSONA-CHAT, trained identically.

Data: ``personachat/valid_both_original_no_cands.txt`` from the shared data folder, split by dialogue
(first 800 for training, last 200 for development). Within the 800 training dialogues the last 10%
are held back for checkpoint selection, so the development dialogues are only used for the numbers
reported here. Both models start from the packaged all-MiniLM-L6-v2, use the same seed, batch size,
learning rate and wall-clock budget. Evaluation: each development example's gold response among
distractors sampled (seed 0) from the responses of the other development dialogues: Hits@1 and MRR
of 20 candidates (PERSONA-CHAT protocol) and R@1/R@10/R@50/MRR of 100 (paper protocol), with the
persona and without it (n_P = 0). The untrained (zero-shot) mean-pooled MiniLM Bi-encoder is
reported for scale.

    python benchmarks/cobert_quality.py --budget-minutes 8

Writes ``benchmarks/results/cobert_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="PERSONA-CHAT file (default: shared data valid_both_original).")
    parser.add_argument("--train-dialogues", type=int, default=800)
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="Training wall time per model (0: no limit, use --max-steps).")
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--num-negatives", type=int, default=0)
    parser.add_argument("--hop1-pooling", choices=["max", "mean", "max+mean"], default="max",
                        help="CoBERT hop-1 pooling (the paper: max)")
    parser.add_argument("--global-match", action="store_true",
                        help="CoBERT also matches the mean-pooled states (adds the Bi-encoder's score; not in the paper).")
    parser.add_argument("--dev-examples", type=int, default=0,
                        help="Score a seeded random subset of this many dev examples (0: all); distractors still "
                             "come from all dev dialogues.")
    parser.add_argument("--max-length", type=int, default=128, help="Context token budget.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="Continue from the newest checkpoint in --work-dir (e.g. to train longer).")
    parser.add_argument("--eval-only", action="store_true",
                        help="Do not train: evaluate the models already saved in --work-dir.")
    parser.add_argument("--models", default="biencoder,cobert",
                        help="Comma-separated models to (re)train; keys of the others are kept from --out.")
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "cobert_quality"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cobert_quality.json"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from hf_persona.data import read_personachat, shared_data_file, split_by_dialogue
    from hf_persona.evaluation.cobert import evaluate_ranking
    from hf_persona.training.cobert import build_model, load_selector, ranking_examples, train_cobert
    from hf_persona.utils import atomic_write_json, command_line

    data = shared_data_file(args.data)
    dialogues = read_personachat(data)
    train, dev = split_by_dialogue(dialogues, first=args.train_dialogues)
    dev_examples = ranking_examples(dev)
    n_eval = min(args.dev_examples, len(dev_examples)) if args.dev_examples else len(dev_examples)
    result = {}
    if Path(args.out).is_file():  # keep the numbers of models not re-run this time
        result = json.loads(Path(args.out).read_text())
    result.update({
        "data": os.path.relpath(data, ROOT), "train_dialogues": len(train), "dev_dialogues": len(dev),
        "dev_examples": len(dev_examples), "dev_examples_scored": n_eval, "backbone": "all-MiniLM-L6-v2 (packaged)", "seed": args.seed,
        "budget_minutes_per_model": args.budget_minutes or None, "max_steps_per_model": args.max_steps, "batch_size": args.batch_size, "learning_rate": args.lr,
        "num_negatives": args.num_negatives, "threads": args.threads, "max_context_length": args.max_length,
        "cobert.hop1_pooling": args.hop1_pooling, "cobert.global_match": args.global_match,
        "protocol": "hits@1/mrr_20: 20 candidates; r@k/mrr: 100 candidates (paper); distractors from other dev "
                    "dialogues, seed 0; *_no_persona: n_P = 0",
    })
    if args.eval_only:  # training settings belong to the run that produced the saved models
        for key in ("budget_minutes_per_model", "max_steps_per_model", "batch_size", "learning_rate",
                    "num_negatives", "max_context_length", "cobert.hop1_pooling",
                    "cobert.global_match"):
            result.pop(key, None)
        result["models_evaluated_from"] = os.path.relpath(args.work_dir, ROOT)

    def record(prefix, metrics):
        result[f"{prefix}.hits@1"] = metrics["hits@1_20"]
        result[f"{prefix}.mrr_20"] = metrics["mrr_20"]
        result[f"{prefix}.hits@1_no_persona"] = metrics.get("hits@1_20_no_persona")
        for key in ("r@1", "r@10", "r@50", "mrr", "mrr_no_persona", "r@1_no_persona"):
            if key in metrics:
                result[f"{prefix}.{key}"] = metrics[key]

    if not args.no_zero_shot:
        t0 = time.time()
        zs = build_model("biencoder", "minilm")
        metrics = evaluate_ranking(zs, dev_examples, 100, 20, seed=0, personas=(True,), max_examples=n_eval)
        result["zero_shot_biencoder.hits@1"] = metrics["hits@1_20"]
        result["zero_shot_biencoder.mrr"] = metrics["mrr"]
        result["zero_shot_biencoder.eval_seconds"] = round(time.time() - t0, 1)
        atomic_write_json(args.out, result)
        print("zero-shot", metrics, flush=True)

    for kind in args.models.split(","):
        t0 = time.time()
        if args.eval_only:
            model = load_selector(Path(args.work_dir) / kind)
        else:
            model = train_cobert(train, Path(args.work_dir) / kind, backbone="minilm", model=kind,
                                 budget_minutes=args.budget_minutes or None, max_steps=args.max_steps, epochs=1.0,
                                 batch_size=args.batch_size, learning_rate=args.lr, num_negatives=args.num_negatives,
                                 seed=args.seed, resume=args.resume, eval_examples=100, eval_candidates=20,
                                 max_context_length=args.max_length,
                                 **({"hop1_pooling": args.hop1_pooling, "global_match": args.global_match}
                                    if kind == "cobert" else {})).model
        train_s = time.time() - t0
        summary = json.loads((Path(args.work_dir) / kind / "train_summary.json").read_text())
        t0 = time.time()
        metrics = evaluate_ranking(model, dev_examples, 100, 20, seed=0, max_examples=n_eval)
        record(kind, metrics)
        result[f"{kind}.train_steps"] = summary["global_step"]
        result[f"{kind}.train_examples_seen"] = summary["global_step"] * args.batch_size
        result[f"{kind}.stopped_by_budget"] = summary["stopped_by_budget"]
        if not args.eval_only:
            result[f"{kind}.budget_minutes"] = args.budget_minutes or None
            result[f"{kind}.max_steps"] = args.max_steps
        if not args.eval_only:
            result[f"{kind}.train_seconds"] = round(train_s, 1)
        result[f"{kind}.eval_seconds"] = round(time.time() - t0, 1)
        atomic_write_json(args.out, result)
        print(kind, metrics, flush=True)
        del model

    if "cobert.hits@1" in result and "biencoder.hits@1" in result:
        result["cobert_beats_biencoder"] = result["cobert.hits@1"] > result["biencoder.hits@1"]
    result["command"] = command_line("benchmarks/cobert_quality.py", argv)
    atomic_write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
