"""Evaluation metrics, each matching a hand-computed example in tests/evaluation/test_metrics.py.

Conventions: ranking metrics (Hits@k, Recall@k, MRR) are fractions in [0, 1]; text metrics
(BLEU, ROUGE-L, Distinct, EAD, F1) are percentages in [0, 100], as the papers report them.

Ranks are pessimistic under ties: the positive's rank is 1 + the number of *other* candidates
scoring at least as high, so a model that gives every candidate the same score gets no credit.
"""

from __future__ import annotations

import collections
import math
import re
import string
from typing import Iterable, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (keeping in-word apostrophes) and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def _ranks(scores, positive=0) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be a 2-D array [queries, candidates], got shape {s.shape}")
    pos = np.broadcast_to(np.asarray(positive), (s.shape[0],)).astype(int)
    if (pos < 0).any() or (pos >= s.shape[1]).any():
        raise ValueError(f"positive indices must lie in [0, {s.shape[1] - 1}]")
    rows = np.arange(s.shape[0])
    pos_score = s[rows, pos][:, None]
    at_least = (s >= pos_score).sum(axis=1) - 1  # other candidates scoring >= the positive
    return 1 + at_least


def hits_at_k(scores, k: int, positive=0) -> float:
    """Fraction of queries whose positive candidate ranks in the top ``k`` (Hits@k = R@k over C)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float((_ranks(scores, positive) <= k).mean())


recall_at_k = hits_at_k


def mrr(scores, positive=0) -> float:
    """Mean reciprocal rank of the positive candidate."""
    return float((1.0 / _ranks(scores, positive)).mean())


def reciprocal_ranks(scores, positive=0) -> np.ndarray:
    """Per query: 1 / rank of the positive candidate (``mrr`` is their mean)."""
    return 1.0 / _ranks(scores, positive)


def _ratio_bootstrap(values, weights, resamples: int, seed: int) -> np.ndarray:
    """``sum(values) / sum(weights)`` over ``resamples`` bootstrap draws of the items (1000 at a time:
    bounded memory). With unit weights this is the resampled mean."""
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, 1000):
        idx = rng.integers(0, values.size, size=(min(1000, resamples - start), values.size))
        out[start:start + len(idx)] = values[idx].sum(axis=1) / weights[idx].sum(axis=1)
    return out


def _check_bootstrap(resamples: int, confidence: float) -> float:
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("resamples must be >= 1 and confidence in (0, 1)")
    return (1 - confidence) / 2


def paired_bootstrap(a, b, resamples: int = 10000, seed: int = 0, confidence: float = 0.95, groups=None) -> dict:
    """Difference of means of two paired per-query measurements (``a`` minus ``b``) with a
    percentile bootstrap interval over queries (the same resampled queries for both).

    ``groups`` (an id per query, e.g. its dialogue) resamples whole groups instead of single queries,
    for queries that are not independent; each resample's difference is then its queries' mean.
    Returns ``diff`` (the observed difference), ``low`` / ``high`` (the interval) and
    ``p_not_greater``: the fraction of resamples with ``diff <= 0``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two 1-D arrays of the same non-zero length, got {a.shape} and {b.shape}")
    tail = _check_bootstrap(resamples, confidence)
    d_g, n_g = _group_sums(a - b, np.ones_like(a), groups)
    means = _ratio_bootstrap(d_g, n_g, resamples, seed)
    return {"diff": float(d_g.sum() / n_g.sum()), "low": float(np.quantile(means, tail)),
            "high": float(np.quantile(means, 1 - tail)), "p_not_greater": float((means <= 0).mean())}


def _group_sums(values, weights, groups):
    """Per-group sums of ``values`` and ``weights`` (each item its own group when ``groups`` is None)."""
    if groups is None:
        return values, weights
    if len(groups) != values.size:
        raise ValueError(f"groups has {len(groups)} entries for {values.size} examples")
    _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    return np.bincount(inverse, weights=values), np.bincount(inverse, weights=weights)


def paired_bootstrap_nll(nll_a, nll_b, tokens, groups=None, resamples: int = 10000, seed: int = 0,
                         confidence: float = 0.95) -> dict:
    """Per-token NLL difference of two models scored on the same examples, with a cluster bootstrap.

    ``nll_a`` / ``nll_b``: each example's summed negative log-likelihood under model a and b;
    ``tokens``: its number of predicted tokens; ``groups``: an id per example (e.g. the dialogue),
    resampled as whole clusters, because turns of one dialogue are not independent (default: each
    example its own group). The statistic is the ratio estimator
    ``diff = (sum nll_a - sum nll_b) / sum tokens`` (nats per token), so ``ppl_ratio = exp(diff)``
    is exactly ``ppl_a / ppl_b``. Returns ``diff``, ``low`` / ``high`` (percentile interval of
    ``diff``), ``ppl_ratio`` with ``ppl_ratio_low`` / ``ppl_ratio_high``, ``groups`` (how many) and
    ``p_not_less``: the fraction of resamples in which model a is not better (``diff >= 0``).
    """
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (nll_a, nll_b, tokens))
    if not (a.shape == b.shape == t.shape) or a.ndim != 1 or a.size == 0:
        raise ValueError("paired_bootstrap_nll needs three 1-D arrays of the same non-zero length, got "
                         f"{a.shape}, {b.shape} and {t.shape}")
    if (t <= 0).any():
        raise ValueError("every example needs at least one predicted token")
    tail = _check_bootstrap(resamples, confidence)
    d_g, t_g = _group_sums(a - b, t, groups)
    diffs = _ratio_bootstrap(d_g, t_g, resamples, seed)
    diff, low, high = float(d_g.sum() / t_g.sum()), float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))
    return {"diff": diff, "low": low, "high": high, "ppl_ratio": math.exp(diff), "ppl_ratio_low": math.exp(low),
            "ppl_ratio_high": math.exp(high), "groups": int(d_g.size), "p_not_less": float((diffs >= 0).mean())}


def mcnemar_exact(a_correct, b_correct) -> dict:
    """Exact two-sided McNemar test on paired binary outcomes: ``a_only`` / ``b_only`` count the
    queries only one system gets right; ``p`` = P(a binomial(n, 1/2) count is at least as far
    from n/2 as the observed split), n = a_only + b_only (1.0 when n = 0)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"mcnemar_exact needs two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": float(min(1.0, 2 * tail))}


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(total negative log-likelihood / number of predicted tokens)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return float(math.exp(nll_sum / n_tokens))


def _check_pairs(hyps, refs):
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no hypotheses to score")
    return hyps, refs


def bleu(hyps: Sequence[str], refs: Sequence[str], n: int = 4) -> float:
    """Corpus BLEU-n (sacrebleu, uniform weights over 1..n-grams, 13a tokenisation, 0-100)."""
    from sacrebleu.metrics import BLEU

    hyps, refs = _check_pairs(hyps, refs)
    metric = BLEU(max_ngram_order=n, effective_order=False)
    return float(metric.corpus_score(hyps, [refs]).score)


def rouge_l(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, no stemming, 0-100)."""
    from rouge_score import rouge_scorer

    hyps, refs = _check_pairs(hyps, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return 100.0 * float(np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]))


def _ngrams(texts: Iterable[str], n: int) -> list[tuple]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = []
    for text in texts:
        toks = tokenize(text)
        grams.extend(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))  # every n-gram, last included
    return grams


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Corpus-level Distinct-n: distinct n-grams / all n-grams over every text (0-100).

    Every n-gram counts, the last of each text included (the PAL authors' code skips it).
    """
    grams = _ngrams(texts, n)
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


def ead_n(texts: Iterable[str], n: int, vocab_size: int) -> float:
    """Expectation-adjusted Distinct-n: distinct / (V · (1 − ((V − 1)/V)^C)), C = n-gram count (0-100)."""
    if vocab_size < 2:
        raise ValueError("vocab_size must be at least 2")
    grams = _ngrams(texts, n)
    if not grams:
        return 0.0
    v, c = float(vocab_size), len(grams)
    expected = v * (1.0 - ((v - 1.0) / v) ** c)
    return 100.0 * len(set(grams)) / expected


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def _f1_tokens(text: str) -> list[str]:
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def unigram_f1(hyp: str, ref: str) -> float:
    """ParlAI-style unigram F1 (lower-case, no punctuation or articles) of one pair, 0-100."""
    h, r = _f1_tokens(hyp), _f1_tokens(ref)
    common = sum((collections.Counter(h) & collections.Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(h), common / len(r)
    return 100.0 * 2 * precision * recall / (precision + recall)


def f1(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean unigram F1 over pairs (0-100)."""
    hyps, refs = _check_pairs(hyps, refs)
    return float(np.mean([unigram_f1(h, r) for h, r in zip(hyps, refs)]))


def format_table(rows: Sequence[dict], floatfmt: str = ".3f") -> str:
    """A plain-text table with one column per key (union of keys, in first-seen order)."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep] + ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(out)


def _numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
