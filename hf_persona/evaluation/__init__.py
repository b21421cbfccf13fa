"""Metrics for response selection, generation and persona probes."""

from .metrics import (
    bleu,
    distinct_n,
    ead_n,
    f1,
    format_table,
    hits_at_k,
    mcnemar_exact,
    mrr,
    paired_bootstrap,
    paired_bootstrap_nll,
    perplexity,
    reciprocal_ranks,
    recall_at_k,
    rouge_l,
    tokenize,
    unigram_f1,
)

__all__ = ["bleu", "distinct_n", "ead_n", "f1", "format_table", "hits_at_k", "mcnemar_exact", "mrr",
           "paired_bootstrap", "paired_bootstrap_nll", "perplexity", "recall_at_k", "reciprocal_ranks", "rouge_l",
           "tokenize", "unigram_f1"]
