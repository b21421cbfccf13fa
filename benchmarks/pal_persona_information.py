"""How much could a persona tell PAL about the response that the dialogue window does not?

For each PESConv split and encoder window (``max_source_length``), the share of reference-response
content words that are (a) inside the dialogue window the model reads, (b) said earlier in the
dialogue but cut off by the window (the ceiling for any summary of the history), and (c) in the
inferred persona but not in the window (what this persona actually adds). No model is run; it
takes seconds.

    python benchmarks/pal_persona_information.py --data runs/pal_bench4/pesconv --windows 128 256 512
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ("in_window", "in_history_not_window", "in_window_with_persona", "in_persona", "persona_only")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="PESConv folder (train/ and valid/, or one annotation output)")
    ap.add_argument("--windows", type=int, nargs="+", default=[128, 256, 512],
                    help="max_source_length values (tokens of dialogue the encoder reads)")
    ap.add_argument("--tokenizer", default="minilm",
                    help="tokenizer folder or backbone name (the PAL tokens are added; default: packaged MiniLM)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pal_persona_information.json"))
    a = ap.parse_args(argv)

    from transformers import AutoTokenizer

    from hf_persona.backbones import resolve
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.pal import persona_information
    from hf_persona.models.pal import add_pal_tokens
    from hf_persona.training.pal import load_pesconv_splits
    from hf_persona.utils import atomic_write_json, command_line

    if any(w < 8 for w in a.windows):
        sys.exit(f"--windows must be at least 8 tokens each, got {a.windows}")
    tokenizer = AutoTokenizer.from_pretrained(resolve(a.tokenizer))
    add_pal_tokens(tokenizer)
    train, valid = load_pesconv_splits(a.data)
    result = {"data": str(a.data), "tokenizer": a.tokenizer,
              "shares": "of reference-response content words (stemmed, function words dropped), pooled over examples"}
    rows = []
    for split, dialogues in (("train", train), ("valid", valid)):
        if not dialogues:
            continue
        for window in a.windows:
            info = persona_information(dialogues, tokenizer, max_source_length=window)
            result.setdefault(split, {})[str(window)] = info
            rows.append({"split": split, "window": window, "examples": info["examples"],
                         "with persona": info["examples_with_persona"],
                         **{c: None if info[c] is None else round(100 * info[c], 2) for c in COLUMNS}})
    result["command"] = command_line("benchmarks/pal_persona_information.py", argv)
    atomic_write_json(a.out, result)
    print(format_table(rows))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
