"""Evaluation of P2Bot's Receiver: the persona-perception probe on held-out PERSONA-CHAT dialogues.

* :func:`evaluate_receiver` runs the probe of :mod:`hf_persona.evaluation.receiver_probe` (Hits@1 of
  N candidate personas, MRR of the true persona sentences) for the Receiver and, optionally, the
  zero-shot cosine and TF-IDF baselines, on every data file; ``hf-persona eval receiver`` calls it.
* :func:`load_splits` reads the data files and splits each by dialogue into (train, dev), the same
  split for ``hf-persona train receiver`` and ``hf-persona eval receiver``.

Heavy imports happen inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _split_name(path: str) -> str:
    stem = Path(path).name.lower()
    for name in ("revised", "original", "self", "other", "none"):
        if name in stem:
            return name
    return Path(path).stem


def load_splits(data: Sequence[str], first: int | None, dev_fraction: float | None, seed: int):
    """Read each data file and split it by dialogue into (train, dev); the embedded sample when empty."""
    from hf_persona.data import read_dialogues, sample_path, split_by_dialogue

    paths = list(data) or [str(sample_path("personachat"))]
    out = []
    for path in paths:
        _, ds = read_dialogues(path)
        if first is not None:
            train, dev = split_by_dialogue(ds, first=first)
        else:
            train, dev = split_by_dialogue(ds, test_fraction=dev_fraction or 0.2, seed=seed)
        out.append((_split_name(path), train, dev))
    return out


def evaluate_receiver(model, data: Sequence[str] = (), *, first: int | None = None, dev_fraction: float | None = None,
                      candidates: int = 32, seed: int = 0, baselines: bool = True, zeroshot_backbone: str = "minilm",
                      sides=("you", "partner"), allow_shared_sentences: bool = False) -> dict:
    """Run the probe on the held-out dialogues of each data file; return a flat metrics dict.

    Keys: ``<method>.hits@1.<split>``, ``<method>.mrr.<split>`` for method in receiver / zeroshot / ir
    and split = the file's kind (``original``, ``revised`` or its stem), ``pairs_per_second`` (Receiver,
    end-to-end probe scoring of (side, persona) pairs), ``candidates``, ``seed``, ``probe_items.<split>``,
    ``allow_shared_sentences`` (see :func:`~hf_persona.evaluation.receiver_probe.build_probe_items`).
    """
    from hf_persona.backbones import resolve
    from hf_persona.evaluation.receiver_probe import (
        CosineScorer,
        ReceiverScorer,
        TfidfScorer,
        build_probe_items,
        run_probe,
    )
    from hf_persona.rewards.persona_perception import load_receiver
    from hf_persona.training.receiver import dialogue_sides

    receiver = load_receiver(model)
    zeroshot = CosineScorer(resolve(zeroshot_backbone)) if baselines else None
    metrics: dict = {"candidates": candidates, "seed": seed, "allow_shared_sentences": allow_shared_sentences}
    pairs, seconds = 0, 0.0
    for split, _, dev in load_splits(data, first, dev_fraction, seed):
        items = build_probe_items(dialogue_sides(dev, sides), num_candidates=candidates, seed=seed,
                                  allow_shared_sentences=allow_shared_sentences)
        metrics[f"probe_items.{split}"] = len(items)
        result = run_probe(items, ReceiverScorer(receiver))
        metrics[f"receiver.hits@1.{split}"] = result["hits@1"]
        metrics[f"receiver.mrr.{split}"] = result["mrr"]
        pairs += result["pairs"]
        seconds += result["seconds"]
        if baselines:
            for name, scorer in (("zeroshot", zeroshot), ("ir", TfidfScorer())):
                r = run_probe(items, scorer)
                metrics[f"{name}.hits@1.{split}"] = r["hits@1"]
                metrics[f"{name}.mrr.{split}"] = r["mrr"]
    metrics["pairs_per_second"] = pairs / seconds if seconds > 0 else float("inf")
    return metrics
