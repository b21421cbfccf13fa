"""Is one trained response selector really ahead of another? A paired test on the same queries.

Scores two saved models (CoBERT or Bi-encoder folders) on exactly the development examples and
candidate sets of ``cobert_quality.py`` (last 200 dialogues of ``valid_both_original``, distractors
from other development dialogues, seed 0), then compares them query by query: Hits@1 of 20 with an
exact McNemar test, and Hits@1 / MRR of 100 and MRR of 20 with a paired bootstrap interval
(10,000 resamples of the queries) for the difference, with the persona and without it (n_P = 0).

Several training seeds per side: ``NAME=FOLDER1,FOLDER2,...`` (the same number on both sides, paired in
order). Each query's measurement is then its mean over the seeds, the bootstrap resamples queries
(keeping a query's seeds together), McNemar is reported per seed pair, and a sign test on the
seed-averaged Hits@1/20 differences (queries where A is ahead vs behind) pools them.

    OMP_NUM_THREADS=1 python benchmarks/cobert_paired.py cobert=runs/cobert_quality_2ep_global/cobert \\
        biencoder=runs/cobert_quality_2ep/biencoder --out benchmarks/results/cobert_paired_2epochs.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs=2, help="NAME=FOLDER[,FOLDER...] for model A and model B (the difference is "
                                                "A - B; several folders = training seeds, paired in order)")
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
    from hf_persona.utils import atomic_write_json, command_line, parse_named_folders

    try:
        specs = parse_named_folders(args.models, several=True)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if len(specs[0][1]) != len(specs[1][1]):
        raise SystemExit(f"give both models the same number of seed folders, got {len(specs[0][1])} and "
                         f"{len(specs[1][1])}")
    data = shared_data_file(args.data)
    _, dev = split_by_dialogue(read_personachat(data), first=args.train_dialogues)
    examples = ranking_examples(dev)
    pool, indices = candidate_sets(examples, 100, seed=args.seed)

    metrics = ("hits@1_20", "mrr_20", "r@1", "mrr")
    per_query = {}  # name + suffix -> metric -> [seeds, queries]
    for name, folders in specs:
        for folder in folders:
            model = load_selector(folder)
            cache = model.encode_candidates(pool)
            for use_persona in (True, False):
                personas = [e["persona"] if use_persona else [] for e in examples]
                with torch.no_grad():
                    scores = model.score_candidates([e["context"] for e in examples], personas, cache,
                                                    candidate_indices=indices).float().cpu().numpy()
                rr100, rr20 = reciprocal_ranks(scores), reciprocal_ranks(scores[:, :20])
                key = name + ("" if use_persona else "_no_persona")
                seed_rows = per_query.setdefault(key, {m: [] for m in metrics})
                for metric, values in zip(metrics, (rr20 == 1.0, rr20, rr100 == 1.0, rr100)):
                    seed_rows[metric].append(values.astype(float))
            print(f"scored {name}: {folder}", flush=True)

    (a, folders_a), (b, folders_b) = specs
    seeds = len(folders_a)
    single = seeds == 1
    result = {"model_a": {a: folders_a[0] if single else folders_a},
              "model_b": {b: folders_b[0] if single else folders_b},
              "seeds": seeds, "examples": len(examples), "data": os.path.relpath(data, ROOT),
              "protocol": "cobert_quality.py development set and candidates"
                          + ("" if single else "; per-query measurements averaged over the seeds")}
    rows = []
    for suffix in ("", "_no_persona"):
        qa = {m: np.stack(v) for m, v in per_query[a + suffix].items()}  # [seeds, queries]
        qb = {m: np.stack(v) for m, v in per_query[b + suffix].items()}
        tests = [mcnemar_exact(qa["hits@1_20"][k] > 0, qb["hits@1_20"][k] > 0) for k in range(seeds)]
        if single:
            result[f"mcnemar.hits@1_20{suffix}"] = tests[0]
            pooled_p = tests[0]["p"]
        else:
            result[f"mcnemar_per_seed.hits@1_20{suffix}"] = tests
            d = qa["hits@1_20"].mean(0) - qb["hits@1_20"].mean(0)
            sign = mcnemar_exact(d > 0, d < 0)  # queries where A is ahead vs behind, over the seeds
            result[f"sign_test.hits@1_20{suffix}"] = {"a_ahead": sign["a_only"], "b_ahead": sign["b_only"],
                                                      "p": sign["p"]}
            pooled_p = sign["p"]
        for metric in metrics:
            ma, mb = qa[metric].mean(0), qb[metric].mean(0)
            boot = paired_bootstrap(ma, mb, resamples=args.resamples, seed=args.seed)
            key = f"{metric}{suffix}"
            result[f"{a}.{key}"] = float(np.mean(ma))
            result[f"{b}.{key}"] = float(np.mean(mb))
            if not single:
                result[f"{a}.per_seed.{key}"] = [float(x) for x in qa[metric].mean(1)]
                result[f"{b}.per_seed.{key}"] = [float(x) for x in qb[metric].mean(1)]
            result[f"diff.{key}"] = boot
            rows.append({"metric": key, a: 100 * result[f"{a}.{key}"], b: 100 * result[f"{b}.{key}"],
                         "A - B": 100 * boot["diff"], "95% low": 100 * boot["low"], "95% high": 100 * boot["high"],
                         "P(diff <= 0)": boot["p_not_greater"],
                         ("McNemar p" if single else "sign test p"): pooled_p if metric == "hits@1_20" else None})
    result["command"] = command_line("benchmarks/cobert_paired.py", argv)
    atomic_write_json(args.out, result)
    print(format_table(rows, floatfmt=".2f"))
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("mcnemar", "sign_test"))}, indent=2))


if __name__ == "__main__":
    main()
