"""Where the supporter's reply text starts: straight after the prompt, or after PAL's strategy token.

The shipped pipeline (``SupportPipeline.from_shipped``: the SmolLM2 PAL adapter and persona extractor)
holds a support conversation on the seeker turns of ESConv dialogues (``--esconv``, dialogues
``--first`` to ``--first + --dialogues``, up to ``--turns`` seeker turns each; none of them was
annotated or trained on), twice with the same seeds:

* ``prompt``: the reply text decoded straight after the generation prompt (the pipeline before this
  benchmark), the strategy token never written;
* ``after_strategy``: :meth:`SupportPipeline.reply_opening`: after the chosen strategy token once an
  earlier supporter turn opened with one;
* ``shipped``: ``after_strategy`` and a reply that repeats an earlier supporter reply word for word
  sampled again with other seeds (``fresh_tries=2``, the pipeline as shipped; the two runs above have
  ``fresh_tries=0``).

For each: the share of replies that open with a word (the first whitespace-separated word, lower-cased,
stripped of punctuation and cut at an apostrophe, is a word of ESConv: of the ``--esconv`` file and of
``train.json`` beside it; "arfI", "zonIt" are not), by turn; the share of replies that repeat an earlier
reply of their conversation word for word; Distinct-2 of the replies and their mean length in words.
Both runs cut a reply that reached the token limit at its last sentence end (``whole_sentences``).

    python benchmarks/pipeline_replies.py --esconv ../shared/data/esconv/valid.json

Writes ``benchmarks/results/pipeline_replies.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _words(text: str) -> list[str]:
    """Lower-cased words, a contraction cut at its apostrophe ("that's" -> "that")."""
    return [w for w in (re.sub(r"[^\w']", "", t.lower()).split("'")[0] for t in text.split()) if w]


def vocabulary(esconv_files) -> set[str]:
    """Every word of the ESConv ``esconv_files`` (all their dialogues, both speakers)."""
    from hf_persona.data import read_esconv

    words: set[str] = set()
    for path in esconv_files:
        for row in read_esconv(path):
            for u in row["utterances"]:
                words.update(_words(u))
    return words


def opens_with_a_word(reply: str, vocab: set[str]) -> bool:
    words = _words(reply.split()[0]) if reply.split() else []
    return bool(words) and words[0] in vocab


def distinct2(replies) -> float:
    grams = [tuple(ws[i:i + 2]) for ws in map(_words, replies) for i in range(len(ws) - 1)]
    return 100 * len(set(grams)) / max(1, len(grams))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--esconv", required=True, help="ESConv JSON (e.g. valid.json of the real data).")
    p.add_argument("--first", type=int, default=100, help="First dialogue used.")
    p.add_argument("--dialogues", type=int, default=6)
    p.add_argument("--turns", type=int, default=4, help="Seeker turns per dialogue at the most.")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline_replies.json"))
    args = p.parse_args(argv)

    from hf_persona.data import read_esconv
    from hf_persona.pipeline import SupportPipeline

    class PromptOpening(SupportPipeline):
        def reply_opening(self, strategy):
            return None

    rows = read_esconv(args.esconv)
    dialogues = []
    for row in rows.select(range(args.first, min(len(rows), args.first + args.dialogues))):
        seeker = [u for u, s in zip(row["utterances"], row["speakers"]) if s == "usr"][: args.turns]
        dialogues.append({"dialogue_id": row["dialogue_id"], "seeker": seeker})
    vocab = vocabulary({args.esconv, *[f for f in [Path(args.esconv).with_name("train.json")] if f.is_file()]})

    started = time.time()
    pipe = SupportPipeline.from_shipped(cobert=None, receiver=None)
    load_seconds = time.time() - started
    results = {}
    for name, cls, tries in (("prompt", PromptOpening, 0), ("after_strategy", SupportPipeline, 0),
                             ("shipped", SupportPipeline, 2)):
        pipe.__class__, pipe.fresh_tries = cls, tries  # the same loaded models
        replies, t0 = [], time.time()
        for index, d in enumerate(dialogues):
            pipe.reset()
            said = set()
            for turn, text in enumerate(d["seeker"], start=1):
                out = pipe.respond(text, seed=index)
                key = " ".join(out.reply.lower().split())
                replies.append({"dialogue_id": d["dialogue_id"], "turn": turn, "strategy": out.strategy,
                                "reply": out.reply, "opens_with_a_word": opens_with_a_word(out.reply, vocab),
                                "repeats_an_earlier_reply": key in said, "resampled": pipe.last_resamples})
                said.add(key)
                print(name, d["dialogue_id"], turn, "|", out.reply, flush=True)
        by_turn = {}
        for r in replies:
            by_turn.setdefault("first turn" if r["turn"] == 1 else "later turns", []).append(r["opens_with_a_word"])
        results[name] = {
            "replies": len(replies),
            "opens_with_a_word": round(sum(r["opens_with_a_word"] for r in replies) / len(replies), 4),
            "opens_with_a_word_by_turn": {k: round(sum(v) / len(v), 4) for k, v in by_turn.items()},
            "repeats_an_earlier_reply": round(sum(r["repeats_an_earlier_reply"] for r in replies) / len(replies), 4),
            "resampled_replies": sum(r["resampled"] > 0 for r in replies),
            "distinct2": round(distinct2(r["reply"] for r in replies), 2),
            "mean_words": round(sum(len(r["reply"].split()) for r in replies) / len(replies), 1),
            "seconds": round(time.time() - t0, 1),
            "samples": replies,
        }
    report = {
        "command": "python benchmarks/pipeline_replies.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": {"esconv": Path(args.esconv).name, "dialogues": [d["dialogue_id"] for d in dialogues],
                 "seeker_turns": sum(len(d["seeker"]) for d in dialogues)},
        "load_seconds": round(load_seconds, 1),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    for name, r in results.items():
        print(f"{name:15s} opens with a word {r['opens_with_a_word']:.3f} {r['opens_with_a_word_by_turn']} "
              f"repeats {r['repeats_an_earlier_reply']:.3f} distinct-2 {r['distinct2']} words {r['mean_words']}")


if __name__ == "__main__":
    main()
