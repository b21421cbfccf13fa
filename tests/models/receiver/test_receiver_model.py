"""P2Bot Receiver: pooling, relevance grid, masked Agg, loss, text API, save/load, remote code, LoRA."""

import math
import os

import pytest
import torch

from hf_persona.models.receiver import (
    ReceiverConfig,
    ReceiverModel,
    aggregate,
    masked_mean_pool,
    relevance_grid,
)

UTTS = ["i play guitar in a band", "i caught a big fish yesterday at the lake"]
PERSONA = ["i play the guitar .", "i like to go fishing .", "i love horror movies ."]
OTHER = ["i am a nurse .", "i drive a red truck ."]


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir):
    torch.manual_seed(0)
    model = ReceiverModel.from_encoder_pretrained(tiny_bert_dir)
    model.eval()
    return model


def _tok(model, texts, max_len=32):
    enc = model.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _stack(model, groups):
    """[B, S, T] ids/mask for lists of sentence lists (empty slots all-zero)."""
    S = max(len(g) for g in groups)
    flat = [s for g in groups for s in g]
    ids, mask = _tok(model, flat)
    T = ids.shape[1]
    out_ids = torch.zeros(len(groups), S, T, dtype=torch.long)
    out_mask = torch.zeros(len(groups), S, T, dtype=torch.long)
    k = 0
    for b, g in enumerate(groups):
        for j in range(len(g)):
            out_ids[b, j], out_mask[b, j] = ids[k], mask[k]
            k += 1
    return out_ids, out_mask


# ----------------------------------------------------------------------------- pure functions
def test_masked_mean_pool_hand_example():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    assert torch.allclose(masked_mean_pool(h, m), torch.tensor([[2.0, 3.0]]))
    # a slot without real tokens pools to zeros, not NaN
    assert torch.equal(masked_mean_pool(h, torch.zeros(1, 3)), torch.zeros(1, 2))


def test_relevance_grid_is_scaled_dot_product():
    H = torch.randn(2, 3, 8)
    W = torch.randn(2, 4, 8)
    U = relevance_grid(H, W)
    assert U.shape == (2, 3, 4)
    assert torch.allclose(U[1, 2, 3], (H[1, 2] * W[1, 3]).sum() / math.sqrt(8))


def test_aggregate_hand_computed_and_padding_gets_exactly_zero_weight():
    # row 0: real persona scores 1 and 2, a padded slot holding a huge value (what a pooled padding
    # sentence would look like when the mask is ignored, as in the authors' code)
    U = torch.tensor([[[1.0, 2.0, 50.0], [0.0, -1.0, 50.0], [9.0, 9.0, 9.0]]])
    umask = torch.tensor([[1, 1, 0]])  # third utterance is padding
    pmask = torch.tensor([[1, 1, 0]])
    scores, per_utt, w = aggregate(U, umask, pmask, temperature=1.0)
    agg0 = (math.e**1 * 1 + math.e**2 * 2) / (math.e**1 + math.e**2)
    agg1 = (math.e**0 * 0 + math.e**-1 * -1) / (math.e**0 + math.e**-1)
    assert per_utt[0, 0].item() == pytest.approx(agg0, rel=1e-6)
    assert per_utt[0, 1].item() == pytest.approx(agg1, rel=1e-6)
    assert scores[0].item() == pytest.approx((agg0 + agg1) / 2, rel=1e-6)
    assert torch.all(w[0, :, 2] == 0.0)  # exactly zero, not merely small
    assert torch.all(w[0, 2] == 0.0)  # padded utterance takes no weight either
    assert torch.allclose(w[0, :2, :2].sum(-1), torch.ones(2))
    # the defect: an unmasked softmax lets the padded slot dominate and changes the score
    unmasked = (torch.softmax(U[0, :2], -1) * U[0, :2]).sum(-1).mean()
    assert abs(unmasked.item() - scores[0].item()) > 10


def test_aggregate_temperature_limits_mean_and_max():
    U = torch.tensor([[[0.5, 1.5, 4.0]]])
    ones = torch.ones(1, 1, dtype=torch.long)
    s_hot, _, _ = aggregate(U, ones, torch.ones(1, 3), temperature=1e4)
    s_cold, _, _ = aggregate(U, ones, torch.ones(1, 3), temperature=1e-3)
    assert s_hot.item() == pytest.approx(U.mean().item(), rel=1e-3)  # τ → ∞: average pooling
    assert s_cold.item() == pytest.approx(4.0, rel=1e-4)  # τ → 0: max
    with pytest.raises(ValueError, match="temperature"):
        aggregate(U, ones, torch.ones(1, 3), temperature=0.0)


def test_aggregate_empty_side_scores_zero_not_nan():
    U = torch.zeros(1, 2, 2)
    scores, _, w = aggregate(U, torch.zeros(1, 2), torch.zeros(1, 2), 0.5)
    assert scores.item() == 0.0 and torch.all(w == 0)


# ----------------------------------------------------------------------------- config
def test_config_validation_and_round_trip(tmp_path, tiny):
    with pytest.raises(ValueError, match="margin"):
        ReceiverConfig(margin=-1)
    with pytest.raises(ValueError, match="tau"):
        ReceiverConfig(tau=0)
    with pytest.raises(TypeError, match="encoder"):
        ReceiverConfig(encoder=3)
    cfg = ReceiverConfig(encoder=tiny.config.encoder.to_dict(), share_encoders=False, margin=0.5, l1_weight=1e-2)
    cfg.save_pretrained(tmp_path)
    back = ReceiverConfig.from_pretrained(tmp_path)
    assert (back.share_encoders, back.margin, back.l1_weight, back.encoder.hidden_size) == (False, 0.5, 1e-2, 32)


# ----------------------------------------------------------------------------- model
def test_padding_invariance_end_to_end(tiny):
    """A dialogue's score must not change when it is batched with a longer dialogue and longer persona.

    With unmasked mean pooling or an unmasked Agg softmax (the authors' code) the padded sentences
    and persona slots would change the score of the shorter item.
    """
    u_ids, u_mask = _stack(tiny, [UTTS[:1], UTTS + ["what is your favourite colour ? mine is green and blue"]])
    p_ids, p_mask = _stack(tiny, [PERSONA[:2], PERSONA + ["my favourite colour is green ."]])
    with torch.no_grad():
        batched = tiny(u_ids, u_mask, p_ids, p_mask)
        a_ids, a_mask = _stack(tiny, [UTTS[:1]])
        b_ids, b_mask = _stack(tiny, [PERSONA[:2]])
        alone = tiny(a_ids, a_mask, b_ids, b_mask)
    assert torch.allclose(batched.scores[0], alone.scores[0], atol=1e-5)
    assert torch.allclose(batched.relevance[0, :1, :2], alone.relevance[0], atol=1e-5)
    assert torch.all(batched.weights[0, :, 2:] == 0.0) and torch.all(batched.weights[0, 1:] == 0.0)
    assert torch.all(batched.relevance[0, 1:] == 0.0)


def test_forward_matches_formulas_and_loss(tiny):
    u_ids, u_mask = _stack(tiny, [UTTS, UTTS[:1]])
    p_ids, p_mask = _stack(tiny, [PERSONA, OTHER])
    n_ids, n_mask = _stack(tiny, [OTHER, PERSONA])
    tiny.set_tau(0.7)
    with torch.no_grad():
        out = tiny(u_ids, u_mask, p_ids, p_mask, n_ids, n_mask)
        # reference: encode each sentence alone, no padding anywhere
        def enc(texts, kind):
            ids, mask = _tok(tiny, texts)
            return torch.stack([tiny.encode(ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())], kind)[0] for i in range(len(texts))])

        d = 32
        ref_c, ref_neg, ref_l1 = [], [], []
        for utts, pos, neg in ((UTTS, PERSONA, OTHER), (UTTS[:1], OTHER, PERSONA)):
            H = enc(utts, "utterance")
            cs = []
            for pers in (pos, neg):
                U = H @ enc(pers, "persona").T / math.sqrt(d)
                w = torch.softmax(U / 0.7, dim=-1)
                cs.append((w * U).sum(-1).mean())
                ref_l1.append(U.abs().sum())
            ref_c.append(cs[0])
            ref_neg.append(cs[1])
    ref_c, ref_neg = torch.stack(ref_c), torch.stack(ref_neg)
    assert torch.allclose(out.scores, ref_c, atol=1e-4)
    assert torch.allclose(out.negative_scores[:, 0], ref_neg, atol=1e-4)
    cfg = tiny.config
    ref_loss = torch.relu(cfg.margin + ref_neg - ref_c).mean() + cfg.l1_weight * torch.stack(ref_l1).view(2, 2).mean()
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-4)
    # the text API agrees with the tensor API
    text_scores = tiny.score_batch([UTTS, UTTS[:1]], [PERSONA, OTHER])
    assert torch.allclose(text_scores, ref_c, atol=1e-4)
    assert tiny.score(UTTS, PERSONA) == pytest.approx(ref_c[0].item(), abs=1e-4)
    per_utt = tiny.utterance_scores_batch([UTTS], [PERSONA])[0]
    assert sum(per_utt) / 2 == pytest.approx(ref_c[0].item(), abs=1e-4)
    U = tiny.relevance(UTTS, PERSONA)
    assert U.shape == (2, 3)
    tiny.set_tau(0.5)


def test_several_negatives_and_segment_ids(tiny, tiny_bert_dir):
    u_ids, u_mask = _stack(tiny, [UTTS])
    p_ids, p_mask = _stack(tiny, [PERSONA])
    n_ids, n_mask = _stack(tiny, [OTHER, PERSONA[:1]])
    with torch.no_grad():
        out = tiny(u_ids, u_mask, p_ids, p_mask, n_ids.unsqueeze(0), n_mask.unsqueeze(0))
        one = tiny(u_ids, u_mask, p_ids, p_mask, n_ids[1:2], n_mask[1:2])
    assert out.negative_scores.shape == (1, 2)
    assert torch.allclose(out.negative_scores[0, 1], one.negative_scores[0, 0], atol=1e-5)
    # shared encoder with segment ids: the same text encodes differently as utterance and as persona
    ids, mask = _tok(tiny, ["i like to go fishing ."])
    with torch.no_grad():
        assert not torch.allclose(tiny.encode(ids, mask, "utterance"), tiny.encode(ids, mask, "persona"))
        plain = ReceiverModel.from_encoder_pretrained(tiny_bert_dir, segment_ids=False).eval()
        assert torch.allclose(plain.encode(ids, mask, "utterance"), plain.encode(ids, mask, "persona"))


def test_separate_encoders(tiny_bert_dir):
    model = ReceiverModel.from_encoder_pretrained(tiny_bert_dir, share_encoders=False).eval()
    assert model.persona_encoder is not None
    n_shared = sum(p.numel() for p in model.encoder.parameters())
    assert sum(p.numel() for p in model.parameters()) == 2 * n_shared
    with torch.no_grad():
        model.persona_encoder.embeddings.word_embeddings.weight.mul_(2.0)
        ids, mask = _tok(model, ["i like to go fishing ."])
        assert not torch.allclose(model.encode(ids, mask, "utterance"), model.encode(ids, mask, "persona"))
    assert isinstance(model.score(UTTS, PERSONA), float)


def test_bad_inputs_have_clear_errors(tiny):
    with pytest.raises(TypeError, match="single string"):
        tiny.score_batch(["hello"], [PERSONA])
    with pytest.raises(ValueError, match="one persona per item"):
        tiny.score_batch([UTTS, UTTS], [PERSONA])
    with pytest.raises(ValueError, match=r"\[batch, sentences, tokens\]"):
        tiny(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), torch.ones(1, 1, 2, dtype=torch.long), torch.ones(1, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="kind"):
        tiny.encode(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long), kind="speaker")
    with pytest.raises(ValueError, match="τ"):
        tiny.set_tau(-1)


def test_save_load_safetensors_keeps_tau(tmp_path, tiny):
    from transformers import AutoModel

    import hf_persona  # noqa: F401  (registers the Auto classes)

    tiny.set_tau(0.8)
    tiny.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    tiny.set_tau(0.5)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"configuration_receiver.py", "modeling_receiver.py"} <= files
    loaded = AutoModel.from_pretrained(tmp_path)  # in-process Auto registration, no remote code
    assert isinstance(loaded, ReceiverModel) and loaded.tau == 0.8
    loaded.set_tau(0.5)
    assert loaded.score(UTTS, PERSONA) == pytest.approx(tiny.score(UTTS, PERSONA), abs=1e-5)


def test_trust_remote_code_round_trip_without_hf_persona(tmp_path, tiny):
    from tests.helpers import run_without_hf_persona

    tiny.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    expected = tiny.score_batch([UTTS, UTTS[:1]], [PERSONA, OTHER]).tolist()
    out = run_without_hf_persona(
        f"""
        import json
        from transformers import AutoModel
        m = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(m).__name__ == "ReceiverModel" and "hf_persona" not in type(m).__module__
        print(json.dumps(m.score_batch({[UTTS, UTTS[:1]]!r}, {[PERSONA, OTHER]!r}).tolist()))
        """
    )
    import json

    got = json.loads(out.strip().splitlines()[-1])
    assert got == pytest.approx(expected, abs=1e-5)


def test_peft_lora_trains_adapters(tiny_bert_dir):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = ReceiverModel.from_encoder_pretrained(tiny_bert_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    u_ids, u_mask = _stack(base, [UTTS, UTTS[:1]])
    p_ids, p_mask = _stack(base, [PERSONA, OTHER])
    n_ids, n_mask = _stack(base, [OTHER, PERSONA])
    batch = dict(utterance_input_ids=u_ids, utterance_attention_mask=u_mask, persona_input_ids=p_ids,
                 persona_attention_mask=p_mask, negative_persona_input_ids=n_ids, negative_persona_attention_mask=n_mask)
    base.config.margin = 5.0  # keep the hinge active so the loss has room to fall
    model.eval()  # no dropout: the loss curve is deterministic
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_in_batch_negatives_match_pairwise_scores(tiny):
    groups_u = [UTTS, UTTS[:1], ["i am a nurse at the hospital"]]
    groups_p = [PERSONA, OTHER, PERSONA]  # item 2 shares item 0's persona: not a distractor for it
    u_ids, u_mask = _stack(tiny, groups_u)
    p_ids, p_mask = _stack(tiny, groups_p)
    mask = torch.tensor([[False, True, False], [True, False, True], [False, True, False]])
    with torch.no_grad():
        out = tiny(u_ids, u_mask, p_ids, p_mask, in_batch_negative_mask=mask)
    cross = tiny.score_batch([u for u in groups_u for _ in groups_p], [p for _ in groups_u for p in groups_p]).view(3, 3)
    assert torch.allclose(out.pairwise_scores, cross, atol=1e-4)
    assert torch.allclose(out.scores, cross.diagonal(), atol=1e-4)
    m = tiny.config.margin
    pairs = [(0, 1), (1, 0), (1, 2), (2, 1)]
    hinge = sum(torch.relu(m + cross[i, j] - cross[i, i]) for i, j in pairs) / 4
    assert out.loss.item() == pytest.approx(hinge.item() + tiny.config.l1_weight * _l1_of(tiny, groups_u, groups_p, pairs), rel=1e-4)
    with pytest.raises(ValueError, match="not both"):
        tiny(u_ids, u_mask, p_ids, p_mask, p_ids, p_mask, in_batch_negative_mask=mask)


def _l1_of(model, groups_u, groups_p, pairs):
    used = set(pairs) | {(i, i) for i in range(len(groups_u))}
    total = sum(model.relevance(groups_u[i], groups_p[j]).abs().sum().item() for i, j in used)
    return total / len(used)


def test_softmax_loss_is_cross_entropy_of_the_true_persona(tiny):
    """``loss_type="softmax"``: -log softmax([c_A, c_Z...] / T)[0] + β·L1, in both negative forms."""
    import torch.nn.functional as F

    u_ids, u_mask = _stack(tiny, [UTTS, UTTS[:1]])
    p_ids, p_mask = _stack(tiny, [PERSONA, OTHER])
    n_ids, n_mask = _stack(tiny, [OTHER, PERSONA])
    cfg = tiny.config
    saved = (cfg.loss_type, cfg.loss_temperature, cfg.l1_weight)
    try:
        with torch.no_grad():
            margin_out = tiny(u_ids, u_mask, p_ids, p_mask, n_ids, n_mask)
            cfg.loss_type, cfg.loss_temperature = "softmax", 0.05
            out = tiny(u_ids, u_mask, p_ids, p_mask, n_ids, n_mask)
            l1 = (margin_out.loss - torch.relu(cfg.margin + margin_out.negative_scores[:, 0] - margin_out.scores).mean())
            logits = torch.stack([out.scores, out.negative_scores[:, 0]], dim=1) / 0.05
            ce = F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
            assert out.loss.item() == pytest.approx(ce.item() + l1.item(), rel=1e-4)
            # by hand for one row: log(1 + exp((c_Z - c_A) / T))
            row0 = math.log1p(math.exp((out.negative_scores[0, 0] - out.scores[0]).item() / 0.05))
            assert F.cross_entropy(logits[:1], torch.zeros(1, dtype=torch.long)).item() == pytest.approx(row0, rel=1e-5)

            # in-batch: only the marked distractors enter each row's softmax; a row without any is skipped
            groups_u = [UTTS, UTTS[:1], ["i am a nurse at the hospital"]]
            groups_p = [PERSONA, OTHER, PERSONA]
            bu_ids, bu_mask = _stack(tiny, groups_u)
            bp_ids, bp_mask = _stack(tiny, groups_p)
            mask = torch.tensor([[False, True, False], [True, False, True], [False, False, False]])
            cfg.l1_weight = 0.0
            ib = tiny(bu_ids, bu_mask, bp_ids, bp_mask, in_batch_negative_mask=mask)
            S = ib.pairwise_scores / 0.05
            row_0 = torch.logsumexp(S[0, [0, 1]], 0) - S[0, 0]
            row_1 = torch.logsumexp(S[1, [1, 0, 2]], 0) - S[1, 1]
            assert ib.loss.item() == pytest.approx(((row_0 + row_1) / 2).item(), rel=1e-4)
    finally:
        cfg.loss_type, cfg.loss_temperature, cfg.l1_weight = saved


def test_loss_type_validation(tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        ReceiverConfig(loss_type="hinge")
    with pytest.raises(ValueError, match="loss_temperature"):
        ReceiverConfig(loss_type="softmax", loss_temperature=0)
    cfg = ReceiverConfig(loss_type="softmax", loss_temperature=0.2)
    cfg.save_pretrained(tmp_path)
    back = ReceiverConfig.from_pretrained(tmp_path)
    assert (back.loss_type, back.loss_temperature) == ("softmax", 0.2)
