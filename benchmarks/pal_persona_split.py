"""Where does a PAL model gain or lose perplexity: turns with a known persona vs turns with the placeholder.

Teacher-forced PPL (with the strategy token, as ``pal_esconv.py``) of each trained model on the PESConv
validation split, over all examples and split by whether the seeker persona was known for the turn.
Models trained by ``train_pal`` (any variant); no sampling, so it takes a minute or two per model.

``--ablate`` also scores each ``pal``-variant model with every persona replaced by the placeholder and
with no persona pass at all (the decoder over the plain dialogue states): how much of the model's
perplexity depends on what the persona says, and how much on the fusion pathway itself.

    python benchmarks/pal_persona_split.py pal=runs/pal_bench4/pal no_persona=runs/pal_bench4/no_persona \
        --data runs/pal_bench4/pesconv --ablate
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=FOLDER of a model saved by train_pal")
    ap.add_argument("--data", required=True, help="PESConv folder (train/ and valid/) the models were trained on")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--ablate", action="store_true",
                    help="pal models: also score with the placeholder persona and with no persona pass")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pal_persona_split.json"))
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.evaluation import format_table
    from hf_persona.training.pal import load_pal_for_eval, load_pesconv_splits, pesconv_examples, teacher_forced_metrics
    from hf_persona.utils import atomic_write_json, command_line, machine_description, parse_named_folders

    try:
        models = [(name, folders[0]) for name, folders in parse_named_folders(a.models)]
    except ValueError as err:
        sys.exit(str(err))
    _, valid = load_pesconv_splits(a.data)
    if not valid:
        sys.exit(f"{a.data} has no valid/ split")
    result = {"data": str(a.data), "machine": machine_description(),
              "ppl": "teacher forced, includes the strategy token; split by whether the turn has a persona",
              "persona_input": "given: the annotated persona; placeholder: every persona replaced by the "
                               "placeholder; none: no persona pass (decoder over the plain dialogue states)"}
    rows = []
    for name, folder in models:
        model, tok, cfg = load_pal_for_eval(folder)
        lengths = {k: cfg[k] for k in ("max_source_length", "max_persona_length", "max_target_length")}
        examples, _ = pesconv_examples(valid, tok, cfg["variant"], with_text=True, **lengths)
        inputs = ("given", "placeholder", "none") if a.ablate and cfg["variant"] == "pal" else ("given",)
        for persona_input in inputs:
            m = teacher_forced_metrics(model, tok, examples, cfg["variant"], a.batch_size, persona_input=persona_input)
            if persona_input == "given":
                result[name] = {"folder": folder, "variant": cfg["variant"], **m}
            else:
                result[name][f"persona_input_{persona_input}"] = m
            rows.append({"model": name, "variant": cfg["variant"], "persona input": persona_input, "ppl": m["ppl"],
                         f"ppl with persona (n={m['n_with_persona']})": m["ppl_with_persona"],
                         f"ppl placeholder (n={m['n_teacher_forced'] - m['n_with_persona']})": m["ppl_without_persona"]})
    result["command"] = command_line("benchmarks/pal_persona_split.py", argv)
    atomic_write_json(a.out, result)
    print(format_table(rows))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
