"""Validation loss of PAL runs against the training step, and each run's gap to a reference run.

Reads the ``trainer_state.json`` that ``train_pal`` leaves in every checkpoint (the newest one under each
folder), so it runs no model and takes a second. The validation loss is the one ``train_pal`` logs every
``--eval-steps`` on its ``--loss-eval-examples`` validation examples (the best-checkpoint criterion), not the
full evaluation of ``pal_esconv.py``. Writes a JSON and, with ``--plot``, a PNG (PPL per step; gap per step).

    python benchmarks/pal_learning_curves.py pal=runs/pal_1200_cc0/pal no_persona=runs/pal_1200_np/no_persona \
        --reference no_persona --plot benchmarks/results/pal_learning_curves_1200steps.png
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def eval_curve(folder) -> list[dict]:
    """``[{"step", "eval_loss", "ppl"}]`` from the newest ``trainer_state.json`` under ``folder``."""
    from hf_persona.training.common import trainer_state

    state = trainer_state(folder)
    seen, curve = set(), []
    for entry in state.get("log_history", []):
        if "eval_loss" in entry and entry["step"] not in seen:
            seen.add(entry["step"])
            curve.append({"step": entry["step"], "eval_loss": entry["eval_loss"], "ppl": math.exp(entry["eval_loss"])})
    return curve


def plot(curves: dict, gaps: dict, reference: str | None, out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_persona.utils import atomic_write_bytes

    panels = 2 if gaps else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    for name, curve in curves.items():
        ax.plot([p["step"] for p in curve], [p["ppl"] for p in curve], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation PPL (train_pal's eval set)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if gaps:
        ax = axes[0][1]
        for name, gap in gaps.items():
            ax.plot([g["step"] for g in gap], [g["loss_gap"] for g in gap], marker="o", label=name)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(f"eval loss minus {reference}'s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_path, buffer.getvalue())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=FOLDER: a train_pal output folder that still holds its checkpoints")
    ap.add_argument("--reference", default=None, help="NAME of the run the others are compared with, step by step")
    ap.add_argument("--plot", default=None, help="PNG to draw the curves into")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pal_learning_curves.json"))
    a = ap.parse_args(argv)

    from hf_persona.evaluation import format_table
    from hf_persona.utils import atomic_write_json, command_line, parse_named_folders

    try:
        runs = [(name, folders[0]) for name, folders in parse_named_folders(a.runs)]
    except ValueError as err:
        sys.exit(str(err))
    curves = {}
    for name, folder in runs:
        curve = eval_curve(folder)
        if not curve:
            sys.exit(f"{name}: no trainer_state.json with a validation loss under {folder} "
                     "(train_pal writes one into every checkpoint; were the checkpoints deleted?)")
        curves[name] = curve
    if a.reference is not None and a.reference not in curves:
        sys.exit(f"--reference {a.reference!r} is not one of the runs {list(curves)}")
    gaps = {}
    if a.reference is not None:
        ref = {p["step"]: p["eval_loss"] for p in curves[a.reference]}
        for name, curve in curves.items():
            if name != a.reference:
                gaps[name] = [{"step": p["step"], "loss_gap": p["eval_loss"] - ref[p["step"]]}
                              for p in curve if p["step"] in ref]
    result = {"command": command_line("benchmarks/pal_learning_curves.py", argv),
              "runs": dict(runs), "reference": a.reference, "curves": curves, "gaps_to_reference": gaps}
    if a.plot:
        plot(curves, gaps, a.reference, Path(a.plot))
        result["plot"] = a.plot
    atomic_write_json(a.out, result)
    steps = sorted({p["step"] for curve in curves.values() for p in curve})
    by_step = {name: {p["step"]: p["ppl"] for p in curve} for name, curve in curves.items()}
    print(format_table([{"step": s, **{name: by_step[name].get(s) for name in curves}} for s in steps], ".2f"))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
