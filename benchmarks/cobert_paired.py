"""Is one trained response selector really ahead of another? A paired test on the same queries.

Scores two saved models (CoBERT or Bi-encoder folders) on exactly the development examples and
candidate sets of ``cobert_quality.py`` (last 200 dialogues of ``valid_both_original``, distractors
from other development dialogues, seed 0), then compares them query by query: Hits@1 of 20 with an
exact McNemar test, and Hits@1 / MRR of 100 and MRR of 20 with a paired bootstrap interval
(10,000 resamples of the queries) for the difference, with the persona and without it (n_P = 0).

    OMP_NUM_THREADS=1 python benchmarks/cobert_paired.py cobert=runs/cobert_quality_2ep_global/cobert \\
        biencoder=runs/cobert_quality_2ep/biencoder --out benchmarks/results/cobert_paired_2epochs.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs=2, help="NAME=FOLDER for model A and model B (the difference is A - B)")
    parser.add_argument("--data", default=None, help="PERSONA-CHAT file (default: shared data valid_both_original).")
    parser.add_argument("--train-dialogues", type=int, default=800)
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cobert_paired.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.data import read_personachat, shared_data_file, split_by_dialogue
    from hf_persona.evaluation import format_table, mcnemar_exact, paired_bootstrap, reciprocal_ranks
    from hf_persona.training.cobert import candidate_sets, load_selector, ranking_examples
    from hf_persona.utils import atomic_write_json, command_line

    specs = []
    for spec in args.models:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"expected NAME=FOLDER, got {spec!r}")
        specs.append((name, folder))
    if specs[0][0] == specs[1][0]:
        raise SystemExit("give the two models different names")
    data = shared_data_file(args.data)
    _, dev = split_by_dialogue(read_personachat(data), first=args.train_dialogues)
    examples = ranking_examples(dev)
    pool, indices = candidate_sets(examples, 100, seed=args.seed)

    per_query = {}
    for name, folder in specs:
        model = load_selector(folder)
        cache = model.encode_candidates(pool)
        for use_persona in (True, False):
            personas = [e["persona"] if use_persona else [] for e in examples]
            with torch.no_grad():
                scores = model.score_candidates([e["context"] for e in examples], personas, cache,
                                                candidate_indices=indices).float().cpu().numpy()
            suffix = "" if use_persona else "_no_persona"
            rr100, rr20 = reciprocal_ranks(scores), reciprocal_ranks(scores[:, :20])
            per_query[name + suffix] = {"hits@1_20": rr20 == 1.0, "mrr_20": rr20, "r@1": rr100 == 1.0, "mrr": rr100}
        print(f"scored {name}", flush=True)

    (a, _), (b, _) = specs
    result = {"model_a": dict([specs[0]]), "model_b": dict([specs[1]]), "examples": len(examples),
              "data": os.path.relpath(data, ROOT), "protocol": "cobert_quality.py development set and candidates"}
    rows = []
    for suffix in ("", "_no_persona"):
        qa, qb = per_query[a + suffix], per_query[b + suffix]
        test = mcnemar_exact(qa["hits@1_20"], qb["hits@1_20"])
        result[f"mcnemar.hits@1_20{suffix}"] = test
        for metric in ("hits@1_20", "mrr_20", "r@1", "mrr"):
            boot = paired_bootstrap(qa[metric].astype(float), qb[metric].astype(float), resamples=args.resamples,
                                    seed=args.seed)
            key = f"{metric}{suffix}"
            result[f"{a}.{key}"] = float(np.mean(qa[metric]))
            result[f"{b}.{key}"] = float(np.mean(qb[metric]))
            result[f"diff.{key}"] = boot
            rows.append({"metric": key, a: 100 * result[f"{a}.{key}"], b: 100 * result[f"{b}.{key}"],
                         "A - B": 100 * boot["diff"], "95% low": 100 * boot["low"], "95% high": 100 * boot["high"],
                         "P(diff <= 0)": boot["p_not_greater"],
                         "McNemar p": test["p"] if metric == "hits@1_20" else None})
    result["command"] = command_line("benchmarks/cobert_paired.py", argv)
    atomic_write_json(args.out, result)
    print(format_table(rows, floatfmt=".2f"))
    print(json.dumps({k: v for k, v in result.items() if k.startswith("mcnemar")}, indent=2))


if __name__ == "__main__":
    main()
