"""P2Bot Transmitter: formatting, loss, ranking / re-ranking, rewards, self-play, round trips."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from hf_persona.training.common import MANIFEST_NAME
from tests.helpers import run_without_hf_persona
from tests.resume_checks import assert_whole_run_loss


@pytest.fixture(scope="module")
def tok(minilm_path):
    from transformers import AutoTokenizer

    from hf_persona.models.transmitter import prepare_tokenizer

    t = AutoTokenizer.from_pretrained(minilm_path)
    prepare_tokenizer(t)
    return t


def _tiny(tok, **kw):
    from transformers import BertConfig

    from hf_persona.models.transmitter import TransmitterConfig, TransmitterForDialogue

    torch.manual_seed(0)
    cfg = TransmitterConfig(
        backbone_config=BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=256),
        max_context_tokens=96, max_response_tokens=12, **kw)
    model = TransmitterForDialogue(cfg)
    model.adapt_to_tokenizer(tok)
    return model


@pytest.fixture(scope="module")
def tiny(tok):
    return _tiny(tok).eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok, tiny):
    out = tmp_path_factory.mktemp("tiny_transmitter")
    tiny.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


# ---------------------------------------------------------------- formatting
def test_context_format_speakers_and_truncation(tok):
    from hf_persona.models.transmitter import build_context_ids, build_example, special_token_ids

    ids = special_token_ids(tok)
    ctx = build_context_ids(tok, ["i like cats ."], ["hello", "hi there", "what do you do ?"])
    toks = tok.convert_ids_to_tokens(ctx)
    # the answered utterance (last) is the partner's; speakers alternate backwards
    assert toks == ["<persona>", "i", "like", "cats", ".", "<partner>", "hello", "<self>", "hi", "there",
                    "<partner>", "what", "do", "you", "do", "?", "<self>"]
    short = build_context_ids(tok, ["i like cats ."], ["hello", "hi there", "what do you do ?"], max_context_tokens=14)
    assert len(short) <= 14 and short[-1] == ids["self"]
    assert "hello" not in tok.convert_ids_to_tokens(short)  # oldest turn dropped first
    assert "what" in tok.convert_ids_to_tokens(short)
    ex = build_example(tok, ["i like cats ."], ["hi"], "me too")
    n_ctx = ex["context_length"]
    assert ex["input_ids"][-1] == ids["nup"] and ex["cls_index"] == len(ex["input_ids"]) - 1
    assert ex["labels"][:n_ctx] == [-100] * n_ctx and ex["labels"][-1] == -100
    assert ex["labels"][n_ctx:-1] == ex["input_ids"][n_ctx:-1]
    assert ex["labels"][-2] == ids["eos"]
    with pytest.raises(TypeError, match="list of strings"):
        build_context_ids(tok, "i like cats", [])


def test_pad_batch_left_and_right(tok):
    from hf_persona.models.transmitter import pad_batch

    exs = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "cls_index": 2}, {"input_ids": [8], "cls_index": 0}]
    r = pad_batch(exs, 0)
    assert r["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and r["cls_index"].tolist() == [2, 0]
    assert r["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    left = pad_batch(exs, 0, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]] and left["cls_index"].tolist() == [2, 2]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


# ---------------------------------------------------------------- model
def test_loss_is_weighted_sum_with_label_smoothing(tok, tiny):
    from hf_persona.models.transmitter import build_example, pad_batch

    gold = build_example(tok, ["i like cats ."], ["hi , how are you ?"], "good , i love my cat")
    neg = build_example(tok, ["i like cats ."], ["hi , how are you ?"], "the bus is late", with_labels=False)
    gold["nup_label"], neg["nup_label"] = 1, 0
    batch = pad_batch([gold, neg], tok.pad_token_id)
    out = tiny(**batch)
    # reference: label-smoothed CE over labelled tokens (eps = 0.05), plain CE for NUP
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    smooth = -logp.mean(-1)
    eps = 0.05
    lm_ref = (((1 - eps) * nll + eps * smooth) * mask).sum() / mask.sum()
    nup_ref = F.cross_entropy(out.nup_logits, batch["nup_labels"])
    assert torch.allclose(out.lm_loss, lm_ref, atol=1e-5)
    assert torch.allclose(out.nup_loss, nup_ref, atol=1e-6)
    assert torch.allclose(out.loss, 0.6 * lm_ref + 0.4 * nup_ref, atol=1e-5)
    # the NUP head reads the <nup> position: padding after it changes nothing
    b2 = pad_batch([gold], tok.pad_token_id)
    one = tiny(input_ids=b2["input_ids"], attention_mask=b2["attention_mask"], cls_index=b2["cls_index"]).nup_logits
    assert torch.allclose(one[0], out.nup_logits[0], atol=1e-5)


def test_left_padding_and_cache_do_not_change_outputs(tok, tiny):
    from hf_persona.models.transmitter import build_context_ids, pad_batch

    ctx = build_context_ids(tok, ["i like cats ."], ["hi"])
    alone = tiny(input_ids=torch.tensor([ctx])).logits[0, -1]
    batch = pad_batch([{"input_ids": ctx}, {"input_ids": ctx[:3]}], tok.pad_token_id, padding_side="left")
    padded = tiny(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0, -1]
    assert torch.allclose(alone, padded, atol=1e-5)
    x = torch.tensor([ctx])
    a = tiny.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False, use_cache=True)
    b = tiny.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False, use_cache=False)
    assert a.tolist() == b.tolist()


def test_rank_and_rerank_match_definitions(tok, tiny):
    from hf_persona.models.transmitter import (
        build_context_ids,
        build_example,
        encode_response,
        pad_batch,
        special_token_ids,
    )

    persona, history = ["i like cats ."], ["do you have pets ?"]
    cands = ["yes a cat", "no", "i drive a bus every day"]
    scores = tiny.rank_candidates(tok, persona, history, cands)
    for c, s in zip(cands, scores):
        ex = build_example(tok, persona, history, c, 96, 12)
        logits = tiny(**{k: v for k, v in pad_batch([ex], tok.pad_token_id).items() if k != "labels"}).nup_logits
        assert math.isclose(s, torch.log_softmax(logits, -1)[0, 1].item(), abs_tol=1e-5)
    ids = special_token_ids(tok)
    ctx = build_context_ids(tok, persona, history, 96)
    resp = [encode_response(tok, c, 12) for c in cands]
    for alpha in (0.0, 0.1, 1.0):
        total = tiny.rerank_scores(ctx, resp, ids, alpha)
        for i, r in enumerate(resp):
            ex = {"input_ids": ctx + r + [ids["nup"]], "labels": [-100] * len(ctx) + r + [-100],
                  "cls_index": len(ctx) + len(r)}
            out = tiny(input_ids=torch.tensor([ex["input_ids"]]))
            lp = torch.log_softmax(out.logits[0, :-1], -1)
            tok_lp = sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(r))
            expect = alpha * tok_lp / len(r) + (1 - alpha) * torch.log_softmax(out.nup_logits[0], -1)[1].item()
            assert math.isclose(total[i].item(), expect, abs_tol=1e-4)
    reply = tiny.respond(tok, persona, history, num_beams=2, max_new_tokens=6)
    assert isinstance(reply, str)


def test_config_validation(tok):
    from hf_persona.models.transmitter import TransmitterConfig

    with pytest.raises(ValueError, match="lm_weight"):
        TransmitterConfig(lm_weight=1.5)
    with pytest.raises(TypeError, match="backbone_config"):
        TransmitterConfig(backbone_config=3)
    cfg = TransmitterConfig(backbone_config={"model_type": "bert", "hidden_size": 32, "num_attention_heads": 2})
    assert cfg.backbone_config.is_decoder and cfg.hidden_size == 32


def test_learns_lm_and_nup(tok):
    """A few Adam steps on a fixed batch lower both parts of the loss and separate gold from distractor."""
    from hf_persona.models.transmitter import build_example, pad_batch

    model = _tiny(tok)
    exs = []
    for persona, hist, gold, neg in [(["i like cats ."], ["hi"], "i love my cat", "the bus is late"),
                                     (["i am a chef ."], ["what do you do ?"], "i cook food", "blue is nice")]:
        g = build_example(tok, persona, hist, gold)
        n = build_example(tok, persona, hist, neg, with_labels=False)
        g["nup_label"], n["nup_label"] = 1, 0
        exs += [g, n]
    batch = pad_batch(exs, tok.pad_token_id)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = model(**batch)
    for _ in range(40):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    last = model(**batch)
    assert last.lm_loss < 0.5 * first.lm_loss
    assert last.nup_loss < first.nup_loss
    p = torch.softmax(last.nup_logits, -1)[:, 1]
    assert p[0] > p[1] and p[2] > p[3]


# ---------------------------------------------------------------- rewards
def test_repetition_penalty_and_columns():
    import hf_persona
    from hf_persona.plugins import load_plugins

    load_plugins(entry_points=False)
    pen = hf_persona.get_reward("repetition_penalty")
    out = pen(["", "", ""], ["i like cats", "dogs bark", "a b"], history=[["i like cats"], ["i like cats"], ["a c"]])
    assert out == pytest.approx([-1.0, 0.0, -0.5])
    with pytest.raises(ValueError, match="'history' column"):
        pen([""], ["x"])


def test_language_style_and_coherence_rewards(tok, tiny):
    import hf_persona
    from hf_persona.models.transmitter import build_context_ids, special_token_ids

    rs1 = hf_persona.get_reward("language_style", model=tiny, tokenizer=tok)
    texts = ["i like cats", "hello there friend , how are you"]
    batched = rs1(["", ""], texts)
    ids = special_token_ids(tok)
    for text, value in zip(texts, batched):
        prefix = build_context_ids(tok, [], [], 16)
        body = tok.encode(" " + text, add_special_tokens=False) + [ids["eos"]]
        logits = tiny(input_ids=torch.tensor([prefix + body])).logits[0]
        lp = torch.log_softmax(logits[:-1], -1)
        ref = sum(lp[len(prefix) - 1 + j, t].item() for j, t in enumerate(body)) / len(body)
        assert value == pytest.approx(ref, abs=1e-4)
    rs2 = hf_persona.get_reward("discourse_coherence", model=tiny, tokenizer=tok)
    persona, history = [["i like cats ."]] * 2, [["hi"], ["hi", "hello", "pets ?"]]
    got = rs2(["", ""], ["yes a cat", "no"], persona=persona, history=history)
    ref = [tiny.rank_candidates(tok, p, h, [c])[0] for p, h, c in zip(persona, history, ["yes a cat", "no"])]
    assert got == pytest.approx(ref, abs=1e-5)
    half = hf_persona.get_reward("discourse_coherence", model=tiny, tokenizer=tok, form="prob_minus_half")
    assert half([""], ["no"], persona=persona[:1], history=history[:1])[0] == pytest.approx(
        math.exp(rs2([""], ["no"], persona=persona[:1], history=history[:1])[0]) - 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="'persona' column"):
        rs2([""], ["no"], history=[["hi"]])


def test_selfplay_rewards_floor_empty_turns_and_keep_the_other_scores(tok, tiny):
    """build_rewards gives hf_persona.rewards' classes: an empty or blank agent turn scores each reward's
    documented minimum; every other turn scores what the unbounded scorers of hf_persona.rewards.p2bot give."""
    from hf_persona.rewards import p2bot as plain
    from hf_persona.training.selfplay import build_rewards

    names = ["language_style", "discourse_coherence", "repetition_penalty"]
    rewards = build_rewards(names, tiny, tok)
    assert [r.__name__ for r in rewards] == names
    completions = ["yes a cat", "", "i like cats", "  "]
    persona = [["i like cats ."]] * 4
    history = [["hi"], ["hi", "hello", "pets ?"], ["i like cats"], ["hello"]]
    unbounded = [plain.LanguageStyleScore(model=tiny, tokenizer=tok),
                 plain.DiscourseCoherenceScore(model=tiny, tokenizer=tok), plain.RepetitionScore()]
    for reward, reference, minimum in zip(rewards, unbounded, (-20.0, -20.0, -1.0)):
        got = reward([""] * 4, completions, persona=persona, history=history)
        assert got[1] == minimum and got[3] == minimum
        expected = reference([""] * 2, completions[0::2], persona=persona[0::2], history=history[0::2])
        assert [got[0], got[2]] == pytest.approx(expected, abs=1e-5)
    assert unbounded[2]([""], [""], history=[["hi"]]) == [-0.0]  # without the floor, saying nothing repeats nothing
    assert unbounded[0]([""], [""])[0] > -20.0  # ... and the end-of-sequence token alone scores above the floor
    half = build_rewards(["discourse_coherence"], tiny, tok, coherence_form="prob_minus_half")[0]
    got = half([""] * 2, ["", "no"], persona=persona[:2], history=history[:2])
    assert got[0] == -0.5 and got[1] == pytest.approx(
        plain.DiscourseCoherenceScore(model=tiny, tokenizer=tok, form="prob_minus_half")(
            [""], ["no"], persona=persona[1:2], history=history[1:2])[0], abs=1e-6)


@pytest.fixture(scope="module")
def receiver(tiny_bert_dir):
    from hf_persona.models.receiver import ReceiverModel

    torch.manual_seed(0)
    return ReceiverModel.from_encoder_pretrained(tiny_bert_dir).eval()


def test_selfplay_columns_give_eq8_through_receiver_plugin(receiver):
    """RS.3 of each agent turn, via the Receiver plugin's discounted mode on our episode columns,
    equals eq. 8 assembled by hand from per-utterance scores."""
    from hf_persona.training.selfplay import episode_columns, persona_scorer_from_receiver

    ep = {"agent_persona": ["i like cats ."], "user_persona": ["i drive a bus ."],
          "user_utterances": ["hi !", "do you drive ?", "a bus !"], "agent_utterances": ["cats !", "i like it", "ok"],
          "histories": [["hi !"], ["hi !", "cats !", "do you drive ?"], ["hi !", "cats !", "do you drive ?",
                                                                         "i like it", "a bus !"]],
          "context_ids": [[1]] * 3, "response_ids": [[2]] * 3}
    cols = episode_columns([ep])
    assert cols["future_turns"] == [["do you drive ?", "i like it", "a bus !", "ok"], ["a bus !", "ok"], []]
    completions = cols.pop("completion")
    rs3 = persona_scorer_from_receiver(receiver, gamma=0.5)([""] * 3, completions, **cols)
    turn = persona_scorer_from_receiver(receiver, mode="turn")
    a = turn([""] * 3, ep["agent_utterances"], persona=[ep["agent_persona"]] * 3)
    u = turn([""] * 3, ep["user_utterances"], persona=[ep["user_persona"]] * 3)
    g = 0.5
    expect = [a[0] + g * u[1] + g**2 * a[1] + g**3 * u[2] + g**4 * a[2], a[1] + g * u[2] + g**2 * a[2], a[2]]
    assert rs3 == pytest.approx(expect, abs=1e-5)


def test_leave_one_out_scaling_identity():
    g = 6
    r = torch.randn(g)
    loo = r - (r.sum() - r) / (g - 1)
    assert torch.allclose(loo, (r - r.mean()) * g / (g - 1), atol=1e-6)


# ---------------------------------------------------------------- self-play
def test_simulate_episodes_structure(tok, tiny):
    from hf_persona.training.selfplay import episode_columns, simulate_episodes

    seeds = [{"user_persona": ["i drive a bus ."], "agent_persona": ["i like cats ."], "first_utterance": "hi !"},
             {"user_persona": ["i cook ."], "agent_persona": ["i swim ."], "first_utterance": "hello , how are you ?"}]
    torch.manual_seed(0)
    eps = simulate_episodes(tiny, tiny, tok, seeds, turns=3, max_new_tokens=4)
    for e, s in zip(eps, seeds):
        assert e["user_utterances"][0] == s["first_utterance"]
        assert len(e["user_utterances"]) == 3 and len(e["agent_utterances"]) == 3
        for n in range(3):
            assert len(e["histories"][n]) == 2 * n + 1
            assert e["histories"][n][-1] == e["user_utterances"][n]
            assert len(e["response_ids"][n]) <= 4
    cols = episode_columns(eps)
    assert cols["turn"] == [0, 1, 2, 0, 1, 2] and cols["persona"][3] == ["i swim ."]
    assert cols["partner_persona"][3] == ["i cook ."] and len(cols["future_turns"][0]) == 4


def test_evaluate_selfplay_means(tok, tiny, receiver):
    from hf_persona.training.selfplay import (
        episode_columns,
        evaluate_selfplay,
        persona_scorer_from_receiver,
        simulate_episodes,
    )

    seeds = [{"user_persona": ["i drive a bus ."], "agent_persona": ["i like cats ."], "first_utterance": "hi !"}]
    got = evaluate_selfplay(tiny, tiny, tok, seeds, receiver, turns=2, seed=3, max_new_tokens=4)
    torch.manual_seed(3)
    cols = episode_columns(simulate_episodes(tiny, tiny, tok, seeds, turns=2, max_new_tokens=4))
    comps = cols.pop("completion")
    rs3 = persona_scorer_from_receiver(receiver)(["", ""], comps, **cols)
    assert got["persona_reward"] == pytest.approx(sum(rs3) / 2, abs=1e-5) and got["episodes"] == 1


def test_selfplay_trains_and_resumes(tmp_path, tiny_dir, receiver):
    from hf_persona.data import sample_path
    from hf_persona.training.selfplay import train_selfplay

    out = tmp_path / "sp"
    kw = dict(train_data=sample_path("personachat"), dev_from=None, receiver=receiver,
              episodes_per_seed=1, learning_rate=1e-3, save_steps=1, max_new_tokens=4)
    first = train_selfplay(tiny_dir, out, max_steps=1, **kw)
    assert first["global_step"] == 1 and first["rewards"][2] == "persona_perception"
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert (out / "checkpoint-1" / MANIFEST_NAME).is_file()  # saved through train_resumable
    second = train_selfplay(tiny_dir, out, max_steps=2, baseline="leave_one_out", **kw)
    assert second["resumed_from"].endswith("checkpoint-1") and second["global_step"] == 2
    # train_loss: the mean over both steps, not the resumed segment's (step 2) alone
    assert_whole_run_loss(second["train_loss"], out / "checkpoint-2", 1)
    from hf_persona.models.transmitter import TransmitterForDialogue

    before = TransmitterForDialogue.from_pretrained(tiny_dir)
    after = TransmitterForDialogue.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


def test_selfplay_kl_penalty_builds_a_reference_and_logs_kl(tmp_path, tiny_dir, receiver):
    from hf_persona.data import sample_path
    from hf_persona.errors import HFPersonaError
    from hf_persona.training.selfplay import train_selfplay

    kw = dict(train_data=sample_path("personachat"), dev_from=None, receiver=receiver, episodes_per_seed=1,
              learning_rate=1e-2, save_steps=10, max_new_tokens=4, resume=False)
    plain = train_selfplay(tiny_dir, tmp_path / "plain", max_steps=2, **kw)
    assert plain["kl_beta"] == 0.0 and "kl.last" not in plain
    kl = train_selfplay(tiny_dir, tmp_path / "kl", max_steps=2, kl_beta=0.5, **kw)
    # step 1 starts from the reference itself (KL 0); after one large update the policy has moved away
    assert kl["kl_beta"] == 0.5 and kl["kl.first"] == pytest.approx(0.0, abs=1e-6) and kl["kl.last"] > 0
    with pytest.raises(HFPersonaError, match="kl_beta = -0.1: expected a finite number >= 0"):
        train_selfplay(tiny_dir, tmp_path / "bad", max_steps=1, kl_beta=-0.1, **kw)


def test_selfplay_several_seeds_per_step_each_rollout_is_one_seed_group(tmp_path, tiny_dir, receiver, monkeypatch):
    """seeds_per_step=2: one optimisation step plays two different seed dialogues (each its own
    baseline group of turns × episodes_per_seed completions)."""
    from hf_persona.data import sample_path
    from hf_persona.training import selfplay

    played = []
    real = selfplay.simulate_episodes

    def spy(agent, user, tokenizer, seeds, **kw):
        played.append([s["first_utterance"] for s in seeds])
        return real(agent, user, tokenizer, seeds, **kw)

    monkeypatch.setattr(selfplay, "simulate_episodes", spy)
    summary = selfplay.train_selfplay(tiny_dir, tmp_path / "sp2", train_data=sample_path("personachat"), dev_from=None,
                                      receiver=receiver, episodes_per_seed=2, seeds_per_step=2, learning_rate=1e-3,
                                      save_steps=10, max_new_tokens=3, resume=False, max_steps=1)
    assert summary["episodes"] == 4 and summary["global_step"] == 1
    assert len(played) == 1 and len(played[0]) == 4
    first, second = played[0][:2], played[0][2:]
    assert first[0] == first[1] and second[0] == second[1] and first[0] != second[0]


def test_selfplay_sft_weight_adds_the_supervised_loss_of_real_turns(tmp_path, tiny_dir, receiver):
    """With every sampled turn cut and masked, the policy-gradient part of the loss is empty, so
    the only thing that moves the weights is sft_weight × the supervised loss; the loss logged at
    step 1 is the starting model's supervised loss on the first batch, computed here by hand."""
    from hf_persona.data import sample_path
    from hf_persona.errors import HFPersonaError
    from hf_persona.models.transmitter import TransmitterForDialogue
    from hf_persona.training.selfplay import supervised_batches, train_selfplay
    from hf_persona.training.transmitter import load_transmitter, training_dialogues

    data = sample_path("personachat")
    kw = dict(train_data=data, dev_from=None, receiver=receiver, episodes_per_seed=1, learning_rate=1e-2,
              save_steps=10, max_new_tokens=3, resume=False, mask_truncated=True, max_steps=2)
    got = train_selfplay(tiny_dir, tmp_path / "anchored", sft_weight=0.5, sft_batch_size=3, **kw)
    model, tok = load_transmitter(tiny_dir)
    first = next(supervised_batches(training_dialogues(data, None), tok, model.config, 3, seed=0))
    assert first["input_ids"].shape[0] == 6  # 3 real turns + 3 distractors
    with torch.no_grad():
        expected = model.eval()(**first).loss.item()
    assert got["sft_weight"] == 0.5 and got["sft_loss.first"] == pytest.approx(expected, rel=1e-4)
    assert got["sft_loss.last"] != got["sft_loss.first"]
    start = TransmitterForDialogue.from_pretrained(tiny_dir)
    after = TransmitterForDialogue.from_pretrained(tmp_path / "anchored")
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), after.parameters()))
    for bad in (-1.0, "1", True):
        with pytest.raises(HFPersonaError, match="sft_weight = .*: expected a finite number >= 0"):
            train_selfplay(tiny_dir, tmp_path / "bad", sft_weight=bad, **kw)
    with pytest.raises(HFPersonaError, match="sft_batch_size = 0: expected an integer >= 1"):
        train_selfplay(tiny_dir, tmp_path / "bad", sft_weight=1.0, sft_batch_size=0, **kw)
    with pytest.raises(HFPersonaError, match="hold only"):
        supervised_batches(training_dialogues(data, None), tok, model.config, 10 ** 6)


def test_selfplay_mask_truncated_leaves_cut_turns_out_of_the_loss(tmp_path, tiny_dir, receiver):
    """A random tiny agent never says <eos> within 3 tokens: every turn is cut, so with masking
    the loss has no tokens and the weights stay exactly as they were (without it they move)."""
    from hf_persona.data import sample_path
    from hf_persona.models.transmitter import TransmitterForDialogue
    from hf_persona.training.selfplay import train_selfplay

    kw = dict(train_data=sample_path("personachat"), dev_from=None, receiver=receiver, episodes_per_seed=1,
              learning_rate=1e-2, save_steps=10, max_new_tokens=3, resume=False, max_steps=1)
    masked = train_selfplay(tiny_dir, tmp_path / "masked", mask_truncated=True, **kw)
    assert masked["mask_truncated"] is True
    start = TransmitterForDialogue.from_pretrained(tiny_dir)
    after = TransmitterForDialogue.from_pretrained(tmp_path / "masked")
    assert all(torch.equal(a, b) for a, b in zip(start.parameters(), after.parameters()))
    train_selfplay(tiny_dir, tmp_path / "plain", **kw)
    moved = TransmitterForDialogue.from_pretrained(tmp_path / "plain")
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), moved.parameters()))


# ---------------------------------------------------------------- training / CLI / hub
def test_supervised_training_resumes(tmp_path, tiny_dir):
    from hf_persona.data import sample_path
    from hf_persona.training.transmitter import train_transmitter

    out = tmp_path / "sft"
    s1 = train_transmitter(out, train_data=sample_path("personachat"), backbone=tiny_dir, max_steps=2, batch_size=2,
                           save_steps=2, max_context_tokens=64)
    assert s1["global_step"] == 2 and (out / "model.safetensors").is_file()
    assert s1["resumed_from"] is None and (out / "checkpoint-2" / MANIFEST_NAME).is_file()
    s2 = train_transmitter(out, train_data=sample_path("personachat"), backbone=tiny_dir, max_steps=3, batch_size=2,
                           save_steps=2, max_context_tokens=64)
    assert s2["resumed_from"].endswith("checkpoint-2") and s2["global_step"] == 3
    # logging_steps=10: only the saves log (steps 2 and 3); the summary's loss covers steps 1-3
    losses = assert_whole_run_loss(s2["train_loss"], out / "checkpoint-3", 2)
    assert s2["train_loss"] != pytest.approx(losses[3], rel=1e-4)  # not the last segment's


def test_eval_cli_writes_json(tmp_path, tiny_dir):
    from hf_persona.cli import main
    from hf_persona.data import sample_path

    out = tmp_path / "m.json"
    main(["eval", "transmitter", "--model", tiny_dir, "--data", str(sample_path("personachat")), "--dev-from", "30",
          "--max-examples", "4", "--candidates", "5", "--json", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["n_examples"] == 4 and metrics["n_candidates"] == 5
    assert 0 <= metrics["hits@1"] <= 100 and 0 <= metrics["f1"] <= 100 and metrics["ppl"] > 1
    with pytest.raises(SystemExit) as exc:  # a bad option fails before any model loads
        main(["eval", "transmitter", "--model", tiny_dir, "--data", str(sample_path("personachat")),
              "--max-examples", "0"])
    assert exc.value.code == 2


def test_auto_registration_and_safetensors(tiny_dir):
    from pathlib import Path

    import transformers

    from hf_persona.plugins import get_model_spec

    spec = get_model_spec("transmitter")
    assert spec.auto_class == "AutoModelForCausalLM"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert type(model).__name__ == "TransmitterForDialogue"
    files = {p.name for p in Path(tiny_dir).iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"modeling_transmitter.py", "configuration_transmitter.py", "processing_transmitter.py"} <= files


def test_trust_remote_code_round_trip_with_generate(tok, tiny, tiny_dir):
    from hf_persona.models.transmitter import build_example, pad_batch

    ex = build_example(tok, ["i like cats ."], ["hi , do you have pets ?"], "yes a cat")
    batch = pad_batch([ex], tok.pad_token_id)
    ctx = torch.tensor([ex["input_ids"][: ex["context_length"]]])
    with torch.no_grad():
        ref = tiny(input_ids=batch["input_ids"], cls_index=batch["cls_index"])
        gen = tiny.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=5, do_sample=False)
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained({tiny_dir!r}, trust_remote_code=True).eval()
t = AutoTokenizer.from_pretrained({tiny_dir!r}, trust_remote_code=True)
x = torch.tensor({batch['input_ids'].tolist()})
with torch.no_grad():
    o = m(input_ids=x, cls_index=torch.tensor({batch['cls_index'].tolist()}))
    ctx = torch.tensor({ctx.tolist()})
    g = m.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=5, do_sample=False)
print(json.dumps({{"cls": type(m).__name__, "logits": o.logits[0, -3].tolist()[:50], "nup": o.nup_logits[0].tolist(),
                  "gen": g.tolist(), "vocab": len(t)}}))
"""
    got = json.loads(run_without_hf_persona(code).strip().splitlines()[-1])
    assert got["cls"] == "TransmitterForDialogue" and got["vocab"] == len(tok)
    assert torch.allclose(torch.tensor(got["logits"]), ref.logits[0, -3, :50], atol=1e-4)
    assert torch.allclose(torch.tensor(got["nup"]), ref.nup_logits[0], atol=1e-4)
    assert got["gen"] == gen.tolist()


def test_peft_lora_trains_adapters_only(tok):
    from peft import LoraConfig, get_peft_model

    from hf_persona.models.transmitter import build_example, pad_batch

    model = _tiny(tok)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                  modules_to_save=["nup_head"]))
    g = build_example(tok, ["i like cats ."], ["hi"], "i love my cat")
    n = build_example(tok, ["i like cats ."], ["hi"], "the bus", with_labels=False)
    g["nup_label"], n["nup_label"] = 1, 0
    batch = pad_batch([g, n], tok.pad_token_id)
    frozen = {k: v.clone() for k, v in peft_model.named_parameters() if not v.requires_grad}
    opt = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    first = peft_model(**batch).loss.item()
    for _ in range(15):
        opt.zero_grad()
        loss = peft_model(**batch).loss
        loss.backward()
        lora_grads = [p.grad for k, p in peft_model.named_parameters() if "lora_" in k]
        assert lora_grads and all(gr is not None for gr in lora_grads)
        opt.step()
    assert peft_model(**batch).loss.item() < first
    for k, v in peft_model.named_parameters():
        if k in frozen:
            assert torch.equal(v, frozen[k])


def test_model_card_renders(tiny_dir):
    from hf_persona.hub import MODEL_CARDS_DIR, render_card

    template = MODEL_CARDS_DIR / "transmitter.md"
    card = render_card(template, repo_id="me/p2bot-tx", base_model="minilm",
                       metrics={"hits@1": 12.5, "f1": 11.0, "ppl": 80.0})
    assert card.startswith("---\nlibrary_name: transformers")
    assert "me/p2bot-tx" in card and "12.5" in card and "trust_remote_code=True" in card


def test_cli_weights_parsing_and_missing_receiver(tiny_dir, tmp_path):
    from hf_persona.cli import main
    from hf_persona.commands.transmitter import parse_weights

    assert parse_weights("rs1=0.4, rs2=0.1,penalty=0.2") == {"language_style": 0.4, "discourse_coherence": 0.1,
                                                             "repetition_penalty": 0.2}
    with pytest.raises(ValueError, match="unknown reward 'fluency'"):
        parse_weights("fluency=1")
    with pytest.raises(ValueError, match="needs a number"):
        parse_weights("rs1=high")
    with pytest.raises(SystemExit) as exc:  # RS.3 in the default weights but no Receiver given
        main(["train", "selfplay", "--model", tiny_dir, "--output-dir", str(tmp_path / "o"), "--max-steps", "1"])
    assert exc.value.code == 2


def test_old_plugin_import_path_still_works_with_a_deprecation_warning():
    from tests.helpers import assert_names_moved

    assert_names_moved("hf_persona.default_plugins.transmitter", dict.fromkeys(
        ("train_transmitter_cmd", "train_selfplay_cmd", "eval_transmitter_cmd"), "hf_persona.commands.transmitter"))


def test_repetition_penalty_factory_takes_no_options():
    from hf_persona.errors import HFPersonaError
    from hf_persona.rewards import repetition_penalty

    assert type(repetition_penalty()).__name__ == "RepetitionPenalty"
    with pytest.raises(HFPersonaError, match="takes no options"):
        repetition_penalty(gamma=1)
