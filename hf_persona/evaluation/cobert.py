"""Evaluation of response selection (CoBERT, the Bi-encoder; trained by :mod:`hf_persona.training.cobert`).

:func:`evaluate_ranking` follows the paper (C = 100: R@1, R@10, R@50, MRR) and the PERSONA-CHAT
protocol (Hits@1 of 20), with and without the persona; :func:`evaluate_cobert_file` runs it on a
saved model and a data file; :func:`score_candidate_sets` is the metric of the training-time evaluation.
"""

from __future__ import annotations

import random

from ..errors import HFPersonaError
from ..training.cobert import candidate_sets, load_selector, ranking_examples
from ..utils import atomic_write_json


def score_candidate_sets(model, examples, pool, indices, with_persona=True, batch_size=8):
    import numpy as np

    from .metrics import hits_at_k, mrr

    cache = model.encode_candidates(pool)
    personas = [e["persona"] if with_persona else [] for e in examples]
    scores = model.score_candidates([e["context"] for e in examples], personas, cache,
                                    candidate_indices=indices, batch_size=batch_size).float().cpu().numpy()
    c = scores.shape[1]
    out = {"hits@1": hits_at_k(scores, 1), "mrr": mrr(scores)}
    for k in (10, 50):
        if k < c:
            out[f"r@{k}"] = hits_at_k(scores, k)
    return out if np.isfinite(scores).all() else {**out, "nonfinite_scores": True}


def evaluate_ranking(model, examples, num_candidates: int = 100, hits_candidates: int = 20, seed: int = 0,
                     personas=(True, False), batch_size: int = 32, max_examples: int | None = None) -> dict:
    """Rank each example's gold response among distractors from other dialogues.

    Returns a flat dict: ``r@1``, ``r@10``, ``r@50``, ``mrr`` with ``num_candidates`` candidates (paper
    protocol, C = 100), ``hits@1_20`` / ``mrr_20`` with the first ``hits_candidates`` of them
    (PERSONA-CHAT protocol), and the same keys with ``_no_persona`` for ``n_P = 0``; plus ``examples``.
    With ``max_examples`` a seeded random subset of the examples is scored; distractors still come
    from all of them.
    """
    if not examples:
        raise HFPersonaError("no examples to evaluate")
    if hits_candidates > num_candidates:
        raise HFPersonaError(f"hits_candidates ({hits_candidates}) must not exceed num_candidates ({num_candidates})")
    queries = None
    if max_examples and max_examples < len(examples):
        queries = sorted(random.Random(seed).sample(range(len(examples)), max_examples))
    pool, indices = candidate_sets(examples, num_candidates, seed=seed, queries=queries)
    if queries is not None:
        examples = [examples[i] for i in queries]
    from .metrics import hits_at_k, mrr

    cache = model.encode_candidates(pool)
    out = {"examples": len(examples), "candidates": num_candidates}
    for use_persona in personas:
        ps = [e["persona"] if use_persona else [] for e in examples]
        scores = model.score_candidates([e["context"] for e in examples], ps, cache, candidate_indices=indices,
                                        batch_size=batch_size).float().cpu().numpy()
        suffix = "" if use_persona else "_no_persona"
        out[f"r@1{suffix}"] = hits_at_k(scores, 1)
        for k in (10, 50):
            if k < num_candidates:
                out[f"r@{k}{suffix}"] = hits_at_k(scores, k)
        out[f"mrr{suffix}"] = mrr(scores)
        out[f"hits@1_{hits_candidates}{suffix}"] = hits_at_k(scores[:, :hits_candidates], 1)
        out[f"mrr_{hits_candidates}{suffix}"] = mrr(scores[:, :hits_candidates])
    return out


def evaluate_cobert_file(model_path, data_path, skip_dialogues: int = 0, max_examples: int | None = None,
                         num_candidates: int = 100, hits_candidates: int = 20, seed: int = 0, json_out=None,
                         batch_size: int = 32) -> dict:
    """Load a saved model and evaluate it on the dialogues of ``data_path`` after the first
    ``skip_dialogues`` (e.g. 800 when those were used for training); ``max_examples`` scores a seeded
    random subset of their examples (distractors are drawn from all of them)."""
    from ..data import read_personachat

    dialogues = read_personachat(data_path)
    if skip_dialogues:
        if skip_dialogues >= len(dialogues):
            raise HFPersonaError(f"skip_dialogues={skip_dialogues} leaves nothing of {len(dialogues)} dialogues")
        dialogues = dialogues.select(range(skip_dialogues, len(dialogues)))
    examples = ranking_examples(dialogues)
    model = load_selector(model_path)
    # max_examples: a seeded subset is scored, distractors still come from every evaluated dialogue
    metrics = evaluate_ranking(model, examples, num_candidates=num_candidates, hits_candidates=hits_candidates,
                               seed=seed, batch_size=batch_size, max_examples=max_examples)
    if json_out:
        atomic_write_json(json_out, metrics)
    return metrics
