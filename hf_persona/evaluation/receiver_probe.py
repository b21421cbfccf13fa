"""Persona-perception probe (P2Bot, section 5.4) with its baselines.

For every dialogue side (the utterances of one speaker) the probe builds ``num_candidates`` personas:
the true one and ``num_candidates - 1`` distractors sampled, with a fixed seed, from the other distinct
personas of the same split. Two numbers come out:

* ``hits@1``: the fraction of sides whose true persona scores strictly highest among the candidates
  (ties count against the model, see :mod:`hf_persona.evaluation.metrics`);
* ``mrr``: every sentence of every candidate persona (deduplicated) is scored against the side's
  utterances, and each true persona sentence contributes its reciprocal rank among all those
  candidate sentences (averaged over all true sentences). With 5 true sentences the best possible
  value is ``(1 + 1/2 + ... + 1/5) / 5 ≈ 0.457``.

Scorers:

* :class:`ReceiverScorer`: a trained :class:`~hf_persona.models.receiver.ReceiverModel`; persona score
  ``c`` (masked Agg, mean over utterances); sentence score = the Receiver score against that sentence
  alone (mean over utterances of ``U[n, k]``).
* :class:`CosineScorer` (zero-shot): a plain encoder, masked mean pooling, cosine similarity; persona
  score = mean over utterances of the max over persona sentences; sentence score = mean over utterances.
* :class:`TfidfScorer` (IR): TF-IDF vectors with IDF fitted on the probed split's own text (utterances
  and persona sentences, no labels); persona score = cosine(all utterances, all persona sentences);
  sentence score = cosine(all utterances, that sentence).

Every scorer encodes each distinct string once for the whole probe.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from typing import Sequence

import numpy as np

from ..errors import HFPersonaError
from .metrics import hits_at_k, mrr, tokenize


def shares_sentence(persona_a, persona_b) -> bool:
    """Whether two personas (iterables of sentences) have a sentence in common.

    Such personas are versions of one persona in PERSONA-CHAT (the dataset keeps 4- and 5-sentence
    versions, and revised personas reuse rephrasings), so neither is a distractor for the other: a
    side whose utterances express only the shared sentences fits both equally well.
    """
    a = persona_a if isinstance(persona_a, (set, frozenset)) else set(persona_a)
    return not a.isdisjoint(persona_b)


def build_probe_items(examples: Sequence[dict], num_candidates: int = 32, seed: int = 0,
                      allow_shared_sentences: bool = False) -> list[dict]:
    """Attach ``candidates`` (true persona first, then distractors) to each (utterances, persona) example.

    Distractors come from the distinct personas of ``examples`` (of the same ``group`` when examples
    carry one), never equal to the true persona as a set of sentences and, unless
    ``allow_shared_sentences``, sharing no sentence with it: PERSONA-CHAT keeps several versions of one
    persona (a 4- and a 5-sentence one with four sentences in common), and an item whose "distractor" is
    another version of the true persona has no right answer. Item ``i`` draws with its own ``Random``
    seeded from ``(seed, i)``, so the probe is identical from run to run.
    """
    if num_candidates < 2:
        raise HFPersonaError(f"num_candidates must be >= 2, got {num_candidates}")
    # A persona is a set of sentences: PERSONA-CHAT repeats personas across dialogues in shuffled order.
    pools: dict = {}
    for e in examples:
        pools.setdefault(e.get("group", 0), {}).setdefault(frozenset(e["persona"]), tuple(e["persona"]))
    items = []
    for i, e in enumerate(examples):
        true = tuple(e["persona"])
        key_true = frozenset(true)
        pool = [p for key, p in pools[e.get("group", 0)].items()
                if key != key_true and (allow_shared_sentences or not shares_sentence(key, key_true))]
        if len(pool) < num_candidates - 1:
            what = "other distinct personas" if allow_shared_sentences else "personas that share no sentence with it"
            raise HFPersonaError(
                f"the probe needs {num_candidates - 1} distractor personas but a side of dialogue "
                f"{e.get('dialogue_id')} has only {len(pool)} {what} in the split; lower num_candidates"
            )
        rng = random.Random(seed * 1_000_003 + i)
        items.append({**e, "candidates": [true] + rng.sample(pool, num_candidates - 1)})
    return items


def _unique(strings) -> dict:
    return {s: i for i, s in enumerate(dict.fromkeys(strings))}


class _VectorScorer:
    """Shared logic for scorers that embed utterances and persona sentences separately."""

    name = "vector"

    def prepare(self, items) -> None:
        self.u_index = _unique(u for it in items for u in it["utterances"])
        self.p_index = _unique(s for it in items for c in it["candidates"] for s in c)
        self.u_vec = self._embed(list(self.u_index), "utterance")
        self.p_vec = self._embed(list(self.p_index), "persona")

    def _grid(self, item, sentences) -> np.ndarray:
        H = self.u_vec[[self.u_index[u] for u in item["utterances"]]]
        W = self.p_vec[[self.p_index[s] for s in sentences]]
        return self._pair(H, W)

    def persona_scores(self, item) -> np.ndarray:
        sentences = [s for c in item["candidates"] for s in c]
        grid = self._grid(item, sentences)  # [N, total sentences]
        out, start = [], 0
        for c in item["candidates"]:
            out.append(self._reduce(grid[:, start : start + len(c)]))
            start += len(c)
        return np.asarray(out, dtype=np.float64)

    def sentence_scores(self, item, sentences) -> np.ndarray:
        return self._grid(item, sentences).mean(axis=0)


class ReceiverScorer(_VectorScorer):
    """Scores with a trained Receiver (its persona encoder, segment ids and τ)."""

    name = "receiver"

    def __init__(self, model, tokenizer=None, batch_size: int = 128):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.d = model.config.encoder.hidden_size

    def _embed(self, texts, kind):
        vec = self.model.encode_texts(texts, kind, tokenizer=self.tokenizer, batch_size=self.batch_size)
        return vec.float().cpu().numpy()

    def _pair(self, H, W):
        return H @ W.T / math.sqrt(self.d)

    def _reduce(self, U):
        # Agg over the persona sentences (softmax at τ), then the mean over utterances.
        z = U / self.model.tau
        z = z - z.max(axis=1, keepdims=True)
        w = np.exp(z)
        w /= w.sum(axis=1, keepdims=True)
        return float((w * U).sum(axis=1).mean())


class CosineScorer(_VectorScorer):
    """Zero-shot baseline: mean-pooled encoder, cosine, mean over utterances of max over persona sentences."""

    name = "zeroshot"

    def __init__(self, encoder_name_or_path: str, batch_size: int = 128):
        from ..models.receiver import ReceiverModel

        # A Receiver shell around the plain encoder: same masked mean pooling, no segment ids, untrained.
        self.model = ReceiverModel.from_encoder_pretrained(encoder_name_or_path, share_encoders=True, segment_ids=False)
        self.model.eval()
        self.batch_size = batch_size

    def _embed(self, texts, kind):
        vec = self.model.encode_texts(texts, "utterance", batch_size=self.batch_size).float().cpu().numpy()
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        return vec / np.maximum(norms, 1e-12)

    def _pair(self, H, W):
        return H @ W.T

    def _reduce(self, C):
        return float(C.max(axis=1).mean())


class TfidfScorer:
    """IR baseline: TF-IDF cosine between the side's utterances and a persona (or one sentence)."""

    name = "ir"

    def prepare(self, items) -> None:
        docs = [tokenize(u) for it in items for u in it["utterances"]]
        docs += [tokenize(s) for s in dict.fromkeys(s for it in items for c in it["candidates"] for s in c)]
        df = Counter(t for d in docs for t in set(d))
        n = len(docs)
        self.idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}

    def _vec(self, tokens) -> dict:
        tf = Counter(tokens)
        v = {t: c * self.idf.get(t, 0.0) for t, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {t: x / norm for t, x in v.items()} if norm > 0 else {}

    @staticmethod
    def _cos(a: dict, b: dict) -> float:
        if len(a) > len(b):
            a, b = b, a
        return sum(x * b.get(t, 0.0) for t, x in a.items())

    def _query(self, item):
        return self._vec([t for u in item["utterances"] for t in tokenize(u)])

    def persona_scores(self, item) -> np.ndarray:
        q = self._query(item)
        return np.asarray(
            [self._cos(q, self._vec([t for s in c for t in tokenize(s)])) for c in item["candidates"]], dtype=np.float64
        )

    def sentence_scores(self, item, sentences) -> np.ndarray:
        q = self._query(item)
        return np.asarray([self._cos(q, self._vec(tokenize(s))) for s in sentences], dtype=np.float64)


def run_probe(items: Sequence[dict], scorer) -> dict:
    """Hits@1 over the candidates, MRR of the true persona sentences, and throughput of ``scorer``.

    Also counts the misses (a distractor scores at least as high as the true persona; ties count
    against), the misses where such a distractor shares a sentence with the true persona
    (``misses_to_a_version``: 0 by construction unless the items allow shared sentences) and the
    exact ties (``ties``: the best distractor scores exactly the true persona's score), and the items that
    hold such a version at all (``items_with_a_version``, the same for every scorer).
    """
    if not items:
        raise HFPersonaError("the probe has no items")
    start = time.perf_counter()
    scorer.prepare(items)
    persona = np.stack([scorer.persona_scores(it) for it in items])
    elapsed = time.perf_counter() - start
    sentence_rr = []
    for it in items:
        sentences = list(dict.fromkeys(s for c in it["candidates"] for s in c))
        true = set(it["candidates"][0])
        scores = scorer.sentence_scores(it, sentences)
        for j, s in enumerate(sentences):
            if s in true:
                sentence_rr.append(mrr(scores[None, :], positive=j))
    n_pairs = persona.shape[0] * persona.shape[1]
    beaten = persona[:, 1:] >= persona[:, :1]  # [items, distractors]
    versions = np.array([[shares_sentence(c, it["candidates"][0]) for c in it["candidates"][1:]] for it in items],
                        dtype=bool).reshape(beaten.shape)
    return {
        "hits@1": hits_at_k(persona, 1),
        "misses": int(beaten.any(axis=1).sum()),
        "misses_to_a_version": int((beaten & versions).any(axis=1).sum()),
        "items_with_a_version": int(versions.any(axis=1).sum()),
        "ties": int((persona[:, 1:].max(axis=1) == persona[:, 0]).sum()) if persona.shape[1] > 1 else 0,
        "mrr": float(np.mean(sentence_rr)),
        "pairs": n_pairs,
        "seconds": elapsed,
        "pairs_per_second": n_pairs / elapsed if elapsed > 0 else float("inf"),
    }


__all__ = ["CosineScorer", "ReceiverScorer", "TfidfScorer", "build_probe_items", "run_probe", "shares_sentence"]
