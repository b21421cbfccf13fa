import math

import numpy as np
import pytest

from hf_persona.evaluation import (
    bleu, distinct_n, ead_n, f1, format_table, hits_at_k, mrr, perplexity, rouge_l, tokenize, unigram_f1,
)


def test_hits_and_mrr_hand_computed():
    scores = np.array([[0.9, 0.1, 0.5],   # positive (0) ranks 1
                       [0.2, 0.8, 0.5],   # ranks 3
                       [0.5, 0.6, 0.1]])  # ranks 2
    assert hits_at_k(scores, 1) == pytest.approx(1 / 3)
    assert hits_at_k(scores, 2) == pytest.approx(2 / 3)
    assert hits_at_k(scores, 3) == 1.0
    assert mrr(scores) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert hits_at_k(scores, 1, positive=[1, 1, 1]) == pytest.approx(2 / 3)


def test_ties_are_pessimistic():
    assert hits_at_k(np.zeros((4, 20)), 1) == 0.0
    assert mrr(np.zeros((1, 4))) == pytest.approx(1 / 4)


def test_ranking_input_errors():
    with pytest.raises(ValueError, match="2-D"):
        hits_at_k([1.0, 2.0], 1)
    with pytest.raises(ValueError, match="positive indices"):
        mrr([[1.0, 2.0]], positive=2)


def test_perplexity():
    assert perplexity(2 * math.log(4), 2) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_distinct_counts_every_ngram():
    texts = ["a b a b", "a c"]
    # unigrams: a b a b a c -> 3 distinct / 6; bigrams: ab ba ab ac -> 3 distinct / 4 (last bigram "a b"
    # of the first text included: the off-by-one variant would give ab ba | a -> 2/2)
    assert distinct_n(texts, 1) == pytest.approx(100 * 3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(100 * 3 / 4)
    assert distinct_n(["single"], 2) == 0.0


def test_ead_formula():
    texts = ["a b a b", "a c"]
    v, c = 10, 6
    expected = 3 / (v * (1 - ((v - 1) / v) ** c))
    assert ead_n(texts, 1, vocab_size=v) == pytest.approx(100 * expected)


def test_bleu_and_rouge_hand_checked():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"], n=4) == pytest.approx(100.0)
    # hyp "the cat" vs ref "the cat sat": unigram p=1, bigram p=1, BP = exp(1 - 3/2)
    assert bleu(["the cat"], ["the cat sat"], n=2) == pytest.approx(100 * math.exp(1 - 1.5), rel=1e-4)
    # LCS("a b c d", "a c d e") = 3 -> P = R = 3/4 -> F = 0.75
    assert rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])


def test_f1_and_tokenize():
    assert tokenize("I'm fine, thanks!") == ["i'm", "fine", ",", "thanks", "!"]
    # "the cat sat" vs "a cat sat down": articles removed -> {cat, sat} vs {cat, sat, down}: P=1, R=2/3
    assert unigram_f1("the cat sat", "a cat sat down") == pytest.approx(100 * 0.8)
    assert f1(["x", "cat"], ["y", "cat"]) == pytest.approx(50.0)


def test_format_table():
    out = format_table([{"model": "cobert", "hits@1": 0.5}, {"model": "bi", "hits@1": 0.25, "mrr": 0.4}])
    lines = out.splitlines()
    assert lines[0].split() == ["model", "hits@1", "mrr"]
    assert "0.500" in lines[2] and "0.400" in lines[3]



def test_reciprocal_ranks_per_query_average_to_mrr():
    from hf_persona.evaluation import mrr, reciprocal_ranks

    scores = [[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.5, 0.5, 0.1]]  # ranks 1, 3 and 2 (a tie counts against)
    np.testing.assert_allclose(reciprocal_ranks(scores), [1.0, 1 / 3, 0.5])
    assert mrr(scores) == pytest.approx((1 + 1 / 3 + 0.5) / 3)


def test_mcnemar_exact_hand_computed():
    from hf_persona.evaluation import mcnemar_exact

    # a right alone on 3 queries, b alone on 0, one both-right query: p = 2 * 0.5^3
    got = mcnemar_exact([1, 1, 1, 1, 0], [0, 0, 0, 1, 0])
    assert got == {"a_only": 3, "b_only": 0, "p": pytest.approx(0.25)}
    # 7 vs 2 discordant: p = 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 * 46 / 512
    a = [1] * 7 + [0] * 2
    assert mcnemar_exact(a, [1 - x for x in a])["p"] == pytest.approx(92 / 512)
    assert mcnemar_exact([1, 0], [1, 0])["p"] == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact([1, 0], [1])


def test_paired_bootstrap_interval():
    from hf_persona.evaluation import paired_bootstrap

    same = paired_bootstrap([0.2, 0.5, 1.0], [0.2, 0.5, 1.0], resamples=500)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_not_greater": 1.0}
    shifted = paired_bootstrap([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5], resamples=500)
    assert shifted["diff"] == pytest.approx(0.5) and shifted["low"] == pytest.approx(0.5)
    assert shifted["high"] == pytest.approx(0.5) and shifted["p_not_greater"] == 0.0
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(size=400)
    got = paired_bootstrap(a, b, resamples=4000, seed=1)
    se = np.std(a - b, ddof=1) / np.sqrt(400)  # the bootstrap interval approaches diff ± 1.96 SE
    assert got["diff"] == pytest.approx(float(np.mean(a - b)))
    assert got["high"] - got["low"] == pytest.approx(2 * 1.96 * se, rel=0.1)
    # resampling whole groups: differences that cancel within a group leave no spread
    grouped = paired_bootstrap([1.0, -1.0, 0.5, -0.5], [0.0] * 4, resamples=300, groups=["x", "x", "y", "y"])
    assert grouped["diff"] == 0.0 and grouped["low"] == grouped["high"] == 0.0
    assert paired_bootstrap([1.0, -1.0, 0.5, -0.5], [0.0] * 4, resamples=300)["high"] > 0.0
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_paired_bootstrap_nll_is_the_ppl_ratio_with_a_cluster_interval():
    from hf_persona.evaluation import paired_bootstrap_nll

    got = paired_bootstrap_nll([2.0, 4.0, 6.0], [1.0, 4.0, 5.0], [1, 2, 3], groups=["x", "x", "y"], resamples=200)
    assert got["diff"] == pytest.approx(2.0 / 6.0)  # (12 - 10) nats over 6 tokens
    assert got["ppl_ratio"] == pytest.approx(math.exp(2.0 / 6.0)) and got["groups"] == 2
    same = paired_bootstrap_nll([1.0, 2.0], [1.0, 2.0], [1, 1], resamples=200)
    assert (same["diff"], same["low"], same["high"], same["p_not_less"]) == (0.0, 0.0, 0.0, 1.0)
    tokens = np.array([3, 5, 2, 7])  # a better by exactly 0.1 nats on every token: no resample differs
    better = paired_bootstrap_nll(10.0 - 0.1 * tokens, np.full(4, 10.0), tokens, resamples=200)
    assert better["low"] == pytest.approx(-0.1) and better["high"] == pytest.approx(-0.1)
    assert better["p_not_less"] == 0.0 and better["ppl_ratio_high"] == pytest.approx(math.exp(-0.1))
    # turns of one dialogue cancel out: resampling whole dialogues sees no spread, resampling turns does
    d, b, t = [1.0, -1.0, 0.0, 0.0], [0.0] * 4, [1, 1, 1, 1]
    clustered = paired_bootstrap_nll(d, b, t, groups=["g1", "g1", "g2", "g2"], resamples=500)
    assert clustered["low"] == clustered["high"] == 0.0
    loose = paired_bootstrap_nll(d, b, t, resamples=500)
    assert loose["low"] < 0.0 < loose["high"]
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_bootstrap_nll([1.0], [1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="at least one predicted token"):
        paired_bootstrap_nll([1.0], [1.0], [0])
    with pytest.raises(ValueError, match="groups has 1 entries for 2"):
        paired_bootstrap_nll([1.0, 1.0], [1.0, 2.0], [1, 1], groups=["a"])
