"""PAL training / evaluation recipes: example building per variant, metrics, train/resume, CLI, bad input."""

import json
import math
from pathlib import Path

import pytest

from hf_persona.data import sample_path
from hf_persona.errors import HFPersonaError


def _rule_extractor(batch):
    """Deterministic test extractor: one persona sentence from the last two words of each utterance."""
    out = []
    for utts in batch:
        out.append([f"i talk about {' '.join(u.split()[-3:-1]) or 'nothing'} often." for u in utts[-2:]])
    return out


@pytest.fixture(scope="module")
def pesconv_dir(tmp_path_factory):
    from hf_persona.data.pesconv import annotate

    out = tmp_path_factory.mktemp("pesconv")
    annotate(_rule_extractor, sample_path("esconv"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def pal_tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    from hf_persona.models.pal import add_pal_tokens

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    add_pal_tokens(tok)
    return tok


ROW = {
    "dialogue_id": 3,
    "utterances": ["hello , how can i help ?", "i lost my job .", "that sounds hard .", "i feel useless .", "you are not useless ."],
    "speakers": ["sys", "usr", "sys", "usr", "sys"],
    "strategies": ["Question", "", "Reflection of feelings", "", "Affirmation and Reassurance"],
    "personas": [[], [], [], ["i lost my job."], ["i lost my job.", "i feel useless."]],
}


def test_examples_one_per_supporter_turn_after_a_seeker_turn(pal_tokenizer):
    from hf_persona.models.pal import build_pal_example
    from hf_persona.training.pal import pesconv_examples

    exs, skipped = pesconv_examples([ROW], pal_tokenizer, "pal", max_source_length=64, with_text=True)
    assert skipped == {"no_seeker_turn_before": 1, "empty_response": 0}
    assert [e["turn"] for e in exs] == [2, 4]
    assert [e["strategy"] for e in exs] == ["Reflection of feelings", "Affirmation and Reassurance"]
    ref = build_pal_example(ROW["utterances"][:4], ROW["speakers"][:4], ROW["strategies"][:4], ROW["personas"][4],
                            response=ROW["utterances"][4], strategy=ROW["strategies"][4], tokenizer=pal_tokenizer,
                            max_source_length=64, max_persona_length=96, max_target_length=50)
    for key in ("input_ids", "persona_input_ids", "labels", "strategy_id"):
        assert exs[1][key] == ref[key]
    assert exs[1]["persona"] == ["i lost my job.", "i feel useless."]


def test_hard_prompt_puts_the_persona_before_the_dialogue(pal_tokenizer):
    from hf_persona.training.pal import hard_prompt_input, pesconv_examples

    plain, _ = pesconv_examples([ROW], pal_tokenizer, "pal", max_source_length=64)
    hard, _ = pesconv_examples([ROW], pal_tokenizer, "hard_prompt", max_source_length=64)
    tok = pal_tokenizer
    text = tok.decode(hard[1]["input_ids"])
    assert text.startswith("[CLS] persona : i lost my job. [SEP] i feel useless. [SEP] dialogue : [Seeker]") or \
        text.replace(" .", ".").startswith("[CLS] persona : i lost my job. [SEP] i feel useless. [SEP] dialogue :")
    # the dialogue part is exactly the PAL dialogue input without its [CLS] ... [SEP] frame
    assert hard[1]["input_ids"][-len(plain[1]["input_ids"]) + 1:] == plain[1]["input_ids"][1:]
    assert hard[1]["labels"] == plain[1]["labels"]
    # truncation: the limit holds, the cue and the closing [SEP] survive, the oldest dialogue tokens go first
    short = hard_prompt_input(plain[1], tok, 20)
    assert len(short) == 20
    assert short[-2:] == [tok.convert_tokens_to_ids("[Supporter]"), tok.sep_token_id]
    assert tok.convert_tokens_to_ids("[No persona]") in hard[0]["input_ids"]  # no persona yet: the placeholder


def test_variant_collator_drops_the_persona_for_the_baselines(pal_tokenizer):
    from hf_persona.training.pal import VariantCollator, pesconv_examples

    exs, _ = pesconv_examples([ROW], pal_tokenizer, "pal", max_source_length=64)
    assert "persona_input_ids" in VariantCollator(pal_tokenizer, "pal")(exs)
    for variant in ("no_persona", "hard_prompt"):
        batch = VariantCollator(pal_tokenizer, variant)(exs)
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
    with pytest.raises(HFPersonaError, match="no_persona"):
        VariantCollator(pal_tokenizer, "persona_free")


@pytest.fixture(scope="module")
def tiny_pal(tiny_bert_dir, pal_tokenizer):
    import torch

    from hf_persona.models.pal import PALForConditionalGeneration

    torch.manual_seed(0)
    return PALForConditionalGeneration.from_backbone(tiny_bert_dir, tokenizer=pal_tokenizer).eval()


def test_teacher_forced_metrics_match_the_model_loss_and_argmax(tiny_pal, pal_tokenizer):
    import torch

    from hf_persona.evaluation.pal import teacher_forced_metrics
    from hf_persona.training.pal import VariantCollator, pesconv_examples

    exs, _ = pesconv_examples([ROW], pal_tokenizer, "pal", max_source_length=64)
    m = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", batch_size=8)
    batch = VariantCollator(pal_tokenizer, "pal")(exs)
    with torch.no_grad():
        out = tiny_pal(**batch)
    batch = {k: v for k, v in batch.items()}
    assert m["ppl"] == pytest.approx(math.exp(out.loss.item()), rel=1e-5)  # one batch: token-mean NLL
    ids = torch.tensor(tiny_pal.config.strategy_token_ids)
    pred = out.logits[:, 0, ids].argmax(-1).tolist()
    assert m["acc"] == pytest.approx(100.0 * sum(p == e["strategy_id"] for p, e in zip(pred, exs)) / len(exs))
    labels = batch["labels"].clone()
    labels[:, 0] = -100  # drop the strategy token from the loss, keep it in the decoder input
    with torch.no_grad():
        no_strategy = tiny_pal(**{k: v for k, v in batch.items() if k != "labels"}, decoder_input_ids=tiny_pal._shift_right(batch["labels"]), labels=labels).loss.item()
    assert m["ppl_no_strategy"] == pytest.approx(math.exp(no_strategy), rel=1e-5)
    # per word: the same NLL spread over the words of the replies instead of their tokens
    reply_tokens = int((labels != -100).sum())
    words = sum(len(e) for e in (["that", "sounds", "hard"], ["you", "are", "not", "useless"]))
    assert m["ppl_word"] == pytest.approx(math.exp(no_strategy * reply_tokens / words), rel=1e-5)
    rows = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", per_example=True)["per_example"]
    assert sum(r["nll_reply"] for r in rows) == pytest.approx(no_strategy * reply_tokens, rel=1e-5)


def test_perplexity_split_by_persona_presence(tiny_pal, pal_tokenizer):
    from hf_persona.evaluation.pal import teacher_forced_metrics
    from hf_persona.training.pal import pesconv_examples

    exs, _ = pesconv_examples([ROW], pal_tokenizer, "pal", with_text=True)
    assert [bool(e["persona"]) for e in exs] == [False, True]  # turn 2: none yet; turn 4: two sentences
    both = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", batch_size=8)
    without = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs[:1], "pal")
    with_p = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs[1:], "pal")
    assert both["n_with_persona"] == 1
    assert both["ppl_without_persona"] == pytest.approx(without["ppl"], rel=1e-5)
    assert both["ppl_with_persona"] == pytest.approx(with_p["ppl"], rel=1e-5)
    assert without["ppl_with_persona"] is None and without["n_with_persona"] == 0
    # the overall PPL pools the two parts' tokens, so it lies between them
    lo, hi = sorted([without["ppl"], with_p["ppl"]])
    assert lo <= both["ppl"] <= hi
    plain, _ = pesconv_examples([ROW], pal_tokenizer, "pal")  # no text: no split
    assert "ppl_with_persona" not in teacher_forced_metrics(tiny_pal, pal_tokenizer, plain, "pal")


def test_persona_input_ablation_placeholder_and_none(tiny_pal, pal_tokenizer):
    import torch

    from hf_persona.evaluation.pal import teacher_forced_metrics
    from hf_persona.training.pal import VariantCollator, pesconv_examples

    exs, _ = pesconv_examples([ROW], pal_tokenizer, "pal", with_text=True)
    given = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", batch_size=8)
    assert teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", batch_size=8, persona_input="given") == given
    # placeholder: the same as examples built with no persona known at any turn
    unknown, _ = pesconv_examples([dict(ROW, personas=[[]] * 5)], pal_tokenizer, "pal")
    placeholder = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", batch_size=8, persona_input="placeholder")
    assert placeholder["ppl"] == pytest.approx(teacher_forced_metrics(tiny_pal, pal_tokenizer, unknown, "pal")["ppl"], rel=1e-5)
    assert placeholder["n_with_persona"] == 1  # the split still follows whether the turn had a persona
    assert placeholder["ppl_without_persona"] == pytest.approx(given["ppl_without_persona"], rel=1e-5)
    assert placeholder["ppl_with_persona"] != pytest.approx(given["ppl_with_persona"], rel=1e-4)
    # none: the decoder over the plain dialogue states H_D (no persona pass at all)
    batch = VariantCollator(pal_tokenizer, "pal")(exs)
    with torch.no_grad():
        free = tiny_pal(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    none = teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", batch_size=8, persona_input="none")
    assert none["ppl"] == pytest.approx(math.exp(free.item()), rel=1e-5)
    assert none["ppl"] != pytest.approx(given["ppl"], rel=1e-4)
    with pytest.raises(HFPersonaError, match="expected one of"):
        teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "pal", persona_input="empty")
    with pytest.raises(HFPersonaError, match="only the 'pal' variant"):
        teacher_forced_metrics(tiny_pal, pal_tokenizer, exs, "no_persona", persona_input="none")


def test_persona_information_counts_response_words_by_where_they_appear(pal_tokenizer):
    from hf_persona.evaluation.pal import persona_information

    row = {
        "dialogue_id": 7,
        "utterances": ["hello , how can i help ?", "my dog died last week .", "i am so sorry to hear that .",
                       "it is hard . i cry .", "your dog was family to you ."],
        "speakers": ["sys", "usr", "sys", "usr", "sys"],
        "strategies": ["Question", "", "Reflection of feelings", "", "Affirmation and Reassurance"],
        "personas": [[], [], [], [], ["i had a dog."]],
    }
    # content words: turn 2 response {sorri, hear}: nowhere before; turn 4 response {dog, famili},
    # persona {dog}; a 12-token window holds only "[Seeker] it is hard . i cry . [SEP] [Supporter]"
    short = persona_information([row], pal_tokenizer, max_source_length=12)
    assert short["examples"] == 2 and short["response_content_words"] == 4
    assert short["in_window"] == 0.0
    assert short["in_history_not_window"] == pytest.approx(1 / 4)  # "dog", cut off by the window
    assert short["examples_with_persona"] == 1 and short["response_content_words_with_persona"] == 2
    assert short["in_persona"] == pytest.approx(1 / 2) and short["persona_only"] == pytest.approx(1 / 2)
    assert short["examples_where_persona_adds_a_word"] == 1
    # a window that holds the whole dialogue: the persona's "dog" is already visible
    full = persona_information([row], pal_tokenizer, max_source_length=128)
    assert full["in_window"] == pytest.approx(1 / 4) and full["in_history_not_window"] == 0.0
    assert full["in_persona"] == pytest.approx(1 / 2) and full["persona_only"] == 0.0
    assert full["examples_where_persona_adds_a_word"] == 0
    none = persona_information([dict(row, personas=[[]] * 5)], pal_tokenizer, max_source_length=128)
    assert none["examples_with_persona"] == 0 and none["persona_only"] is None


def test_only_pal_sees_the_persona(tiny_pal, pal_tokenizer):
    from hf_persona.evaluation.pal import teacher_forced_metrics
    from hf_persona.training.pal import pesconv_examples

    other = dict(ROW, personas=[[], [], [], ["i love my three dogs."], ["i love my three dogs.", "i live by the sea."]])
    for variant, changes in (("pal", True), ("no_persona", False), ("hard_prompt", True)):
        a = teacher_forced_metrics(tiny_pal, pal_tokenizer, pesconv_examples([ROW], pal_tokenizer, variant)[0], variant)
        b = teacher_forced_metrics(tiny_pal, pal_tokenizer, pesconv_examples([other], pal_tokenizer, variant)[0], variant)
        assert (abs(a["ppl"] - b["ppl"]) > 1e-6) == changes, variant


def test_force_strategy_first_makes_every_sequence_open_with_a_strategy(tiny_pal, pal_tokenizer):
    from hf_persona.evaluation.pal import generate_responses
    from hf_persona.training.pal import pesconv_examples

    exs, _ = pesconv_examples([ROW], pal_tokenizer, "pal", max_source_length=64)
    settings = {"do_sample": True, "top_k": 10, "max_new_tokens": 3}
    _, free = generate_responses(tiny_pal, pal_tokenizer, exs, "pal", decoding=settings)
    texts, forced = generate_responses(tiny_pal, pal_tokenizer, exs, "pal", decoding=settings,
                                       force_strategy_first=True, alpha="table")
    assert all(name in tiny_pal.config.strategy_names for name in forced)
    assert len(texts) == len(exs)
    assert not all(name is not None for name in free)  # the untrained model rarely opens with a strategy


def test_generation_metrics_by_hand():
    from hf_persona.evaluation.pal import SentenceEmbedder, generation_metrics

    emb = SentenceEmbedder()
    m = generation_metrics(["i lost my job", "hello there friend"], ["i lost my job", "hi"],
                           [["i lost my job"], []], vocab_size=100, embedder=emb)
    assert m["cos_sim"] == pytest.approx(1.0, abs=1e-5) and m["n_cos_sim"] == 1
    assert m["dist1"] == pytest.approx(100.0) and m["dist2"] == pytest.approx(100.0)
    far = emb.cosine(["i lost my job"], ["the weather in paris is sunny"])[0]
    assert far < 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pesconv_dir, tiny_bert_dir):
    from hf_persona.training.pal import train_pal

    out = tmp_path_factory.mktemp("pal_run")
    summary = train_pal(pesconv_dir, out, variant="pal", backbone=tiny_bert_dir, max_steps=2, eval_steps=1,
                        batch_size=4, warmup_steps=0, learning_rate=1e-3, max_eval_examples=8, max_source_length=64,
                        max_persona_length=24, max_target_length=16, progress=False)
    return out, summary


def test_train_saves_the_best_checkpoint_and_resumes(trained, pesconv_dir, tiny_bert_dir):
    from hf_persona.training.pal import train_pal

    out, summary = trained
    assert summary["global_step"] == 2 and summary["best_checkpoint"]
    assert summary["train_skipped"]["no_seeker_turn_before"] > 0
    assert json.loads((out / "pal_training.json").read_text())["variant"] == "pal"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    again = train_pal(pesconv_dir, out, variant="pal", backbone=tiny_bert_dir, max_steps=3, eval_steps=1,
                      batch_size=4, warmup_steps=0, learning_rate=1e-3, max_eval_examples=8, max_source_length=64,
                      max_persona_length=24, max_target_length=16, progress=False)
    assert again["resumed_from"].endswith("checkpoint-2") and again["global_step"] == 3
    assert again.output_dir == out and type(again.model).__name__ == "PALForConditionalGeneration"  # a RecipeResult


def test_training_summary_and_learning_curve_script_report_the_validation_history(trained, tmp_path):
    import importlib.util

    out, summary = trained
    history = summary["eval_history"]
    assert [h["step"] for h in history] == [1, 2]  # eval_steps=1, max_steps=2
    assert all(math.isfinite(h["eval_loss"]) for h in history)
    spec = importlib.util.spec_from_file_location(
        "pal_learning_curves", Path(__file__).resolve().parents[2] / "benchmarks" / "pal_learning_curves.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    curve = script.eval_curve(out)  # read back from the checkpoints' trainer_state.json
    # (the resume test may have added step 3 to the same folder)
    assert [(p["step"], p["eval_loss"]) for p in curve][:2] == [(h["step"], h["eval_loss"]) for h in history]
    assert all(p["ppl"] == pytest.approx(math.exp(p["eval_loss"])) for p in curve)
    result = script.main([f"a={out}", f"b={out}", "--reference", "b", "--plot", str(tmp_path / "c.png"),
                          "--out", str(tmp_path / "c.json")])
    assert [g["loss_gap"] for g in result["gaps_to_reference"]["a"]] == [0.0] * len(curve)  # a run against itself
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "c.json").read_text())["curves"]["a"] == curve
    with pytest.raises(SystemExit, match="not one of the runs"):
        script.main([f"a={out}", "--reference", "z", "--out", str(tmp_path / "d.json")])
    with pytest.raises(SystemExit, match="no trainer_state.json"):
        script.main([f"a={tmp_path / 'empty'}", "--out", str(tmp_path / "d.json")])


def test_per_example_nll_and_the_split_script_paired_comparison(trained, pesconv_dir, tmp_path, capsys):
    import importlib.util

    from hf_persona.evaluation.pal import load_pal_for_eval, teacher_forced_metrics
    from hf_persona.training.pal import load_pesconv_splits, pesconv_examples

    out, _ = trained
    model, tok, cfg = load_pal_for_eval(out)
    lengths = {k: cfg[k] for k in ("max_source_length", "max_persona_length", "max_target_length")}
    _, valid = load_pesconv_splits(pesconv_dir)
    exs, _ = pesconv_examples(valid, tok, "pal", with_text=True, **lengths)
    m = teacher_forced_metrics(model, tok, exs, "pal", batch_size=3, per_example=True)
    rows = m["per_example"]
    assert len(rows) == len(exs) and all(r["tokens"] == sum(1 for x in e["labels"] if x != -100)
                                         for r, e in zip(rows, exs))
    assert 100.0 * sum(r["strategy_correct"] for r in rows) / len(rows) == pytest.approx(m["acc"])
    assert math.exp(sum(r["nll"] for r in rows) / sum(r["tokens"] for r in rows)) == pytest.approx(m["ppl"], rel=1e-5)
    assert "per_example" not in teacher_forced_metrics(model, tok, exs, "pal")

    spec = importlib.util.spec_from_file_location(
        "pal_persona_split", Path(__file__).resolve().parents[2] / "benchmarks" / "pal_persona_split.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([f"a={out}", f"b={out}", "--data", str(pesconv_dir), "--reference", "b", "--resamples", "50",
                 "--dialogues", ":1", "--cos-sim", "--out", str(tmp_path / "s.json")])
    printed = capsys.readouterr().out
    assert printed.count("ppl ratio") == 1 and printed.count("McNemar p") == 1 and "cos-sim a vs b" in printed
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["dialogues"]["count"] == 1 and result["dialogues"]["ids"] == [valid[0]["dialogue_id"]]
    same = result["paired_vs_reference"]["a"]["all"]  # a model against itself: ratio 1, no spread
    assert same["ppl_ratio"] == 1.0 and same["ppl_ratio_low"] == same["ppl_ratio_high"] == 1.0
    assert same["turns"] == result["a"]["n_teacher_forced"] and "b" not in result["paired_vs_reference"]
    cos = result["paired_vs_reference"]["a"]["cos_sim"]  # the same model and sampling seed: the same replies
    assert cos["mean"] == cos["mean_reference"] == pytest.approx(result["a"]["cos_sim_persona_turns"])
    assert cos["diff"] == 0.0 and cos["turns"] == sum(1 for e in exs if e["persona"] and e["dialogue_id"] == valid[0]["dialogue_id"])
    acc = result["paired_vs_reference"]["a"]["strategy_acc"]
    assert acc["acc"] == acc["acc_reference"] == pytest.approx(result["a"]["acc"]) and acc["p"] == 1.0
    script.main([f"a={out}", f"b={out}", "--data", str(pesconv_dir), "--reference", "b", "--resamples", "20",
                 "--dialogues", ":1", "--out", str(tmp_path / "u.json")])  # without --cos-sim: tables still printed
    assert capsys.readouterr().out.count("ppl ratio") == 1
    assert "cos_sim" not in json.loads((tmp_path / "u.json").read_text())["paired_vs_reference"]["a"]
    rows_a = [{"nll": 2.0, "tokens": 2, "strategy_correct": True}]
    with pytest.raises(SystemExit, match="not scored on the same turns"):  # e.g. another max_target_length
        script.compare_with_reference({"a": (rows_a, [("d0", True)]),
                                       "b": ([dict(rows_a[0], tokens=3)], [("d0", True)])}, "b", 10)
    with pytest.raises(SystemExit, match="not one of the models"):
        script.main([f"a={out}", "--data", str(pesconv_dir), "--reference", "z", "--out", str(tmp_path / "t.json")])
    with pytest.raises(SystemExit, match="expected START:END"):
        script.main([f"a={out}", "--data", str(pesconv_dir), "--dialogues", "x", "--out", str(tmp_path / "t.json")])
    with pytest.raises(SystemExit, match="selects no dialogue"):
        script.main([f"a={out}", "--data", str(pesconv_dir), "--dialogues", "50:60", "--out", str(tmp_path / "t.json")])


def test_mixture_logits_get_their_own_learning_rate(pesconv_dir, tiny_bert_dir, tmp_path):
    from hf_persona.training.pal import train_pal

    common = dict(variant="pal", backbone=tiny_bert_dir, max_steps=3, eval_steps=3, batch_size=4, warmup_steps=0,
                  learning_rate=1e-4, max_eval_examples=4, max_source_length=48, max_persona_length=16,
                  max_target_length=12, progress=False, resume=False)
    shared = train_pal(pesconv_dir, tmp_path / "shared", mixture_learning_rate=None, **common)
    own = train_pal(pesconv_dir, tmp_path / "own", mixture_learning_rate=0.2, **common)
    for summary in (shared, own):
        assert sum(summary["mixture_weights"]) == pytest.approx(1.0, abs=1e-3)
    # Adam moves each logit by about the learning rate per step: 3 x 1e-4 leaves 1/3 each, 3 x 0.2 does not
    assert max(abs(w - 1 / 3) for w in shared["mixture_weights"]) < 1e-3
    assert max(abs(w - 1 / 3) for w in own["mixture_weights"]) > 0.02
    with pytest.raises(HFPersonaError, match=r"PALTrainingConfig.mixture_learning_rate = -1.0: expected a finite"):
        train_pal(pesconv_dir, tmp_path / "bad", mixture_learning_rate=-1.0, **common)
    with pytest.raises(HFPersonaError, match=r"mixture_init = \[0.0, 1.0\]: expected three finite numbers"):
        train_pal(pesconv_dir, tmp_path / "bad", mixture_init=[0.0, 1.0], **common)
    assert own["fusion_norm_init"] == "fresh" and own["persona_alignment"] == "coattention"
    with pytest.raises(HFPersonaError, match="fusion_norm_init = 'copy': expected one of 'fresh', 'encoder'"):
        train_pal(pesconv_dir, tmp_path / "bad", fusion_norm_init="copy", **common)
    with pytest.raises(HFPersonaError, match="persona_alignment = 'truncate': expected one of"):
        train_pal(pesconv_dir, tmp_path / "bad", persona_alignment="truncate", **common)


def test_train_and_evaluate_with_the_concat_alignment(pesconv_dir, tiny_bert_dir, tmp_path):
    from hf_persona.evaluation.pal import load_pal_for_eval, teacher_forced_metrics
    from hf_persona.training.pal import pesconv_examples, train_pal

    summary = train_pal(pesconv_dir, tmp_path / "concat", variant="pal", backbone=tiny_bert_dir, max_steps=2,
                        eval_steps=2, batch_size=4, warmup_steps=0, learning_rate=1e-3, max_eval_examples=4,
                        max_source_length=48, max_persona_length=16, max_target_length=12, progress=False,
                        persona_alignment="concat")
    assert summary["persona_alignment"] == "concat"
    model, tok, cfg = load_pal_for_eval(tmp_path / "concat")
    assert model.config.persona_alignment == "concat"
    exs, _ = pesconv_examples([ROW], tok, "pal", max_source_length=48, max_persona_length=16, max_target_length=12)
    given = teacher_forced_metrics(model, tok, exs, "pal")
    none = teacher_forced_metrics(model, tok, exs, "pal", persona_input="none")
    assert math.isfinite(given["ppl"]) and given["ppl"] != pytest.approx(none["ppl"], rel=1e-5)


def test_train_pal_cli_rejects_a_bad_mixture_init(pesconv_dir, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import cli, register_plugin_commands

    register_plugin_commands()
    res = CliRunner().invoke(cli, ["train", "pal", "--data", str(pesconv_dir), "--output-dir", str(tmp_path / "o"),
                                   "--mixture-init", "0,zero,2"])
    assert res.exit_code == 2 and "expected comma-separated numbers" in res.output


def test_train_pal_options_are_the_config_fields(tmp_path, monkeypatch):
    """`train pal`'s recipe options are PALTrainingConfig's fields: with none given the command builds the
    Python default config; --mixture-lr 0 is None (the same rate as --lr); a bad value from Python is an
    HFPersonaError naming the field, before any data is read."""
    import dataclasses

    from click.testing import CliRunner

    import hf_persona.training.pal as recipe
    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.training.configs import PALTrainingConfig
    from hf_persona.training.recipe import RecipeResult

    register_plugin_commands()
    calls = []

    def fake_train_pal(data, config):
        calls.append((data, config))
        return RecipeResult({"variant": config.variant, "global_step": 0}, config.output_dir)

    monkeypatch.setattr(recipe, "train_pal", fake_train_pal)
    args = ["train", "pal", "--data", str(tmp_path), "--output-dir", str(tmp_path / "run")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data, config = calls.pop()
    assert data == str(tmp_path) and config == PALTrainingConfig(output_dir=config.output_dir)
    assert Path(config.output_dir) == tmp_path / "run" and f"saved to {config.output_dir}" in res.output
    command = cli.commands["train"].commands["pal"]
    on_cli = {f.name for f in dataclasses.fields(PALTrainingConfig) if f.metadata["option"].cli}
    assert on_cli <= {p.name for p in command.params}
    res = CliRunner().invoke(cli, args + ["--mixture-lr", "0", "--no-resume", "--variant", "hard_prompt",
                                          "--mixture-init", "1,0,0", "--fusion-layer", "-1", "--lr", "1e-4"])
    assert res.exit_code == 0, res.output
    config = calls.pop()[1]
    assert config.mixture_learning_rate is None and not config.resume and config.variant == "hard_prompt"
    assert config.mixture_init == [1.0, 0.0, 0.0] and config.fusion_layer == -1 and config.learning_rate == 1e-4
    monkeypatch.undo()
    from hf_persona.training.pal import train_pal

    for bad, field in ((dict(max_persona_length=0), "max_persona_length = 0"), (dict(variant="x"), "variant = 'x'"),
                       (dict(mixture_learning_rate=0.0), "mixture_learning_rate = 0.0"),
                       (dict(fusion_layer=1.5), "fusion_layer = 1.5")):
        with pytest.raises(HFPersonaError, match=f"PALTrainingConfig.{field}: expected"):
            train_pal(tmp_path / "no_such_data", tmp_path / "o", **bad)
    with pytest.raises(TypeError, match="has no field 'max_steeps'"):
        train_pal(tmp_path / "no_such_data", tmp_path / "o", max_steeps=3)
    # a config object works the same as the folder and keywords; keywords replace its fields
    with pytest.raises(HFPersonaError, match="max_eval_examples = 0"):
        train_pal(tmp_path / "no_such_data", PALTrainingConfig(output_dir=tmp_path / "o"), max_eval_examples=0)


def test_eval_cli_prints_table3_and_writes_flat_json(trained, pesconv_dir, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.training.pal import METRIC_KEYS

    register_plugin_commands()
    out, _ = trained
    js = tmp_path / "m.json"
    args = ["eval", "pal", "--model", str(out), "--data", str(pesconv_dir), "--max-examples", "6",
            "--max-generate", "3", "--batch-size", "3", "--alpha", "table", "--json", str(js)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads(js.read_text())
    for key in METRIC_KEYS:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["alpha"] == "table" and metrics["n_generated"] == 3
    assert not any(isinstance(v, (dict, list)) for v in metrics.values())
    samples = json.loads((tmp_path / "m.json.samples.json").read_text())
    assert samples["decoding"]["top_k"] == 10 and len(samples["samples"]) == 3
    assert "cos_sim" in res.output and "ppl_no_strategy" in res.output
    assert f"ppl on turns with a persona (n={metrics['n_with_persona']})" in res.output


def test_bad_inputs(pal_tokenizer, tmp_path, pesconv_dir):
    from hf_persona.evaluation.pal import load_pal_for_eval
    from hf_persona.training.pal import pesconv_examples, train_pal

    bad = dict(ROW, strategies=["Question", "", "Mind reading", "", "Question"])
    with pytest.raises(HFPersonaError, match="dialogue 3, turn 2: unknown strategy"):
        pesconv_examples([bad], pal_tokenizer, "pal")
    with pytest.raises(HFPersonaError, match="one entry per turn"):
        pesconv_examples([dict(ROW, personas=[[]])], pal_tokenizer, "pal")
    with pytest.raises(HFPersonaError, match="unknown PAL variant"):
        pesconv_examples([ROW], pal_tokenizer, "fancy")
    exs, skipped = pesconv_examples([dict(ROW, utterances=ROW["utterances"][:4] + ["   "])], pal_tokenizer, "pal")
    assert skipped["empty_response"] == 1 and len(exs) == 1  # an empty response is skipped and counted
    with pytest.raises(HFPersonaError, match="pesconv.jsonl"):
        train_pal(tmp_path, tmp_path / "o")
    with pytest.raises(HFPersonaError, match="pal_training.json"):
        load_pal_for_eval(tmp_path)


# ---------------------------------------------------------------- PAL over a causal LM
def test_causal_backbone_trains_pal_causal_and_evaluates(pesconv_dir, tiny_llama_dir, tmp_path):
    """`train pal` on a causal LM builds PALForCausalLM from chat-template examples; the fusion gate
    gets the fusion learning rate (it opens); evaluation generates after the prompt; the Hard
    Prompt baseline carries the persona in the system turn."""
    import torch

    from hf_persona.evaluation.pal import evaluate_pal, load_pal_for_eval, teacher_forced_metrics
    from hf_persona.training.pal import pesconv_examples, train_pal

    common = dict(backbone=tiny_llama_dir, max_steps=3, eval_steps=3, batch_size=4, warmup_steps=0,
                  learning_rate=1e-3, mixture_learning_rate=0.05, max_eval_examples=4, max_source_length=160,
                  max_persona_length=24, max_target_length=12, progress=False)
    summary = train_pal(pesconv_dir, tmp_path / "pal", variant="pal", **common)
    assert summary["kind"] == "causal" and summary["global_step"] == 3
    model, tok, cfg = load_pal_for_eval(tmp_path / "pal")
    assert type(model).__name__ == "PALForCausalLM" and cfg["kind"] == "causal"
    assert model.fusion_gate.abs().max() > 0.02  # 3 Adam steps at 0.05, not at 1e-3
    exs, _ = pesconv_examples([ROW], tok, "pal", causal=True, with_text=True, max_source_length=160,
                              max_persona_length=24, max_target_length=12)
    given = teacher_forced_metrics(model, tok, exs, "pal")
    none = teacher_forced_metrics(model, tok, exs, "pal", persona_input="none")
    assert math.isfinite(given["ppl"]) and given["ppl"] != pytest.approx(none["ppl"], rel=1e-6)
    # the metric's NLL is the model's own loss on a single example
    from hf_persona.training.pal import VariantCollator

    batch = VariantCollator(tok, "pal")(exs[:1])
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert teacher_forced_metrics(model, tok, exs[:1], "pal")["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
    metrics = evaluate_pal(tmp_path / "pal", pesconv_dir, max_examples=4, max_generate=4, alpha="table",
                           force_strategy_first=True, decoding=dict(do_sample=False, max_new_tokens=6))
    assert metrics["n_generated"] == 4 and all(s["strategy_generated"] for s in metrics["samples"][:4])
    # another dialogue window at evaluation; per-example rows for paired tests, not in the flat JSON
    short = evaluate_pal(tmp_path / "pal", pesconv_dir, max_examples=4, max_generate=2, max_source_length=12,
                         per_example=True, decoding=dict(do_sample=False, max_new_tokens=4), json_out=tmp_path / "e.json")
    assert short["max_source_length"] == 12 and metrics["max_source_length"] == 160
    assert short["ppl"] != pytest.approx(metrics["ppl"], rel=1e-6)  # the model read less of the dialogue
    assert len(short["per_example"]) == 4 and {"dialogue_id", "has_persona", "nll_reply"} <= set(short["per_example"][0])
    assert [g["reference"] for g in short["generated"]] == [s["reference"] for s in metrics["samples"][:2]]
    saved = json.loads((tmp_path / "e.json").read_text())
    assert "per_example" not in saved and "generated" not in saved and saved["ppl_word"] > 1
    with pytest.raises(HFPersonaError, match="max_source_length"):
        evaluate_pal(tmp_path / "pal", pesconv_dir, max_source_length=0)
    # the fusion layer counts from the end when negative; it applies to causal backbones only
    last = train_pal(pesconv_dir, tmp_path / "pal_last", variant="pal", fusion_layer=-1,
                     **dict(common, max_steps=1, eval_steps=1))
    assert last["fusion_layer"] == 1 and last["fusion_gate_mean_abs"] > 0
    with pytest.raises(HFPersonaError, match=r"layer index in \[-2, 2\)"):
        train_pal(pesconv_dir, tmp_path / "bad", variant="pal", fusion_layer=2, **common)
    hard, _ = pesconv_examples([ROW], tok, "hard_prompt", causal=True, max_source_length=160)
    assert "what you know about the person : i lost my job." in tok.decode(hard[-1]["input_ids"])
    with pytest.raises(HFPersonaError, match="causal LM"):
        train_pal(pesconv_dir, tmp_path / "bad", variant="pal", persona_alignment="concat", **common)
