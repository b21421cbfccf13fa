"""Receiver persona-perception probe on real PERSONA-CHAT (P2Bot, section 5.4).

Protocol (quality):
  * data: ``<data-dir>/personachat/valid_both_{original,revised}_no_cands.txt`` (1,000 dialogues each,
    the same dialogues with original / revised personas); one example = one dialogue side (a speaker's
    utterances + that speaker's persona), both sides used;
  * training: the first ``--first`` (800) dialogues of BOTH files (one model; distractors drawn within a
    file, never across), of which the last ``--select`` (30) dialogues per file are held out to pick the
    best checkpoint; MiniLM backbone; the run length is sized to ``--budget-minutes`` from a timing pass;
  * probe: the last 200 dialogues of each file, ``--candidates`` (32) personas per side (true + 31
    distractors from the other distinct personas of the same file that share no sentence with the true
    one, seed ``--seed``), Hits@1 and the MRR of the true persona sentences among all candidate
    sentences. Baselines on the very same items: TF-IDF IR and zero-shot mean-pooled MiniLM cosine.
    PERSONA-CHAT keeps several versions of one persona (4- and 5-sentence ones sharing four sentences);
    such a version is not a distractor. The probe is also run with them allowed (the older protocol;
    keys prefixed ``shared_sentences_allowed.``, with the number of items that drew such a distractor).
    ``--allow-shared-sentences`` makes the older protocol the main one (and trains with it).

Protocol (speed): ``pairs_per_second`` is the end-to-end probe throughput of the Receiver ((side,
persona) pairs scored per second, sentence encodings cached across the probe);
``unbatched_pairs_per_second`` is the naive loop ``model.score(utterances, persona)`` per pair on the
first ``--speed-items`` items, and ``batched_speedup`` their ratio (median of ``--repeats`` runs each).

    python benchmarks/receiver_probe.py --budget-minutes 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from hf_persona.backbones import resolve  # noqa: E402
from hf_persona.data import read_personachat, shared_data_dir  # noqa: E402
from hf_persona.evaluation.receiver_probe import (  # noqa: E402
    CosineScorer,
    ReceiverScorer,
    TfidfScorer,
    build_probe_items,
    run_probe,
)
from hf_persona.training.receiver import (  # noqa: E402
    ReceiverCollator,
    ReceiverPairDataset,
    Tokenized,
    dialogue_sides,
    freeze_lower_layers,
    grouped_sides,
    train_receiver,
)
from hf_persona.utils import atomic_write_json, command_line, set_seed  # noqa: E402


def calibrate_step_seconds(backbone, train_sets, batch_size, steps=3, seed=0, negatives="sampled",
                           max_utterances=None, freeze_layers=0, allow_shared_sentences=False):
    """Median seconds of one forward+backward+Adam step of a fresh Receiver on real training batches."""
    from transformers import AutoTokenizer

    from hf_persona.models.receiver import ReceiverModel

    src = resolve(backbone)
    model = ReceiverModel.from_encoder_pretrained(src)
    model.train()
    tok = AutoTokenizer.from_pretrained(src)
    ds = ReceiverPairDataset(grouped_sides(train_sets), Tokenized(tok, 64, 32),
                             num_negatives=1 if negatives == "sampled" else 0, seed=seed,
                             max_utterances=max_utterances, allow_shared_sentences=allow_shared_sentences)
    freeze_lower_layers(model, freeze_layers)
    collate = ReceiverCollator(tok.pad_token_id or 0, allow_shared_sentences=allow_shared_sentences)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-7)
    times = []
    for i in range(steps + 1):
        batch = collate([ds[(i * batch_size + j) % len(ds)] for j in range(batch_size)])
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def persona_overlap(train_ds, probe_ds):
    tr = {frozenset(e["persona"]) for e in dialogue_sides(train_ds)}
    pr = {frozenset(e["persona"]) for e in dialogue_sides(probe_ds)}
    tr_s = {s for p in tr for s in p}
    pr_s = {s for p in pr for s in p}
    return {
        "probe_personas": len(pr),
        "probe_personas_seen_in_training": len(pr & tr),
        "probe_persona_sentences": len(pr_s),
        "probe_persona_sentences_seen_in_training": len(pr_s & tr_s),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="Folder holding personachat/ (default: shared data dir)")
    p.add_argument("--backbone", default="minilm", help="encoder (also the zero-shot baseline)")
    p.add_argument("--init", default=None,
                   help="continue training from this saved Receiver folder instead of the fresh backbone")
    p.add_argument("--first", type=int, default=800)
    p.add_argument("--select", type=int, default=30, help="dialogues per file kept out of training for checkpoint choice")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="wall-clock training budget")
    p.add_argument("--max-steps", type=int, default=None, help="override the budget-derived step count")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--evals", type=int, default=1, help="checkpoint evaluations on the selection split")
    p.add_argument("--lr", type=float, default=6.25e-5)
    p.add_argument("--negatives", choices=["sampled", "in_batch"], default="sampled")
    p.add_argument("--max-train-utterances", type=int, default=None)
    p.add_argument("--freeze-layers", type=int, default=0)
    p.add_argument("--candidates", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="probe distractor seed")
    p.add_argument("--train-seed", type=int, default=None, help="training data-order seed (default: --seed)")
    p.add_argument("--loss", choices=["margin", "softmax"], default="margin",
                   help="ranking loss: the paper's hinge or the softmax (InfoNCE) option")
    p.add_argument("--loss-temperature", type=float, default=0.1)
    p.add_argument("--tau-start", type=float, default=10.0)
    p.add_argument("--speed-items", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-dir", default="/tmp/hf_persona_receiver_probe_model")
    p.add_argument("--skip-train", action="store_true", help="evaluate the model already in --model-dir")
    p.add_argument("--training-from", default=None,
                   help="with --skip-train: copy the 'training' record of the earlier result JSON that made the model")
    p.add_argument("--allow-shared-sentences", action="store_true",
                   help="distractor personas may share sentences with the true one (older protocol), in training "
                        "and in the main probe keys")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "receiver_probe.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir()
    if data_dir is None:
        sys.exit("real data not found: pass --data-dir or set HF_PERSONA_DATA")
    files = {k: data_dir / "personachat" / f"valid_both_{k}_no_cands.txt" for k in ("original", "revised")}
    data = {k: read_personachat(v) for k, v in files.items()}
    n_train = args.first - args.select
    train = {k: ds.select(range(n_train)) for k, ds in data.items()}
    select = {k: ds.select(range(n_train, args.first)) for k, ds in data.items()}
    probe = {k: ds.select(range(args.first, len(ds))) for k, ds in data.items()}

    result = {
        "backbone": args.backbone,
        "data": {k: str(v) for k, v in files.items()},
        "train_dialogues_per_file": n_train,
        "selection_dialogues_per_file": args.select,
        "probe_dialogues_per_file": len(probe["original"]),
        "candidates": args.candidates,
        "seed": args.seed,
        "torch_threads": args.threads,
    }
    if not args.skip_train:
        step_s = calibrate_step_seconds(args.backbone, list(train.values()), args.batch_size, seed=args.seed,
                                        negatives=args.negatives, max_utterances=args.max_train_utterances,
                                        freeze_layers=args.freeze_layers,
                                        allow_shared_sentences=args.allow_shared_sentences)
        # ~85% of the budget for optimizer steps, the rest for the selection evaluation(s) and saving.
        steps = args.max_steps or max(10, int(args.budget_minutes * 60 * 0.85 / step_s))
        print(f"calibrated {step_s:.2f}s/step -> {steps} steps", flush=True)
        t0 = time.perf_counter()
        metrics = train_receiver(
            list(train.values()), args.model_dir, backbone=args.init or args.backbone, eval_ds=list(select.values()),
            max_steps=steps, batch_size=args.batch_size, learning_rate=args.lr, eval_negatives=3,
            negatives=args.negatives, max_train_utterances=args.max_train_utterances,
            freeze_layers=args.freeze_layers, allow_shared_sentences=args.allow_shared_sentences,
            eval_steps=max(1, steps // args.evals), seed=args.seed if args.train_seed is None else args.train_seed,
            tau_start=args.tau_start, loss_type=args.loss, loss_temperature=args.loss_temperature,
            resume=False, logging_steps=10,
            budget_minutes=args.budget_minutes * 1.15, progress=False,
        ).summary  # the metrics; the model is read back from args.model_dir below
        result["training"] = {
            "budget_minutes": args.budget_minutes,
            "init": args.init,
            "train_seed": args.seed if args.train_seed is None else args.train_seed,
            "tau_start": args.tau_start,
            "loss": args.loss,
            "loss_temperature": args.loss_temperature if args.loss == "softmax" else None,
            "calibrated_seconds_per_step": step_s,
            "planned_steps": steps,
            "steps": metrics.get("global_step"),
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "negatives": args.negatives,
            "max_train_utterances": args.max_train_utterances,
            "freeze_layers": args.freeze_layers,
            "allow_shared_sentences": args.allow_shared_sentences,
            "train_examples": metrics.get("train_examples"),
            "epochs": (metrics.get("global_step") or 0) * args.batch_size / max(1, metrics.get("train_examples") or 1),
            "train_loss": metrics.get("train_loss"),
            "selection_hits@1_of_4": metrics.get("eval_hits_at_1"),
            "wall_seconds": time.perf_counter() - t0,
        }
        print(json.dumps(result["training"]), flush=True)
    elif args.training_from:
        earlier = json.loads(Path(args.training_from).read_text())
        if "training" not in earlier:
            sys.exit(f"{args.training_from} has no 'training' record")
        result["training"] = {**earlier["training"], "copied_from": args.training_from}

    from hf_persona.models.receiver import ReceiverModel

    model = ReceiverModel.from_pretrained(args.model_dir).eval()
    result["tau"] = model.tau
    result["share_encoders"] = model.config.share_encoders
    zeroshot = CosineScorer(resolve(args.backbone))
    pairs, seconds = 0, 0.0
    result["allow_shared_sentences"] = args.allow_shared_sentences
    for split, ds in probe.items():
        result[f"overlap.{split}"] = persona_overlap(train[split], ds)
        for allow in (args.allow_shared_sentences, not args.allow_shared_sentences):
            prefix = "" if allow == args.allow_shared_sentences else (
                "shared_sentences_allowed." if allow else "no_shared_sentences.")
            items = build_probe_items(dialogue_sides(ds), num_candidates=args.candidates, seed=args.seed,
                                      allow_shared_sentences=allow)
            result[f"{prefix}probe_items.{split}"] = len(items)
            for name, scorer in (("receiver", ReceiverScorer(model)), ("zeroshot", zeroshot), ("ir", TfidfScorer())):
                r = run_probe(items, scorer)
                if allow:
                    result[f"{prefix}items_with_a_shared_sentence_distractor.{split}"] = r["items_with_a_version"]
                result[f"{prefix}{name}.hits@1.{split}"] = r["hits@1"]
                result[f"{prefix}{name}.mrr.{split}"] = r["mrr"]
                for key in ("misses", "misses_to_a_version", "ties"):
                    result[f"{prefix}{name}.{key}.{split}"] = r[key]
                if name == "receiver" and not prefix:
                    pairs += r["pairs"]
                    seconds += r["seconds"]
                print(prefix or "main.", split, name, round(r["hits@1"], 4), round(r["mrr"], 4), flush=True)
    result["pairs_per_second"] = pairs / seconds

    # speed: the unbatched per-pair loop vs the batched probe on the same items
    items = build_probe_items(dialogue_sides(probe["original"]), num_candidates=args.candidates, seed=args.seed,
                              allow_shared_sentences=args.allow_shared_sentences)
    items = items[: args.speed_items]
    loop_rates, batch_rates = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        loop_scores = [[model.score(it["utterances"], list(c)) for c in it["candidates"]] for it in items]
        loop_rates.append(len(items) * args.candidates / (time.perf_counter() - t0))
        r = run_probe(items, ReceiverScorer(model))
        batch_rates.append(r["pairs_per_second"])
    # both paths compute the same scores
    batched = ReceiverScorer(model)
    batched.prepare(items)
    diff = max(abs(a - b) for it, row in zip(items, loop_scores) for a, b in zip(batched.persona_scores(it), row))
    result["unbatched_pairs_per_second"] = statistics.median(loop_rates)
    result["batched_pairs_per_second_same_items"] = statistics.median(batch_rates)
    result["batched_speedup"] = result["batched_pairs_per_second_same_items"] / result["unbatched_pairs_per_second"]
    result["batched_vs_loop_max_abs_diff"] = diff
    result["speed_items"] = len(items)
    result["command"] = command_line("benchmarks/receiver_probe.py", argv)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
