"""Where does a PAL model gain or lose perplexity: turns with a known persona vs turns with the placeholder.

Teacher-forced PPL (with the strategy token, as ``pal_esconv.py``) of each trained model on the PESConv
validation split, over all examples and split by whether the seeker persona was known for the turn.
Models trained by ``train_pal`` (any variant); no sampling, so it takes a minute or two per model.

``--ablate`` also scores each ``pal``-variant model with every persona replaced by the placeholder and
with no persona pass at all (the decoder over the plain dialogue states): how much of the model's
perplexity depends on what the persona says, and how much on the fusion pathway itself.

``--reference NAME`` compares every other model with that one on the same turns: the per-token NLL
difference and the PPL ratio with a 95% cluster-bootstrap interval (whole dialogues resampled), over all
turns and over each part. ``--dialogues START:END`` scores only those valid dialogues (by position), e.g.
the ones no checkpoint selection has seen. ``--cos-sim`` also samples a reply (paper decoding, seed 0) for
every turn with a persona and scores its cosine similarity to the persona (the benchmark's cos-sim), paired
against the reference the same way (dialogues resampled).

    python benchmarks/pal_persona_split.py pal=runs/pal_bench4/pal no_persona=runs/pal_bench4/no_persona \
        --data runs/pal_bench4/pesconv --ablate --reference no_persona
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=FOLDER of a model saved by train_pal")
    ap.add_argument("--data", required=True, help="PESConv folder (train/ and valid/) the models were trained on")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--ablate", action="store_true",
                    help="pal models: also score with the placeholder persona and with no persona pass")
    ap.add_argument("--dialogues", default=None, metavar="START:END",
                    help="score only valid dialogues START..END-1 (by position; either end may be left out)")
    ap.add_argument("--reference", default=None, metavar="NAME",
                    help="paired comparison of every other model with this one (cluster bootstrap over dialogues)")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--cos-sim", action="store_true",
                    help="also sample replies on the turns with a persona and compare reply-persona cosine similarity")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pal_persona_split.json"))
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.pal import (
        SentenceEmbedder,
        generate_responses,
        load_pal_for_eval,
        teacher_forced_metrics,
    )
    from hf_persona.training.pal import load_pesconv_splits, pesconv_examples
    from hf_persona.utils import atomic_write_json, command_line, machine_description, parse_named_folders

    try:
        models = [(name, folders[0]) for name, folders in parse_named_folders(a.models)]
    except ValueError as err:
        sys.exit(str(err))
    if a.reference is not None and a.reference not in [name for name, _ in models]:
        sys.exit(f"--reference {a.reference!r} is not one of the models {[name for name, _ in models]}")
    _, valid = load_pesconv_splits(a.data)
    if not valid:
        sys.exit(f"{a.data} has no valid/ split")
    if a.dialogues is not None:
        try:
            start, end = (int(x) if x else None for x in a.dialogues.split(":"))
        except ValueError:
            sys.exit(f"--dialogues {a.dialogues!r}: expected START:END, e.g. 30:195")
        valid = valid[start:end]
        if not valid:
            sys.exit(f"--dialogues {a.dialogues} selects no dialogue of the {len(load_pesconv_splits(a.data)[1])}")
    result = {"data": str(a.data), "machine": machine_description(),
              "ppl": "teacher forced, includes the strategy token; split by whether the turn has a persona",
              "persona_input": "given: the annotated persona; placeholder: every persona replaced by the "
                               "placeholder; none: no persona pass (decoder over the plain dialogue states)",
              "dialogues": {"selection": a.dialogues or "all", "count": len(valid),
                            "ids": [row.get("dialogue_id", i) for i, row in enumerate(valid)]}}
    rows, scored, cosines = [], {}, {}
    embedder = SentenceEmbedder() if a.cos_sim else None
    for name, folder in models:
        model, tok, cfg = load_pal_for_eval(folder)
        lengths = {k: cfg[k] for k in ("max_source_length", "max_persona_length", "max_target_length")}
        examples, _ = pesconv_examples(valid, tok, cfg["variant"], with_text=True, **lengths)
        inputs = ("given", "placeholder", "none") if a.ablate and cfg["variant"] == "pal" else ("given",)
        for persona_input in inputs:
            m = teacher_forced_metrics(model, tok, examples, cfg["variant"], a.batch_size, persona_input=persona_input,
                                       per_example=persona_input == "given")
            if persona_input == "given":
                scored[name] = (m.pop("per_example"), [(e["dialogue_id"], bool(e["persona"])) for e in examples])
                result[name] = {"folder": folder, "variant": cfg["variant"], **m}
            else:
                result[name][f"persona_input_{persona_input}"] = m
            with_persona = [e for e in examples if e["persona"]] if persona_input == "given" and embedder else []
            if with_persona:
                replies, _ = generate_responses(model, tok, with_persona, cfg["variant"], batch_size=a.batch_size, seed=0)
                cosines[name] = embedder.cosine(replies, [" ".join(e["persona"]) for e in with_persona])
                result[name]["cos_sim_persona_turns"] = sum(cosines[name]) / len(cosines[name])
            rows.append({"model": name, "variant": cfg["variant"], "persona input": persona_input, "ppl": m["ppl"],
                         f"ppl with persona (n={m['n_with_persona']})": m["ppl_with_persona"],
                         f"ppl placeholder (n={m['n_teacher_forced'] - m['n_with_persona']})": m["ppl_without_persona"]})
    groups = [e["dialogue_id"] for e in examples if e["persona"]]  # the persona turns cosines were scored on
    if a.reference is not None:
        result["paired_vs_reference"] = paired = compare_with_reference(scored, a.reference, a.resamples)
        if cosines:
            from hf_persona.evaluation import paired_bootstrap

            for name in paired:
                c = paired[name]["cos_sim"] = {
                    "turns": len(groups), "mean": result[name]["cos_sim_persona_turns"],
                    "mean_reference": result[a.reference]["cos_sim_persona_turns"],
                    **paired_bootstrap(cosines[name], cosines[a.reference], a.resamples, groups=groups)}
                print(f"cos-sim {name} vs {a.reference} on {len(groups)} persona turns: {c['mean']:.4f} vs "
                      f"{c['mean_reference']:.4f}, difference {c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]")
        print(format_table([{"model": name, "vs": a.reference, "part": part, "turns": c["turns"],
                             "ppl ratio": c["ppl_ratio"], "95% low": c["ppl_ratio_low"], "95% high": c["ppl_ratio_high"],
                             "P(not better)": c["p_not_less"]}
                            for name, parts in paired.items() for part, c in parts.items()
                            if part not in ("strategy_acc", "cos_sim")]))
        print(format_table([{"model": name, "vs": a.reference, "ACC": c["strategy_acc"]["acc"],
                             "reference ACC": c["strategy_acc"]["acc_reference"], "McNemar p": c["strategy_acc"]["p"]}
                            for name, c in paired.items()]))
    result["command"] = command_line("benchmarks/pal_persona_split.py", argv)
    atomic_write_json(a.out, result)
    print(format_table(rows))
    print(f"wrote {a.out}")


def compare_with_reference(scored: dict, reference: str, resamples: int) -> dict:
    """{model: {part: paired_bootstrap_nll of model vs reference}} over all turns and each persona part,
    and ``strategy_acc``: both strategy accuracies with an exact McNemar test on the same turns.

    ``scored``: {name: (per-example rows of ``teacher_forced_metrics``, [(dialogue id, has persona)])};
    the models must have been scored on the same turns (the same valid dialogues).
    """
    from hf_persona.evaluation import mcnemar_exact, paired_bootstrap_nll

    ref_rows, ref_keys = scored[reference]
    out = {}
    for name, (rows, keys) in scored.items():
        if name == reference:
            continue
        if keys != ref_keys or [r["tokens"] for r in rows] != [r["tokens"] for r in ref_rows]:
            raise SystemExit(f"{name} and {reference} were not scored on the same turns and target tokens (different "
                             "max lengths or data?); a paired comparison needs the same examples")
        parts = {"all": [True] * len(keys), "with_persona": [k[1] for k in ref_keys],
                 "placeholder": [not k[1] for k in ref_keys]}
        out[name] = {}
        for part, keep in parts.items():
            idx = [i for i, k in enumerate(keep) if k]
            if not idx:
                continue
            c = paired_bootstrap_nll([rows[i]["nll"] for i in idx], [ref_rows[i]["nll"] for i in idx],
                                     [ref_rows[i]["tokens"] for i in idx], groups=[ref_keys[i][0] for i in idx],
                                     resamples=resamples)
            out[name][part] = {"turns": len(idx), **c}
        mine, ref = [r["strategy_correct"] for r in rows], [r["strategy_correct"] for r in ref_rows]
        out[name]["strategy_acc"] = {"acc": 100.0 * sum(mine) / len(mine), "acc_reference": 100.0 * sum(ref) / len(ref),
                                     **mcnemar_exact(mine, ref)}
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
