"""CoBERT / Bi-encoder model tests: matching maths, masking, losses, inference API, bad input,
Hub round trip and PEFT."""

import json
import math
import os

import numpy as np
import pytest
import torch

from hf_persona.models.cobert import (BiEncoderConfig, BiEncoderForResponseSelection, CandidateCache, CoBERTConfig,
                                      CoBERTForResponseSelection, build_context_inputs, build_persona_inputs,
                                      build_response_inputs, co_attention_match)
from hf_persona.models.cobert.modeling_cobert import masked_mean
from tests.helpers import run_without_hf_persona

# ----------------------------------------------------------------------------------------------
# matching maths
# ----------------------------------------------------------------------------------------------


def _softmax_rows(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _reference(X, Y, hops=2):
    """The paper's equations 1-5 written literally with numpy (no padding)."""
    A = X @ Y.T
    x2y = _softmax_rows(A)  # m x n
    y2x = _softmax_rows(A.T)  # n x m
    fx = [(x2y @ Y).max(0)]
    fy = [(y2x @ X).max(0)]
    if hops >= 2:
        ax = x2y.mean(0) @ y2x  # eq. 4 -> over X
        ay = y2x.mean(0) @ x2y  # eq. 5 -> over Y
        fx.append(ax @ X)
        fy.append(ay @ Y)
        if hops >= 3:
            fx.append((ay @ y2x) @ X)
            fy.append((ax @ x2y) @ Y)
    return np.concatenate(fx), np.concatenate(fy)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_co_attention_matches_paper_equations(hops):
    rng = np.random.default_rng(hops)
    X, Y = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    ref_x, ref_y = _reference(X, Y, hops)
    fx, fy = co_attention_match(torch.tensor(X)[None], torch.ones(1, 4, dtype=torch.bool),
                                torch.tensor(Y)[None], torch.ones(1, 3, dtype=torch.bool), num_hops=hops)
    assert fx.shape == (1, 1, 6 * hops)
    np.testing.assert_allclose(fx[0, 0].numpy(), ref_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fy[0, 0].numpy(), ref_y, rtol=1e-10, atol=1e-12)


def test_co_attention_hand_computed():
    # X = two one-hot tokens, Y = one token equal to X[0]; A = [[1], [0]].
    X = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    Y = torch.tensor([[[1.0, 0.0]]])
    fx, fy = co_attention_match(X, torch.ones(1, 2, dtype=torch.bool), Y, torch.ones(1, 1, dtype=torch.bool))
    e = math.e
    w = torch.tensor([e / (e + 1), 1 / (e + 1)])  # softmax of [1, 0] over the context tokens
    # hop 1: X' rows are both Y -> max [1, 0]; Y' = w X = w -> max w.
    # hop 2: A_X' = mean(x2y) y2x = w -> X'' = w; A_Y' = mean(y2x) x2y = [1] -> Y'' = [1, 0].
    torch.testing.assert_close(fx[0, 0], torch.cat([torch.tensor([1.0, 0.0]), w]))
    torch.testing.assert_close(fy[0, 0], torch.cat([w, torch.tensor([1.0, 0.0])]))
    assert float((fx * fy).sum()) == pytest.approx(2 * e / (e + 1))


@pytest.mark.parametrize("pooling", ["max", "mean", "max+mean"])
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_padding_never_leaks_into_softmax_pool_or_mean(pooling, hops):
    """Padded positions hold large garbage; results must equal the unpadded computation.

    The official code averages attention rows including padded ones; that version fails this test
    (checked below), which is the point of the test."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 3, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    x_pad = torch.cat([x, 50 * torch.randn(1, 2, 5, generator=g)], 1)
    y_pad = torch.cat([y, 50 * torch.randn(2, 3, 5, generator=g)], 1)
    xm = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    ym = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    kw = dict(num_hops=hops, pooling=pooling)
    got_x, got_y = co_attention_match(x_pad, xm, y_pad, ym, **kw)
    ref0 = co_attention_match(x, torch.ones(1, 3, dtype=torch.bool), y[:1], torch.ones(1, 4, dtype=torch.bool), **kw)
    ref1 = co_attention_match(x, torch.ones(1, 3, dtype=torch.bool), y[1:, :2], torch.ones(1, 2, dtype=torch.bool), **kw)
    torch.testing.assert_close(got_x[0, 0], ref0[0][0, 0])
    torch.testing.assert_close(got_y[0, 0], ref0[1][0, 0])
    torch.testing.assert_close(got_x[0, 1], ref1[0][0, 0])
    torch.testing.assert_close(got_y[0, 1], ref1[1][0, 0])


@pytest.mark.parametrize("shared", [True, False])
def test_global_match_adds_the_bi_encoder_dot_of_masked_means(shared):
    """global_match appends mean(X) and mean(Y) over valid positions only: the score grows by exactly
    <mean X, mean Y>, computed here from the unpadded tokens by hand."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, generator=g)
    y = torch.randn(3, 6, 5, generator=g)
    xm = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    ym = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    x = x.masked_fill(~xm.unsqueeze(-1), 40.0)  # garbage in the padding
    y = y.masked_fill(~ym.unsqueeze(-1), -40.0)
    if not shared:  # per-query candidates [B, C, n, d]
        y, ym = y.expand(2, -1, -1, -1), ym.expand(2, -1, -1)
    plain = co_attention_match(x, xm, y, ym, num_hops=2)
    extra = co_attention_match(x, xm, y, ym, num_hops=2, global_match=True)
    assert extra[0].shape[-1] == plain[0].shape[-1] + 5
    gain = (extra[0] * extra[1]).sum(-1) - (plain[0] * plain[1]).sum(-1)
    y0, ym0 = (y, ym) if shared else (y[0], ym[0])
    for b in range(2):
        for c in range(3):
            mx = x[b, : int(xm[b].sum())].mean(0)
            my = y0[c, : int(ym0[c].sum())].mean(0)
            assert float(gain[b, c]) == pytest.approx(float(mx @ my), rel=1e-5, abs=1e-5)
    with pytest.raises(TypeError, match="global_match must be True or False"):
        CoBERTConfig(global_match="yes")


def test_unmasked_mean_would_fail_the_padding_test():
    """Sanity of the test above: averaging attention rows including padded rows (the official code's
    defect) changes the hop-2 attention, so the invariance check does detect it."""
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(1, 3, 4, generator=g), 30 * torch.randn(1, 2, 4, generator=g)], 1)
    y = torch.randn(1, 4, 4, generator=g)
    xm = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    logits = torch.einsum("bmd,bnd->bmn", x, y)
    x2y = torch.softmax(logits, -1)
    good = masked_mean(x2y, xm.unsqueeze(-1), 1)
    defective = x2y.mean(1)
    assert not torch.allclose(good, defective, atol=1e-3)
    np.testing.assert_allclose(good.numpy(), x2y[:, :3].mean(1).numpy(), rtol=1e-6)


def test_grouped_candidates_equal_shared_candidates():
    g = torch.Generator().manual_seed(2)
    x, xm = torch.randn(2, 5, 8, generator=g), torch.tensor([[1] * 5, [1, 1, 1, 0, 0]], dtype=torch.bool)
    y, ym = torch.randn(3, 4, 8, generator=g), torch.tensor([[1] * 4, [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    shared = co_attention_match(x, xm, y, ym, num_hops=3, pooling="max+mean")
    grouped = co_attention_match(x, xm, y.expand(2, 3, 4, 8), ym.expand(2, 3, 4), num_hops=3, pooling="max+mean")
    torch.testing.assert_close(shared[0], grouped[0])
    torch.testing.assert_close(shared[1], grouped[1])


# ----------------------------------------------------------------------------------------------
# input building
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_context_segments_alternate_and_keep_recent_turns(tokenizer):
    enc = build_context_inputs(tokenizer, [["hello there", "hi", "how are you"]], max_length=64, max_turns=2)
    ids = enc["input_ids"][0].tolist()
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    hi, how = tokenizer("hi", add_special_tokens=False)["input_ids"], tokenizer("how are you", add_special_tokens=False)["input_ids"]
    assert ids == [cls] + hi + [sep] + how + [sep]  # only the last two turns
    # respondent's turn ("hi") = 1, the message being answered = 0
    assert enc["token_type_ids"][0].tolist() == [1] + [1] * (len(hi) + 1) + [0] * (len(how) + 1)


def test_overlong_texts_are_truncated_to_the_limits(tokenizer):
    long = " ".join(["word"] * 600)
    ctx = build_context_inputs(tokenizer, [["first turn", long]], max_length=16)
    assert ctx["input_ids"].shape[1] == 16 and ctx["input_ids"][0, -1] == tokenizer.sep_token_id
    res = build_response_inputs(tokenizer, [long, "short"], max_length=10)
    assert res["input_ids"].shape == (2, 10) and res["attention_mask"][1].sum() == 3
    per = build_persona_inputs(tokenizer, [[long, "i like tea ."]], max_length=12)
    assert per["input_ids"].shape[1] == 12


def test_empty_persona_gets_zero_mask(tokenizer):
    per = build_persona_inputs(tokenizer, [[], ["i like tea ."]], max_length=16)
    assert per["attention_mask"][0].sum() == 0 and per["attention_mask"][1].sum() > 0


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


def _model(tiny_bert_dir, tokenizer, kind="cobert", **kw):
    torch.manual_seed(0)
    cls = CoBERTForResponseSelection if kind == "cobert" else BiEncoderForResponseSelection
    model = cls.from_encoder(tiny_bert_dir, **kw)
    model.tokenizer = tokenizer
    return model.eval()


CONTEXTS = [["hi , how are you ?"], ["hello", "hey , what do you do for work ?"], ["do you like pets ?"]]
PERSONAS = [["i like tea ."], ["i am a nurse .", "i have two kids ."], ["i have a dog .", "i like to run ."]]
RESPONSES = ["i am fine , drinking tea .", "i work as a nurse .", "yes , my dog is great ."]


@pytest.mark.parametrize("kind", ["cobert", "biencoder"])
def test_forward_in_batch_and_sampled_negatives_loss(tiny_bert_dir, tokenizer, kind):
    model = _model(tiny_bert_dir, tokenizer, kind)
    batch = model.build_inputs(CONTEXTS, PERSONAS, RESPONSES)
    neg = build_response_inputs(tokenizer, ["no .", "maybe later .", "the sky is blue .", "ok ."] + ["what ?"] * 2, 16)
    batch["negative_input_ids"] = neg["input_ids"].view(3, 2, -1)
    batch["negative_attention_mask"] = neg["attention_mask"].view(3, 2, -1)
    out = model(**batch)
    assert out.scores.shape == (3, 5) and out.labels.tolist() == [0, 1, 2]
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.scores, out.labels))
    # each column equals the score of that candidate computed alone with rank()
    with torch.no_grad():
        for i in range(3):
            alone = model.rank(CONTEXTS[i], PERSONAS[i], RESPONSES + ["no .", "maybe later ."][:0])
            torch.testing.assert_close(out.scores[i, :3], alone, rtol=1e-4, atol=1e-4)
    without = model(**{k: v for k, v in batch.items()}, in_batch_negatives=False)
    assert without.scores.shape == (3, 3) and without.labels.tolist() == [0, 0, 0]
    torch.testing.assert_close(without.scores[:, 0], out.scores.diagonal())
    torch.testing.assert_close(without.scores[:, 1:], out.scores[:, 3:])


def test_duplicate_gold_responses_are_not_negatives(tiny_bert_dir, tokenizer):
    model = _model(tiny_bert_dir, tokenizer)
    batch = model.build_inputs(CONTEXTS, PERSONAS, ["hi .", "i work as a nurse .", "hi ."])
    out = model(**batch)
    low = torch.finfo(out.scores.dtype).min
    assert out.scores[0, 2] == low and out.scores[2, 0] == low and out.scores[1, 0] != low
    model.config.mask_duplicate_candidates = False
    assert model(**batch).scores[0, 2] != low


@pytest.mark.parametrize("kind", ["cobert", "biencoder"])
def test_cache_and_batched_scoring_agree_with_rank(tiny_bert_dir, tokenizer, kind):
    model = _model(tiny_bert_dir, tokenizer, kind)
    cands = RESPONSES + ["a much longer candidate response that needs a lot more padding than others ."]
    cache = model.encode_candidates(cands, batch_size=2)  # two chunks with different lengths
    assert isinstance(cache, CandidateCache) and len(cache) == 4
    direct = model.rank(CONTEXTS[1], PERSONAS[1], cands)
    cached = model.rank(CONTEXTS[1], PERSONAS[1], cache)
    torch.testing.assert_close(direct, cached, rtol=1e-4, atol=1e-4)
    # batched scoring (queries padded against each other, grouped candidate lists) gives the same numbers
    idx = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 0, 2]]
    batched = model.score_candidates(CONTEXTS, PERSONAS, cache, candidate_indices=idx, batch_size=3)
    for i in range(3):
        alone = model.rank(CONTEXTS[i], PERSONAS[i], cache)
        torch.testing.assert_close(batched[i], alone[idx[i]], rtol=1e-4, atol=1e-4)


def test_length_buckets_give_the_same_scores_as_one_padded_block(tiny_bert_dir, tokenizer):
    model = _model(tiny_bert_dir, tokenizer)
    cands = [" ".join(["word"] * (1 + (7 * i) % 23)) + f" {i} ." for i in range(40)]  # 3 buckets, mixed lengths
    cache = model.encode_candidates(cands, batch_size=32)
    bucketed = model.rank(CONTEXTS[1], PERSONAS[1], cache)
    assert cache.buckets is not None and len(cache.buckets) == 3
    assert [int(m.sum(-1).max()) == m.shape[1] for _, _, m in cache.buckets] == [True] * 3
    query = model.encode_query_texts([CONTEXTS[1]], [PERSONAS[1]])
    plain = model.score_query_states(query, model._cache_states(cache))[0]
    torch.testing.assert_close(bucketed, plain, rtol=1e-5, atol=1e-4)


def test_no_persona_means_context_only_score(tiny_bert_dir, tokenizer):
    model = _model(tiny_bert_dir, tokenizer)
    ctx_only = _model(tiny_bert_dir, tokenizer, use_persona=False)
    ctx_only.load_state_dict(model.state_dict())
    for persona in (None, [], ["   "]):
        torch.testing.assert_close(model.rank(CONTEXTS[0], persona, RESPONSES),
                                   ctx_only.rank(CONTEXTS[0], PERSONAS[0], RESPONSES))
    assert not torch.allclose(model.rank(CONTEXTS[0], PERSONAS[0], RESPONSES),
                              ctx_only.rank(CONTEXTS[0], PERSONAS[0], RESPONSES))


def test_score_scale_scales_without_changing_ranking(tiny_bert_dir, tokenizer):
    plain = _model(tiny_bert_dir, tokenizer, score_scale=1.0)
    auto = _model(tiny_bert_dir, tokenizer)
    assert auto.config.effective_score_scale == pytest.approx(32 ** -0.5)
    a, b = plain.rank(CONTEXTS[2], PERSONAS[2], RESPONSES), auto.rank(CONTEXTS[2], PERSONAS[2], RESPONSES)
    torch.testing.assert_close(b, a * 32 ** -0.5)


@pytest.mark.parametrize("kwargs", [dict(num_hops=1), dict(num_hops=3, hop1_pooling="max+mean"),
                                    dict(num_hops=2, use_hop1=False), dict(hop1_pooling="mean")])
def test_ablation_configs_change_features(tiny_bert_dir, tokenizer, kwargs):
    model = _model(tiny_bert_dir, tokenizer, **kwargs)
    x = torch.randn(1, 3, 32)
    fx, _ = co_attention_match(x, torch.ones(1, 3, dtype=torch.bool), x[0][None], torch.ones(1, 3, dtype=torch.bool),
                               num_hops=model.config.num_hops, use_hop1=model.config.use_hop1,
                               pooling=model.config.hop1_pooling)
    assert fx.shape[-1] == 32 * model.config.features_per_match
    assert torch.isfinite(model.rank(CONTEXTS[0], PERSONAS[0], RESPONSES)).all()


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tiny_bert_dir, tokenizer):
    model = _model(tiny_bert_dir, tokenizer)
    with pytest.raises(ValueError, match="candidates is empty"):
        model.rank(CONTEXTS[0], PERSONAS[0], [])
    with pytest.raises(TypeError, match="single string"):
        model.rank(CONTEXTS[0], PERSONAS[0], "just one string")
    with pytest.raises(TypeError, match=r"candidates\[1\] must be a string"):
        model.rank(CONTEXTS[0], PERSONAS[0], ["ok", 3])
    with pytest.raises(TypeError, match="list of strings"):
        model.rank(CONTEXTS[0], PERSONAS[0], {"a": 1})
    with pytest.raises(ValueError, match="context is empty"):
        model.rank([], PERSONAS[0], RESPONSES)
    with pytest.raises(ValueError, match="context is empty"):
        model.rank(["  ", ""], PERSONAS[0], RESPONSES)
    with pytest.raises(TypeError, match=r"context\[0\] must be a string"):
        model.rank([None], PERSONAS[0], RESPONSES)
    with pytest.raises(TypeError, match="persona must be"):
        model.rank(CONTEXTS[0], 5, RESPONSES)
    with pytest.raises(ValueError, match="CoBERT needs token states"):
        bi = _model(tiny_bert_dir, tokenizer, "biencoder")
        model.rank(CONTEXTS[0], None, bi.encode_candidates(RESPONSES))
    with pytest.raises(ValueError, match="num_hops must be 1, 2 or 3"):
        CoBERTConfig(num_hops=4)
    with pytest.raises(ValueError, match="hop1_pooling must be one of"):
        CoBERTConfig(hop1_pooling="sum")
    with pytest.raises(ValueError, match="candidate_indices must lie in"):
        model.score_candidates(CONTEXTS[:1], None, model.encode_candidates(RESPONSES), candidate_indices=[[0, 7]])


def test_persona_over_the_limit_is_truncated_with_a_warning(tiny_bert_dir, tokenizer, caplog):
    model = _model(tiny_bert_dir, tokenizer, max_persona_sentences=3)
    many = [f"fact number {i} ." for i in range(5)]
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            scores = model.rank(CONTEXTS[0], many, RESPONSES)
    finally:
        hf_logging.disable_propagation()
    assert "only the first 3 are used" in caplog.text
    torch.testing.assert_close(scores, model.rank(CONTEXTS[0], many[:3], RESPONSES))


def test_overlong_inputs_rank_without_error(tiny_bert_dir, tokenizer):
    model = _model(tiny_bert_dir, tokenizer)  # tiny encoder: 128 positions
    long = " ".join(["word"] * 2000)
    scores = model.rank([long, long], [long] * 3, [long, "short"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


# ----------------------------------------------------------------------------------------------
# saving, remote code, PEFT
# ----------------------------------------------------------------------------------------------


def test_save_and_load_without_hf_persona(tiny_bert_dir, tokenizer, tmp_path):
    expected = {}
    for kind in ("cobert", "biencoder"):
        model = _model(tiny_bert_dir, tokenizer, kind)
        out = tmp_path / kind
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        files = set(os.listdir(out))
        assert {"config.json", "model.safetensors", "configuration_cobert.py", "modeling_cobert.py"} <= files
        assert not any(f.endswith(".bin") for f in files)
        auto_map = json.loads((out / "config.json").read_text())["auto_map"]
        assert auto_map["AutoModel"].startswith("modeling_cobert.")
        expected[kind] = model.rank(CONTEXTS[1], PERSONAS[1], RESPONSES).tolist()
    code = f"""
        import json, torch
        from transformers import AutoModel, AutoTokenizer
        out = {{}}
        for kind in ("cobert", "biencoder"):
            path = {str(tmp_path)!r} + "/" + kind
            model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
            out[kind] = [type(model).__name__, model.rank({CONTEXTS[1]!r}, {PERSONAS[1]!r}, {RESPONSES!r}).tolist()]
        print(json.dumps(out))
    """
    got = json.loads(run_without_hf_persona(code).strip().splitlines()[-1])
    assert got["cobert"][0] == "CoBERTForResponseSelection"
    assert got["biencoder"][0] == "BiEncoderForResponseSelection"
    for kind in expected:
        np.testing.assert_allclose(got[kind][1], expected[kind], rtol=1e-5, atol=1e-5)


def test_registered_auto_classes_load_without_remote_code(tiny_bert_dir, tokenizer, tmp_path):
    from transformers import AutoModel

    from hf_persona import plugins

    plugins.load_plugins()
    assert "cobert" in plugins.list_plugins()["models"]
    model = _model(tiny_bert_dir, tokenizer)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is CoBERTForResponseSelection


def test_peft_lora_trains_adapters_only(tiny_bert_dir, tokenizer):
    from peft import LoraConfig, get_peft_model

    model = _model(tiny_bert_dir, tokenizer).train()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = model.build_inputs(CONTEXTS, PERSONAS, RESPONSES)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(8):
        loss = peft_model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    merged = peft_model.merge_and_unload()
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p, base[n])]
    assert changed and all(("query" in n or "value" in n) for n in changed)
