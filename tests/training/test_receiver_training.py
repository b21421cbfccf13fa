"""Receiver data pipeline, τ schedule, Trainer recipe (eval, best checkpoint, resume), probe and baselines."""

import json

import numpy as np
import pytest
import torch

from hf_persona.data import read_personachat, sample_path, split_by_dialogue
from hf_persona.errors import HFPersonaError
from hf_persona.evaluation.receiver_probe import (
    ReceiverScorer,
    TfidfScorer,
    build_probe_items,
    run_probe,
    shares_sentence,
)
from hf_persona.training.common import MANIFEST_NAME
from hf_persona.training.receiver import (
    ReceiverCollator,
    ReceiverPairDataset,
    TauAnnealingCallback,
    Tokenized,
    dialogue_sides,
    grouped_sides,
    linear_tau,
    train_receiver,
)
from tests.resume_checks import assert_whole_run_loss


@pytest.fixture(scope="module")
def sample():
    return read_personachat(sample_path("personachat"))


def test_dialogue_sides_split_speakers(sample):
    ex = dialogue_sides(sample)
    row = sample[0]
    you = [e for e in ex if e["dialogue_id"] == row["dialogue_id"] and e["side"] == "you"][0]
    partner = [e for e in ex if e["dialogue_id"] == row["dialogue_id"] and e["side"] == "partner"][0]
    assert you["utterances"] == [u for u, s in zip(row["utterances"], row["speakers"]) if s == "you"]
    assert you["persona"] == row["your_persona"] and partner["persona"] == row["partner_persona"]
    assert partner["utterances"] == [u for u, s in zip(row["utterances"], row["speakers"]) if s == "partner" and u]
    only_you = dialogue_sides(sample, sides=["you"])
    assert len(only_you) == len(sample) and {e["side"] for e in only_you} == {"you"}
    single = dialogue_sides([{"utterances": ["a b", ""], "persona": ["x"]}, {"utterances": [], "persona": ["y"]}])
    assert len(single) == 1 and single[0]["utterances"] == ["a b"]  # empty utterance and empty side dropped
    with pytest.raises(HFPersonaError, match="columns"):
        dialogue_sides([{"text": "hi"}])
    with pytest.raises(HFPersonaError, match="side"):
        dialogue_sides(sample, sides=["me"])


def test_distractors_never_equal_the_true_persona_as_a_set(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    base = [{"utterances": [f"u{i}"], "persona": [f"a{i % 3}", f"b{i % 3}"], "group": 0} for i in range(9)]
    # the same persona in shuffled order is the same persona
    base.append({"utterances": ["u9"], "persona": ["b0", "a0"], "group": 0})
    other_group = [{"utterances": ["v"], "persona": ["z1"], "group": 1}, {"utterances": ["w"], "persona": ["z2"], "group": 1}]
    ds = ReceiverPairDataset(base + other_group, Tokenized(tok, 16, 16), num_negatives=1, seed=0)
    for _ in range(5):
        for i, e in enumerate(base + other_group):
            neg = ds._draw(e, ds.rng)[0]
            assert frozenset(neg) != frozenset(e["persona"])
            assert frozenset(neg) in {frozenset(x["persona"]) for x in (base + other_group) if x["group"] == e["group"]}
    fixed1 = ReceiverPairDataset(base, Tokenized(tok, 16, 16), num_negatives=2, seed=3, fixed=True)
    fixed2 = ReceiverPairDataset(base, Tokenized(tok, 16, 16), num_negatives=2, seed=3, fixed=True)
    assert fixed1.fixed == fixed2.fixed
    with pytest.raises(HFPersonaError, match="distinct personas"):
        ReceiverPairDataset(base, Tokenized(tok, 16, 16), num_negatives=3)


def test_shares_sentence_by_hand():
    assert shares_sentence(["i like tacos.", "i live in alabama."], ("i live in alabama.", "i love dogs."))
    assert shares_sentence(frozenset({"a"}), frozenset({"b", "a"}))
    assert not shares_sentence(["i like tacos."], ["i like taco."])  # exact sentences only
    assert not shares_sentence([], ["a"])


def test_persona_versions_sharing_sentences_are_not_distractors(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    # "five" and "four" are two versions of one persona (PERSONA-CHAT keeps both); x and y are other people
    five = {"utterances": ["u0"], "persona": ["a", "b", "c", "d", "e"], "group": 0}
    four = {"utterances": ["u1"], "persona": ["b", "a", "c", "d"], "group": 0}
    others = [{"utterances": [f"v{i}"], "persona": [f"x{i}", f"y{i}"], "group": 0} for i in range(3)]
    examples = [five, four] + others
    ds = ReceiverPairDataset(examples, Tokenized(tok, 16, 16), num_negatives=2, seed=0)
    legacy = ReceiverPairDataset(examples, Tokenized(tok, 16, 16), num_negatives=2, seed=0,
                                 allow_shared_sentences=True)
    drawn_legacy = set()
    for _ in range(40):
        for e in (five, four):
            for neg in ds._draw(e, ds.rng):
                assert not set(neg) & set(e["persona"])
            drawn_legacy |= {frozenset(n) for n in legacy._draw(e, legacy.rng)}
    assert frozenset(four["persona"]) in drawn_legacy and frozenset(five["persona"]) in drawn_legacy
    # three negatives: each version has only the three other people left -> fine; four -> clear error
    ReceiverPairDataset(examples, Tokenized(tok, 16, 16), num_negatives=3, seed=0)
    with pytest.raises(HFPersonaError, match="share no sentence"):
        ReceiverPairDataset(examples, Tokenized(tok, 16, 16), num_negatives=4, seed=0)
    ReceiverPairDataset(examples, Tokenized(tok, 16, 16), num_negatives=4, seed=0, allow_shared_sentences=True)


def test_collator_shapes_and_masks():
    items = [
        {"utterances": [[101, 7, 102]], "persona": [[101, 5, 102], [101, 6, 6, 102]], "negatives": [[[101, 9, 102]]]},
        {"utterances": [[101, 8, 102], [101, 102]], "persona": [[101, 4, 102]], "negatives": [[[101, 3, 3, 3, 102]]]},
    ]
    b = ReceiverCollator(pad_token_id=0)(items)
    assert b["utterance_input_ids"].shape == (2, 2, 3)
    assert b["persona_input_ids"].shape == (2, 2, 4)
    assert b["negative_persona_input_ids"].shape == (2, 1, 1, 5)
    assert b["utterance_attention_mask"][0, 1].sum() == 0  # padding slot
    assert b["persona_attention_mask"][0].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert b["negative_persona_input_ids"][1, 0, 0].tolist() == [101, 3, 3, 3, 102]


def test_collator_in_batch_negative_mask():
    def item(group, persona):
        return {"utterances": [[101, 102]], "persona": [[101, 5, 102]], "negatives": [], "key": (group, frozenset(persona))}

    items = [item(0, ["a", "b"]), item(0, ["b", "a"]), item(0, ["c"]), item(1, ["c"]), item(0, ["a", "d"])]
    b = ReceiverCollator()(items)
    assert "negative_persona_input_ids" not in b
    # same persona in another order (0, 1) is not a distractor, nor is another group's persona (2, 3),
    # nor a persona sharing a sentence ("a": 0/1 and 4)
    assert b["in_batch_negative_mask"].tolist() == [
        [False, False, True, False, False],
        [False, False, True, False, False],
        [True, True, False, False, True],
        [False, False, False, False, False],
        [False, False, True, False, False],
    ]
    legacy = ReceiverCollator(allow_shared_sentences=True)(items)["in_batch_negative_mask"]
    assert legacy[0].tolist() == [False, False, True, False, True] and legacy[4].tolist() == [True, True, True, False, False]


def test_linear_tau_schedule():
    assert linear_tau(0, 20, 10.0, 0.5) == 10.0
    assert linear_tau(19, 20, 10.0, 0.5) == pytest.approx(0.5)
    assert linear_tau(10, 21, 10.0, 0.5) == pytest.approx(5.25)
    assert linear_tau(50, 20, 10.0, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TauAnnealingCallback(start=0)


def test_train_eval_best_checkpoint_resume_and_tau(tiny_bert_dir, tmp_path, sample):
    train, dev = split_by_dialogue(sample, first=28)
    out = tmp_path / "run"
    metrics = train_receiver(train, out, backbone=tiny_bert_dir, eval_ds=dev, max_steps=4, batch_size=8,
                             eval_steps=2, logging_steps=1, resume=False, progress=False)
    model = metrics.model  # a RecipeResult: the metrics, the output folder and the trained model
    assert metrics.output_dir == out and dict(metrics) == json.loads((out / "receiver_train_results.json").read_text())
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    taus = [h["tau"] for h in state["log_history"] if "loss" in h]
    # τ before each optimizer step: 10 → 0.5 linearly over 4 steps (logged after steps 1..4)
    assert taus == pytest.approx([10.0, 10 - 9.5 / 3, 10 - 2 * 9.5 / 3, 0.5], abs=1e-3)
    assert model.tau == 0.5 and json.loads((out / "config.json").read_text())["tau"] == 0.5
    assert metrics["best_checkpoint"] in (str(out / "checkpoint-2"), str(out / "checkpoint-4"))
    assert 0.0 <= metrics["eval_hits_at_1"] <= 1.0 and metrics["global_step"] == 4
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "receiver_train_results.json").read_text())["global_step"] == 4
    assert metrics["resumed_from"] is None and (out / "checkpoint-4" / MANIFEST_NAME).is_file()
    # resume: a longer run continues from the newest complete checkpoint, the τ schedule follows
    metrics = train_receiver(train, out, backbone=tiny_bert_dir, eval_ds=dev, max_steps=6, batch_size=8,
                             eval_steps=2, logging_steps=1, resume=True, progress=False)
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    steps_logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert metrics["global_step"] == 6 and steps_logged[-2:] == [5, 6]
    assert [h["tau"] for h in state["log_history"] if "loss" in h][-1] == pytest.approx(0.5)
    # train_loss is the mean over all 6 steps (trained through train_resumable), not over steps 5-6
    assert metrics["resumed_from"] == str(out / "checkpoint-4")
    losses = assert_whole_run_loss(metrics["train_loss"], out / "checkpoint-6", 4)
    assert metrics["segment_train_loss"] == pytest.approx((losses[5] + losses[6]) / 2, rel=1e-6)
    assert json.loads((out / "receiver_train_results.json").read_text())["train_loss"] == metrics["train_loss"]


def test_full_finetune_loss_goes_down(tiny_bert_dir, sample):
    from transformers import AutoTokenizer

    from hf_persona.models.receiver import ReceiverModel

    torch.manual_seed(0)
    model = ReceiverModel.from_encoder_pretrained(tiny_bert_dir)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ds = ReceiverPairDataset(grouped_sides(sample), Tokenized(tok, 32, 16), num_negatives=1, seed=0, fixed=True)
    batch = ReceiverCollator()([ds[i] for i in range(6)])
    model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ----------------------------------------------------------------------------- probe
class _FixedScorer:
    """Scores from a lookup: persona scores per item, sentence scores by sentence text."""

    def __init__(self, persona, sentence):
        self.persona, self.sentence = persona, sentence

    def prepare(self, items):
        pass

    def persona_scores(self, item):
        return np.asarray(self.persona[item["utterances"][0]])

    def sentence_scores(self, item, sentences):
        return np.asarray([self.sentence[s] for s in sentences])


def test_run_probe_hits_and_mrr_by_hand():
    items = [
        {"utterances": ["q1"], "candidates": [("t1", "t2"), ("d1",), ("d2",)]},
        {"utterances": ["q2"], "candidates": [("t3",), ("d1",), ("d2",)]},
    ]
    persona = {"q1": [0.9, 0.1, 0.2], "q2": [0.5, 0.5, 0.1]}  # q2: tie -> counted as a miss
    sentence = {"t1": 3.0, "t2": 1.0, "d1": 2.0, "d2": 0.0, "t3": -1.0}
    r = run_probe(items, _FixedScorer(persona, sentence))
    assert r["hits@1"] == 0.5
    # item 1: t1 rank 1, t2 rank 3 (t1, d1 above); item 2: t3 rank 3 -> mean(1, 1/3, 1/3)
    assert r["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert r["pairs"] == 6
    assert (r["misses"], r["ties"], r["misses_to_a_version"]) == (1, 1, 0)
    assert r["items_with_a_version"] == 0
    # the same scores when the second item's tying distractor is another version of its persona
    items[1]["candidates"][1] = ("t3", "x")
    sentence["x"] = 0.0
    r = run_probe(items, _FixedScorer(persona, sentence))
    assert (r["misses"], r["ties"], r["misses_to_a_version"]) == (1, 1, 1)
    assert r["items_with_a_version"] == 1


def test_build_probe_items_is_seeded_and_clean(sample):
    ex = dialogue_sides(sample)
    a = build_probe_items(ex, num_candidates=8, seed=1)
    b = build_probe_items(ex, num_candidates=8, seed=1)
    c = build_probe_items(ex, num_candidates=8, seed=2)
    assert [x["candidates"] for x in a] == [x["candidates"] for x in b]
    assert [x["candidates"] for x in a] != [x["candidates"] for x in c]
    for it in a:
        assert list(it["candidates"][0]) == it["persona"]
        keys = [frozenset(p) for p in it["candidates"]]
        assert len(set(keys)) == 8  # distinct, none equal to the true persona
    with pytest.raises(HFPersonaError, match="distractor personas"):
        build_probe_items(ex, num_candidates=500)


def test_probe_distractors_share_no_sentence_with_the_true_persona():
    five = {"utterances": ["u0"], "persona": ["a", "b", "c", "d", "e"]}
    four = {"utterances": ["u1"], "persona": ["a", "b", "c", "d"]}
    others = [{"utterances": [f"v{i}"], "persona": [f"x{i}"]} for i in range(6)]
    items = build_probe_items([five, four] + others, num_candidates=7, seed=0)
    for it in items:
        assert not any(shares_sentence(c, it["candidates"][0]) for c in it["candidates"][1:])
    assert {frozenset(c) for c in items[0]["candidates"][1:]} == {frozenset(o["persona"]) for o in others}
    # the older protocol lets the other version in (7 distinct personas are left for each side)
    legacy = build_probe_items([five, four] + others, num_candidates=8, seed=0, allow_shared_sentences=True)
    assert frozenset(four["persona"]) in {frozenset(c) for c in legacy[0]["candidates"]}
    with pytest.raises(HFPersonaError, match="share no sentence"):
        build_probe_items([five, four] + others, num_candidates=8, seed=0)


def test_tfidf_scorer_by_hand():
    items = [{"utterances": ["i love dogs"], "candidates": [("dogs are great",), ("i hate cats",)]}]
    s = TfidfScorer()
    s.prepare(items)
    # documents: "i love dogs", "dogs are great", "i hate cats": df(dogs)=2, df(i)=2, df(love)=1 ...
    idf = lambda df: np.log(4 / (1 + df)) + 1  # noqa: E731
    assert s.idf["dogs"] == pytest.approx(idf(2)) and s.idf["love"] == pytest.approx(idf(1))
    q = np.array([idf(2), idf(1), idf(2)])  # i, love, dogs
    d1 = np.array([idf(2), idf(1), idf(1)])  # dogs, are, great
    expected = idf(2) * idf(2) / (np.linalg.norm(q) * np.linalg.norm(d1))
    scores = s.persona_scores(items[0])
    assert scores[0] == pytest.approx(expected)
    assert scores[0] > 0 and scores[1] > 0  # "i" is shared with the second persona
    assert s.sentence_scores(items[0], ["zebra"])[0] == 0.0


def test_receiver_scorer_matches_model_scores(tiny_bert_dir, sample):
    from hf_persona.models.receiver import ReceiverModel

    model = ReceiverModel.from_encoder_pretrained(tiny_bert_dir).eval()
    items = build_probe_items(dialogue_sides(sample)[:10], num_candidates=4, seed=0)
    scorer = ReceiverScorer(model)
    scorer.prepare(items)
    for it in items[:3]:
        direct = model.score_batch([it["utterances"]] * 4, [list(c) for c in it["candidates"]])
        assert np.allclose(scorer.persona_scores(it), direct.numpy(), atol=1e-4)
        sents = list(it["candidates"][1])
        single = [model.score(it["utterances"], [s]) for s in sents]
        assert np.allclose(scorer.sentence_scores(it, sents), single, atol=1e-4)


def test_real_data_probe_items(shared_data):
    ds = read_personachat(shared_data / "personachat" / "valid_both_revised_no_cands.txt")
    sides = dialogue_sides(ds.select(range(800, 1000)))
    items = build_probe_items(sides, num_candidates=32, seed=0)
    assert len(items) == 400
    for it in items:
        assert len({frozenset(p) for p in it["candidates"]}) == 32
        assert not any(shares_sentence(c, it["candidates"][0]) for c in it["candidates"][1:])
    # the older protocol drew another version of the true persona for many items (88+ on this split)
    legacy = build_probe_items(sides, num_candidates=32, seed=0, allow_shared_sentences=True)
    versions = sum(any(shares_sentence(c, it["candidates"][0]) for c in it["candidates"][1:]) for it in legacy)
    assert versions > 40


def test_in_batch_training_runs_and_rejects_unknown_mode(tiny_bert_dir, tmp_path, sample):
    metrics = train_receiver(sample, tmp_path / "ib", backbone=tiny_bert_dir, negatives="in_batch",
                             max_steps=2, batch_size=8, resume=False, progress=False)
    assert metrics["global_step"] == 2 and metrics["train_loss"] > 0
    with pytest.raises(HFPersonaError, match="negatives"):
        train_receiver(sample, tmp_path / "x", backbone=tiny_bert_dir, negatives="hard", max_steps=1)


def test_softmax_loss_trains_saves_and_rejects_bad_values(tiny_bert_dir, tmp_path, sample):
    metrics = train_receiver(sample, tmp_path / "sm", backbone=tiny_bert_dir, negatives="in_batch",
                             loss_type="softmax", loss_temperature=0.2, max_steps=2, batch_size=8,
                             resume=False, progress=False)
    assert metrics["global_step"] == 2 and metrics["train_loss"] > 0
    from hf_persona.models.receiver import ReceiverModel

    saved = ReceiverModel.from_pretrained(tmp_path / "sm")
    assert (saved.config.loss_type, saved.config.loss_temperature) == ("softmax", 0.2)
    with pytest.raises(HFPersonaError, match="loss_type"):
        train_receiver(sample, tmp_path / "x", backbone=tiny_bert_dir, loss_type="infonce", max_steps=1)
    with pytest.raises(HFPersonaError, match="loss_temperature"):
        train_receiver(sample, tmp_path / "x", backbone=tiny_bert_dir, loss_type="softmax", loss_temperature=-1.0,
                       max_steps=1)


def test_freeze_lower_layers_and_utterance_subsampling(tiny_bert_dir):
    from transformers import AutoTokenizer

    from hf_persona.models.receiver import ReceiverModel
    from hf_persona.training.receiver import freeze_lower_layers

    model = ReceiverModel.from_encoder_pretrained(tiny_bert_dir)  # 2 layers
    assert freeze_lower_layers(model, 1) > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("encoder.embeddings.") for n in frozen) and any(".layer.0." in n for n in frozen)
    assert all(n.startswith("encoder.embeddings.") or ".layer.0." in n for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".layer.1." in n)
    with pytest.raises(HFPersonaError, match="all 2 layers"):
        freeze_lower_layers(model, 2)

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tokenized = Tokenized(tok, 16, 16)
    utts = [f"utterance number {w}" for w in ("one", "two", "three", "four", "five", "six")]
    ex = [{"utterances": utts, "persona": [f"p{i}"], "group": 0} for i in range(3)]
    ds = ReceiverPairDataset(ex, tokenized, num_negatives=1, seed=0, max_utterances=3)
    ids = {tuple(tokenized(u, "utterance")): k for k, u in enumerate(utts)}
    seen = set()
    for _ in range(10):
        picked = [ids[tuple(x)] for x in ds[0]["utterances"]]
        assert len(picked) == 3 and picked == sorted(set(picked))  # distinct, dialogue order kept
        seen.add(tuple(picked))
    assert len(seen) > 1  # a fresh subset per read


def test_train_with_lora_merges_adapters(tiny_bert_dir, tmp_path, sample):
    from peft import LoraConfig
    from safetensors.torch import load_file

    from hf_persona.models.receiver import ReceiverModel

    base = ReceiverModel.from_encoder_pretrained(tiny_bert_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0)
    metrics = train_receiver(sample, tmp_path / "lora", backbone=tiny_bert_dir, peft_config=lora,
                             max_steps=3, batch_size=8, learning_rate=5e-3, resume=False, progress=False)
    model = metrics.model
    saved = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert not any("lora" in k for k in saved)  # adapters merged into the saved weights
    changed = [k for k in saved if k in before and not torch.equal(saved[k], before[k])]
    assert changed and all(("query" in k or "value" in k) for k in changed)
    assert isinstance(model, ReceiverModel) and model.tau == 0.5
