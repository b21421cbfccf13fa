"""The persona extractor over a causal LM (SmolLM2-135M-Instruct) against the MiniLM BERT2BERT one.

Evaluates a trained extractor folder on the held-back PERSONA-CHAT speakers (dialogues 800-999,
the first ``--examples`` of them: two speakers per dialogue, so 60 examples are 60 different
speakers) with greedy decoding: BLEU-1/2/4, ROUGE-L, Distinct-1/2, persona recall F1@0.5 and how
many distinct persona sets it writes for those speakers. The MiniLM figures (same 60 examples,
beam 4) come from ``benchmarks/results/pal_esconv.json`` (``minilm``: 894 steps in 40 minutes) and
``benchmarks/results/pal_persona_extractor.json`` (``minilm_59_steps``: the 10-minute run); those
models were not kept, so their distinct-set counts cannot be recounted.

The extractor is the one ``benchmarks/pal_esconv.py --backbone smollm2`` trains (its stage 1,
``--work DIR`` -> ``DIR/extractor`` and ``DIR/extractor_train.json``):

    python benchmarks/persona_extractor_causal.py --work runs/palc

Writes ``benchmarks/results/persona_extractor_causal.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("bleu1", "bleu2", "bleu4", "rougeL", "dist1", "dist2", "persona_recall_f1_50", "sentences_per_example")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/palc", help="pal_esconv.py work folder holding extractor/ and extractor_train.json")
    p.add_argument("--examples", type=int, default=60, help="held-back examples (speakers) to evaluate on")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "persona_extractor_causal.json"))
    args = p.parse_args(argv)

    import torch

    from hf_persona.errors import HFPersonaError
    from hf_persona.evaluation.persona_extractor import evaluate_persona_extractor
    from hf_persona.training.persona_extractor import default_data_files
    from hf_persona.utils import atomic_write_json, command_line, machine_description

    work = Path(args.work)
    if not (work / "extractor" / "persona_extractor.json").is_file():
        raise HFPersonaError(f"{work / 'extractor'}: no trained extractor; run benchmarks/pal_esconv.py --backbone "
                             f"smollm2 --work {work} --stop-after extractor first")
    machine = machine_description()
    metrics = evaluate_persona_extractor(work / "extractor", default_data_files(), max_examples=args.examples,
                                         num_beams=1, samples=10)
    trained = json.loads((work / "extractor_train.json").read_text())
    results = ROOT / "benchmarks" / "results"
    short = json.loads((results / "pal_persona_extractor.json").read_text())["used_for_pesconv"]
    long_file = json.loads((results / "pal_esconv.json").read_text())
    long = long_file["setup"]["persona_extractor"]
    result = {
        f"distinct_persona_sets_of_{args.examples}": metrics["distinct_persona_sets"],
        **{k: metrics[k] for k in KEYS},
        "minilm": {**{k: long["heldout_metrics"].get(k) for k in KEYS},
                   f"distinct_persona_sets_of_{args.examples}": None,
                   "steps": long.get("steps"), "train_seconds": long.get("train_seconds_last_run"),
                   "source": "pal_esconv.json setup.persona_extractor (" + long_file["command"] + "); beam 4"},
        "minilm_59_steps": {**{k: short["heldout_eval"].get(k) for k in KEYS},
                            f"distinct_persona_sets_of_{args.examples}": None,
                            "steps": short.get("global_step"), "train_seconds": short.get("train_seconds"),
                            "source": "pal_persona_extractor.json used_for_pesconv; beam 4",
                            "samples": short.get("sample_outputs", [])},
        "samples": metrics["examples"],
        "setup": {
            "device": machine, "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
            "backbone": trained.get("backbone"),
            "evaluation": f"first {args.examples} held-back examples (PERSONA-CHAT dialogues 800+, two speakers "
                          "each), greedy decoding, max 64 new tokens",
            "training": {k: trained.get(k) for k in ("global_step", "batch_size", "learning_rate", "train_examples",
                                                     "dev_loss", "train_loss", "train_seconds", "budget_minutes",
                                                     "stopped_by_budget")},
        },
        "command": command_line("benchmarks/persona_extractor_causal.py", argv),
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    for name, row in (("smollm2", result), ("minilm", result["minilm"]), ("minilm_59", result["minilm_59_steps"])):
        print(name, {k: (round(row[k], 2) if isinstance(row[k], float) else row[k])
                     for k in ("bleu2", "rougeL", "persona_recall_f1_50", "dist2",
                               f"distinct_persona_sets_of_{args.examples}")})


if __name__ == "__main__":
    main()
