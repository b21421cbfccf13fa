"""Why self-play lowers F1: reply length and F1 with and without the NUP re-ranking.

For each Transmitter folder, generates beam replies (beam 2, max 32 tokens) for the same
development turns and reports the mean reply length in words, F1 with the paper's eq. 3 re-ranking
(alpha 0.1) and F1 with alpha = 1 (log-probability only, no NUP head), next to the gold length.

    python benchmarks/p2bot_reply_length.py sft=/tmp/p2bot_kl/sft selfplay=/tmp/p2bot_kl/selfplay
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=FOLDER of a Transmitter")
    ap.add_argument("--data", default=None, help="PERSONA-CHAT both-personas file (default: shared data)")
    ap.add_argument("--examples", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "p2bot_reply_length.json"))
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from hf_persona.data import read_personachat, shared_data_file
    from hf_persona.evaluation import format_table, unigram_f1
    from hf_persona.evaluation.transmitter import transmitter_eval_examples
    from hf_persona.training.transmitter import load_transmitter
    from hf_persona.utils import atomic_write_json, command_line, machine_description, parse_named_folders

    try:
        models = [(name, folders[0]) for name, folders in parse_named_folders(a.models)]
    except ValueError as err:
        sys.exit(str(err))
    data = shared_data_file(a.data)
    dev = read_personachat(data)
    dev = dev.select(range(800, len(dev)))
    examples = transmitter_eval_examples(dev, n_candidates=20, seed=a.seed, max_examples=a.examples)
    words = lambda texts: sum(len(t.split()) for t in texts) / len(texts)  # noqa: E731
    result = {"data": os.path.basename(data), "examples": len(examples), "machine": machine_description(),
              "gold.words": words([e["response"] for e in examples]), "decoding": "beam 2, max 32 tokens"}
    rows = []
    for name, folder in models:
        model, tok = load_transmitter(folder)
        model.eval()
        row = {"model": name}
        for label, alpha in (("eq3", None), ("alpha1", 1.0)):
            replies = []
            for start in range(0, len(examples), 8):
                chunk = examples[start:start + 8]
                replies += model.respond_batch(tok, [e["persona"] for e in chunk], [e["history"] for e in chunk],
                                               num_beams=2, alpha=alpha)
            row[f"f1.{label}"] = sum(unigram_f1(r, e["response"]) for r, e in zip(replies, examples)) / len(examples)
            row[f"words.{label}"] = words(replies)
        rows.append(row)
        result.update({f"{name}.{k}": v for k, v in row.items() if k != "model"})
    result["command"] = command_line("benchmarks/p2bot_reply_length.py", argv)
    atomic_write_json(a.out, result)
    print(format_table(rows))
    print(f"gold reply: {result['gold.words']:.1f} words; wrote {a.out}")


if __name__ == "__main__":
    main()
