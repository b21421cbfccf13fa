"""Evaluation of a persona extractor (:mod:`hf_persona.training.persona_extractor`) on held-back dialogues:
BLEU, ROUGE-L, Distinct-n and persona-sentence recall of the generated personas against the gold ones.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import HFPersonaError
from ..training.persona_extractor import PersonaExtractor, default_data_files, load_extractor_examples, persona_key
from ..utils import atomic_write_json


def evaluate_extractor_on_examples(extractor: PersonaExtractor, examples: list[dict], batch_size: int = 16,
                                   samples: int = 5) -> dict:
    """BLEU-1/2/4, ROUGE-L, Distinct-1/2 of generated persona text against the gold persona.

    Hypothesis = the kept persona sentences (after splitting and the length filter) joined by a
    space; reference = the gold persona sentences joined by a space. Also reports the mean number
    of sentences kept, persona-sentence recall (the fraction of gold sentences whose best unigram
    F1 against a generated sentence is >= 50), ``distinct_persona_sets`` (how many different
    persona sets it wrote for the ``n`` examples, sentences compared by :func:`persona_key`, order
    ignored: an extractor that writes the same persona for everyone scores 1) and ``examples`` (the
    first ``samples``).
    """
    from .metrics import bleu, distinct_n, rouge_l, unigram_f1

    if not examples:
        raise HFPersonaError("no examples to evaluate the persona extractor on")
    sentences = extractor.extract([e["utterances"] for e in examples], batch_size=batch_size)
    hyps = [" ".join(s) for s in sentences]
    refs = [" ".join(e["persona"]) for e in examples]
    matched = total = 0
    for sents, e in zip(sentences, examples):
        for gold in e["persona"]:
            total += 1
            if sents and max(unigram_f1(s, gold) for s in sents) >= 50:
                matched += 1
    nonempty = [h for h in hyps if h.strip()] or [""]
    return {
        "n": len(examples),
        "bleu1": bleu(hyps, refs, 1),
        "bleu2": bleu(hyps, refs, 2),
        "bleu4": bleu(hyps, refs, 4),
        "rougeL": rouge_l(hyps, refs),
        "dist1": distinct_n(nonempty, 1),
        "dist2": distinct_n(nonempty, 2),
        "sentences_per_example": sum(len(s) for s in sentences) / len(sentences),
        "persona_recall_f1_50": 100.0 * matched / max(total, 1),
        "distinct_persona_sets": len({frozenset(persona_key(x) for x in s) for s in sentences}),
        "examples": [
            {"persona": e["persona"], "generated": s} for e, s in list(zip(examples, sentences))[:samples]
        ],
    }


def evaluate_persona_extractor(extractor_dir, data_files: Sequence | None = None, *, dev_from: int = 800,
                               max_examples: int | None = 200, num_beams: int = 4, batch_size: int = 16,
                               samples: int = 5, json_out=None) -> dict:
    """Evaluate a saved extractor on the held-back dialogues of ``data_files`` (see :func:`load_extractor_examples`)."""
    if data_files is None:
        data_files = default_data_files()
    _, dev = load_extractor_examples(data_files, dev_from=dev_from)
    if max_examples:
        dev = dev[:max_examples]
    extractor = PersonaExtractor.from_pretrained(extractor_dir, num_beams=num_beams)
    metrics = evaluate_extractor_on_examples(extractor, dev, batch_size=batch_size, samples=samples)
    metrics["num_beams"] = num_beams
    metrics["dev_from"] = dev_from
    if json_out:
        atomic_write_json(json_out, metrics)
    return metrics
