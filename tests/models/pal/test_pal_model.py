"""PAL model: input format, masked co-attention + mixture, loss, generate, Auto/remote-code round trip, LoRA."""

import json
import os

import pytest
import torch

from hf_persona.models.pal import (
    PERSONA_PLACEHOLDER,
    STRATEGY_NAMES,
    STRATEGY_TOKENS,
    PALCollator,
    PALConfig,
    PALForConditionalGeneration,
    PALPersonaFusion,
    add_pal_tokens,
    build_pal_example,
)
from tests.helpers import run_without_hf_persona


@pytest.fixture(scope="module")
def pal(tiny_bert_dir):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = PALForConditionalGeneration.from_backbone(tiny_bert_dir, tokenizer).eval()
    return model, tokenizer


HISTORY = (["hi", "hello , how can i help ?", "i lost my job and i feel awful"], ["usr", "sys", "usr"], ["", "Question", ""])


def _batch(tokenizer, personas=(["i am a teacher .", "i have two kids ."], []), responses=("that sounds hard .", "ok .")):
    examples = [
        build_pal_example(*HISTORY, personas[0], responses[0], "Reflection of feelings", tokenizer=tokenizer),
        build_pal_example(["my dog died yesterday"], ["usr"], None, personas[1], responses[1], "Others", tokenizer=tokenizer),
    ]
    return PALCollator(tokenizer)(examples)


# ---------------------------------------------------------------- input format
def test_example_format_tokens(pal):
    _, tok = pal
    ex = build_pal_example(*HISTORY, ["i am a teacher ."], "that sounds hard .", "Reflection of feelings", tokenizer=tok)
    assert tok.convert_ids_to_tokens(ex["input_ids"]) == [
        "[CLS]", "[Seeker]", "hi", "[SEP]", "[Supporter]", "[Question]", "hello", ",", "how", "can", "i", "help", "?",
        "[SEP]", "[Seeker]", "i", "lost", "my", "job", "and", "i", "feel", "awful", "[SEP]", "[Supporter]", "[SEP]"]
    assert tok.convert_ids_to_tokens(ex["persona_input_ids"]) == ["[CLS]", "i", "am", "a", "teacher", ".", "[SEP]"]
    # labels = [strategy] + response + eos
    assert tok.convert_ids_to_tokens(ex["labels"]) == ["[Reflection of feelings]", "that", "sounds", "hard", ".", "[SEP]"]
    assert ex["strategy_id"] == STRATEGY_NAMES.index("Reflection of feelings")
    assert ex["persona_truncated"] is False


def test_placeholder_persona_and_inference_example(pal):
    _, tok = pal
    ex = build_pal_example(["hello"], ["seeker"], None, None, tokenizer=tok)
    assert tok.convert_ids_to_tokens(ex["persona_input_ids"]) == ["[CLS]", PERSONA_PLACEHOLDER, "[SEP]"]
    assert "labels" not in ex and "strategy_id" not in ex
    # blank sentences count as no persona
    assert build_pal_example(["hello"], ["usr"], None, ["  "], tokenizer=tok)["persona_input_ids"] == ex["persona_input_ids"]


def test_add_pal_tokens_idempotent(pal):
    _, tok = pal
    n = len(tok)
    assert add_pal_tokens(tok) == 0 and len(tok) == n
    assert tok.tokenize("[Providing Suggestions] go out") == ["[Providing Suggestions]", "go", "out"]


def test_dialogue_truncation_keeps_recent_turns_and_cue(pal):
    _, tok = pal
    long_history = ["word " * 30, "fine", "the latest words"]
    ex = build_pal_example(long_history, ["usr", "sys", "usr"], ["", "Others", ""], None, tokenizer=tok, max_source_length=12)
    toks = tok.convert_ids_to_tokens(ex["input_ids"])
    assert len(toks) == 12
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert toks[-6:] == ["the", "latest", "words", "[SEP]", "[Supporter]", "[SEP]"]


def test_persona_longer_than_limit_drops_oldest_sentences(pal):
    _, tok = pal
    persona = ["i like dogs .", "i work at night .", "i am tired ."]  # 4 + 5 + 4 tokens
    ex = build_pal_example(["hi"], ["usr"], None, persona, tokenizer=tok, max_persona_length=2 + 5 + 1 + 4)
    assert tok.convert_ids_to_tokens(ex["persona_input_ids"]) == [
        "[CLS]", "i", "work", "at", "night", ".", "[SEP]", "i", "am", "tired", ".", "[SEP]"]
    assert ex["persona_truncated"] is True
    # a single sentence longer than the limit keeps its first tokens
    ex = build_pal_example(["hi"], ["usr"], None, ["one two three four five six"], tokenizer=tok, max_persona_length=5)
    assert tok.convert_ids_to_tokens(ex["persona_input_ids"]) == ["[CLS]", "one", "two", "three", "[SEP]"]
    assert ex["persona_truncated"] is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(history_utterances=["hello"], history_speakers=["sys"]), "no seeker turn"),
        (dict(history_utterances=["a", "b"], history_speakers=["usr", "sys"], history_strategies=["", "Hugging"]),
         "unknown strategy label 'Hugging'"),
        (dict(history_utterances=["a"], history_speakers=["usr"], response="fine", strategy="Pep talk"),
         "unknown strategy label 'Pep talk'"),
        (dict(history_utterances=["a"], history_speakers=["usr"], response="   ", strategy="Question"), "response is empty"),
        (dict(history_utterances=["a"], history_speakers=["usr"], response="ok"), "needs its strategy"),
        (dict(history_utterances=["a", "b"], history_speakers=["usr"]), "one speaker per turn"),
        (dict(history_utterances=["a"], history_speakers=["bot"]), "unknown speaker 'bot'"),
        (dict(history_utterances=["a"], history_speakers=["usr"], history_strategies=["Question"]), "seeker turn carries"),
    ],
)
def test_bad_input_errors(pal, kwargs, message):
    _, tok = pal
    with pytest.raises(ValueError, match=message) as err:
        build_pal_example(tokenizer=tok, **kwargs)
    if "strategy label" in message:
        assert "Providing Suggestions" in str(err.value)  # the valid names are listed


def test_input_longer_than_the_encoder_positions_is_a_clear_error(pal):
    model, tok = pal
    positions = model.backbone.get_encoder().config.max_position_embeddings
    ids = torch.full((1, positions + 1), tok.cls_token_id)
    with pytest.raises(ValueError, match=f"{positions + 1} tokens, but the backbone encoder has {positions} positions"):
        model(input_ids=ids, labels=ids[:, :3])
    persona = torch.full((1, positions + 5), tok.cls_token_id)
    with pytest.raises(ValueError, match="max_persona_length"):
        model(input_ids=ids[:, :8], persona_input_ids=persona, labels=ids[:, :3])


def test_tokenizer_without_pal_tokens_is_rejected(tiny_bert_dir):
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="add_pal_tokens"):
        build_pal_example(["hi"], ["usr"], tokenizer=AutoTokenizer.from_pretrained(tiny_bert_dir))


def test_collator_pads(pal):
    _, tok = pal
    batch = _batch(tok)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1].sum() == len(build_pal_example(["my dog died yesterday"], ["usr"], tokenizer=tok)["input_ids"])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_token_id).all()
    assert batch["persona_attention_mask"][1].tolist()[:3] == [1, 1, 1] and batch["persona_attention_mask"][1].sum() == 3
    assert (batch["labels"][1, 4:] == -100).all() and batch["labels"][1, 3] == tok.sep_token_id
    assert batch["strategy_id"].tolist() == [STRATEGY_NAMES.index("Reflection of feelings"), STRATEGY_NAMES.index("Others")]


# ---------------------------------------------------------------- co-attention and mixture
def _reference_fusion(fusion, hd, md, hp, mp):
    """Eq. 2-4 written out per example with explicit loops over real tokens only."""
    out = torch.zeros_like(hd)
    lam = torch.softmax(fusion.mixture_logits.detach(), 0)
    for b in range(hd.shape[0]):
        n, m = int(md[b].sum()), int(mp[b].sum())
        D, P = hd[b, :n], hp[b, :m]
        A = torch.softmax(D @ P.T, dim=1)          # dialogue over persona
        B = torch.softmax(P @ D.T, dim=1)          # persona over dialogue
        Dh = fusion.dialogue_norm(D + A @ P)
        Ph = fusion.persona_norm(P + B @ D)
        out[b, :n] = lam[0] * Dh + lam[1] * (A @ Ph) + lam[2] * D
    return out


def test_fusion_matches_reference_and_ignores_padding():
    torch.manual_seed(1)
    fusion = PALPersonaFusion(8)
    with torch.no_grad():
        fusion.mixture_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
        fusion.dialogue_norm.weight.uniform_(0.5, 1.5)
        fusion.persona_norm.bias.uniform_(-0.1, 0.1)
    hd, hp = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    md = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mp = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    fused, mask, _, attn, lam = fusion(hd, md, hp, mp)
    assert torch.equal(mask, md)
    ref = _reference_fusion(fusion, hd, md, hp, mp)
    valid = md.bool()
    torch.testing.assert_close(fused[valid], ref[valid], atol=1e-5, rtol=1e-5)
    assert attn[1, :, 2:].abs().max() == 0  # persona padding gets exactly zero weight
    torch.testing.assert_close(lam.sum(), torch.tensor(1.0))
    # garbage in padded persona / dialogue slots changes nothing on real positions
    hp2, hd2 = hp.clone(), hd.clone()
    hp2[1, 2:] = 100.0
    hd2[1, 3:] = -50.0
    fused2 = fusion(hd2, md, hp2, mp)[0]
    torch.testing.assert_close(fused2[valid], fused[valid], atol=1e-6, rtol=1e-6)


def test_all_persona_tokens_reach_the_decoder_states():
    """A persona longer than the dialogue still contributes through its last tokens
    (the authors' truncating alignment would drop them)."""
    torch.manual_seed(2)
    fusion = PALPersonaFusion(6)
    hd, hp = torch.randn(1, 2, 6), torch.randn(1, 7, 6)
    ones_d, ones_p = torch.ones(1, 2, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)
    base = fusion(hd, ones_d, hp, ones_p)[0]
    hp2 = hp.clone()
    hp2[0, 6] += 3.0  # change only the last persona token, far beyond the dialogue length
    assert (fusion(hd, ones_d, hp2, ones_p)[0] - base).abs().max() > 1e-3


def test_concat_alignment_appends_the_refined_persona_as_keys():
    torch.manual_seed(3)
    fusion = PALPersonaFusion(8, alignment="concat")
    with torch.no_grad():
        fusion.mixture_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
        fusion.persona_norm.weight.uniform_(0.5, 1.5)
    hd, hp = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    md = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mp = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    fused, mask, _, _, lam = fusion(hd, md, hp, mp)
    assert fused.shape == (2, 9, 8)
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 1, 1, 0, 0]]
    for b in range(2):  # eq. 2-3 by hand on the real tokens; dialogue part l1 H^_D + l3 H_D, persona part l2 H^_P
        n, m = int(md[b].sum()), int(mp[b].sum())
        D, P = hd[b, :n], hp[b, :m]
        Dh = fusion.dialogue_norm(D + torch.softmax(D @ P.T, dim=1) @ P)
        Ph = fusion.persona_norm(P + torch.softmax(P @ D.T, dim=1) @ D)
        torch.testing.assert_close(fused[b, :n], lam[0] * Dh + lam[2] * D, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused[b, 5:5 + m], lam[1] * Ph, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="alignment"):
        PALPersonaFusion(8, alignment="truncate")


def test_concat_alignment_model_ignores_persona_padding_and_round_trips(tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    torch.manual_seed(0)
    model = PALForConditionalGeneration.from_backbone(tiny_bert_dir, tokenizer, persona_alignment="concat").eval()
    batch = _batch(tokenizer)
    assert (batch["persona_attention_mask"][1] == 0).any()  # the second persona (placeholder) is padded
    with torch.no_grad():
        out = model(**batch)
        enc = model.encode(batch["input_ids"], batch["attention_mask"], batch["persona_input_ids"],
                           batch["persona_attention_mask"])
        alone = model(**{k: v[1:] for k, v in batch.items()})
    n, m = batch["input_ids"].shape[1], batch["persona_input_ids"].shape[1]
    assert enc.last_hidden_state.shape[1] == n + m
    assert torch.equal(enc.attention_mask, torch.cat([batch["attention_mask"], batch["persona_attention_mask"]], 1))
    real = batch["labels"][1] != -100  # the padded example scores the same as on its own
    torch.testing.assert_close(out.logits[1][real], alone.logits[0][real[: alone.logits.shape[1]]], atol=1e-5, rtol=1e-5)
    # the persona keys matter: another persona changes the logits, no persona gives the H_D decoder
    other = _batch(tokenizer, personas=(["i love sailing ."], ["i have a cat ."]))
    with torch.no_grad():
        changed = model(**other).logits
        free = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert (changed[0] - out.logits[0]).abs().max() > 1e-4
    assert free.encoder_last_hidden_state.shape[1] == n
    model.save_pretrained(tmp_path)
    again = PALForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert again.config.persona_alignment == "concat"
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, out.logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="persona_alignment must be one of"):
        PALConfig(persona_alignment="truncate")


def test_mixture_weights_start_equal(pal):
    model, _ = pal
    torch.testing.assert_close(torch.softmax(model.fusion.mixture_logits, 0), torch.full((3,), 1 / 3))


def test_mixture_init_sets_the_initial_weights_and_is_validated(tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = PALForConditionalGeneration.from_backbone(tiny_bert_dir, tokenizer, mixture_init=[0, 0, 2])
    e2 = torch.exp(torch.tensor(2.0))
    torch.testing.assert_close(model.mixture_weights(), torch.stack([1 / (e2 + 2), 1 / (e2 + 2), e2 / (e2 + 2)]))
    with torch.no_grad():
        model.fusion.mixture_logits.add_(1.0)
    model.save_pretrained(tmp_path)  # the init is part of the config; loading keeps the trained logits
    again = PALForConditionalGeneration.from_pretrained(tmp_path)
    assert again.config.mixture_init == [0.0, 0.0, 2.0]
    torch.testing.assert_close(again.fusion.mixture_logits, torch.tensor([1.0, 1.0, 3.0]))
    for bad in ([0, 1], [0, 0, float("nan")], "0,0,2", [0, 0, True]):
        with pytest.raises(ValueError, match="mixture_init must be three finite numbers"):
            PALConfig(mixture_init=bad)


def test_fusion_norm_init_copies_the_encoder_last_layer_norm(tiny_bert_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    # a backbone whose LayerNorms are not ones / zeros, so that a copy differs from a fresh LayerNorm
    bert = AutoModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        for i, layer in enumerate(bert.encoder.layer):
            layer.output.LayerNorm.weight.fill_(0.5 + i)
            layer.output.LayerNorm.bias.fill_(0.25 + i)
    bert.save_pretrained(tmp_path / "bert")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "bert")
    last = len(bert.encoder.layer) - 1

    fresh = PALForConditionalGeneration.from_backbone(str(tmp_path / "bert"))
    assert fresh.config.fusion_norm_init == "fresh"
    torch.testing.assert_close(fresh.fusion.dialogue_norm.weight, torch.ones(fresh.config.hidden_size))
    model = PALForConditionalGeneration.from_backbone(str(tmp_path / "bert"), fusion_norm_init="encoder")
    for norm in (model.fusion.dialogue_norm, model.fusion.persona_norm):
        torch.testing.assert_close(norm.weight, torch.full_like(norm.weight, 0.5 + last))
        torch.testing.assert_close(norm.bias, torch.full_like(norm.bias, 0.25 + last))
    model.save_pretrained(tmp_path / "pal")
    assert PALForConditionalGeneration.from_pretrained(tmp_path / "pal").config.fusion_norm_init == "encoder"
    with pytest.raises(ValueError, match="fusion_norm_init must be one of"):
        PALConfig(fusion_norm_init="copy")


# ---------------------------------------------------------------- forward / generate
def test_loss_is_token_mean_cross_entropy(pal):
    model, tok = pal
    batch = _batch(tok)
    out = model(**batch)
    labels = batch["labels"]
    logp = torch.log_softmax(out.logits, -1)
    keep = labels != -100
    manual = -logp[keep].gather(-1, labels[keep][:, None]).mean()
    torch.testing.assert_close(out.loss, manual, atol=1e-5, rtol=1e-5)
    # decoder input = [start] + labels[:-1] (label padding becomes pad)
    dec = model._shift_right(labels)
    assert dec[0, 0] == model.config.decoder_start_token_id and dec[0, 1] == labels[0, 0]


def test_persona_free_call_uses_dialogue_states(pal):
    model, tok = pal
    batch = _batch(tok)
    with torch.no_grad():
        with_p = model(**batch)
        without = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(without.encoder_last_hidden_state, with_p.dialogue_hidden_state)
    assert (with_p.logits - without.logits).abs().max() > 1e-4
    with pytest.raises(ValueError, match="batch size"):
        model(input_ids=batch["input_ids"], persona_input_ids=batch["persona_input_ids"][:1], labels=batch["labels"])
    with pytest.raises(ValueError, match="placeholder"):
        model(input_ids=batch["input_ids"], persona_input_ids=batch["persona_input_ids"],
              persona_attention_mask=torch.zeros_like(batch["persona_input_ids"]), labels=batch["labels"])


def test_generate_with_and_without_persona_reports_strategy(pal):
    model, tok = pal
    batch = _batch(tok)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")}
    # force the strategy slot through the decoder prompt: strategies_of reads it back
    start = model.config.decoder_start_token_id
    forced = torch.tensor([[start, tok.convert_tokens_to_ids("[Information]")]] * 2)
    seq = model.generate(**inputs, decoder_input_ids=forced, max_new_tokens=4, do_sample=False)
    assert seq.shape == (2, 6)
    assert model.strategies_of(seq) == ["Information", "Information"]
    plain = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4)
    assert plain.shape[0] == 2
    # generate's first step equals the teacher-forced forward's argmax
    with torch.no_grad():
        first = model(**inputs, decoder_input_ids=torch.full((2, 1), start)).logits[:, -1].argmax(-1)
    free = model.generate(**inputs, max_new_tokens=1, do_sample=False)
    assert free[:, 1].tolist() == first.tolist()


# ---------------------------------------------------------------- registration, round trip, LoRA
def test_auto_registration_via_plugin(pal, tmp_path):
    import transformers
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    import hf_persona

    spec = hf_persona.get_model_spec("pal") if hasattr(hf_persona, "get_model_spec") else None
    if spec is None:
        from hf_persona.plugins import get_model_spec

        spec = get_model_spec("pal")
    assert spec.model_class is PALForConditionalGeneration and spec.auto_class == "AutoModelForSeq2SeqLM"
    model, _ = pal
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PALConfig)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert isinstance(loaded, PALForConditionalGeneration)
    assert transformers.__version__.startswith("5.")


def test_remote_code_round_trip_without_hf_persona(pal, tmp_path):
    model, tok = pal
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    for f in ("configuration_pal.py", "modeling_pal.py", "generation_pal.py", "processing_pal.py"):
        assert f in files
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["auto_map"]["AutoModelForSeq2SeqLM"] == \
        "modeling_pal.PALForConditionalGeneration"
    loaded = PALForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    batch = _batch(tok)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")}
    with torch.no_grad():
        ref_logits = loaded(**batch).logits
    ref_seq = loaded.generate(**inputs, max_new_tokens=5, do_sample=False)
    # strategy contrastive decoding from the checkpoint's own code (greedy and 2 beams)
    from transformers import LogitsProcessorList

    forced = torch.tensor([[loaded.config.decoder_start_token_id, tok.convert_tokens_to_ids("[Information]")]] * 2)
    alpha = {"Information": 0.6}
    ref_contrast = loaded.generate(**inputs, decoder_input_ids=forced, max_new_tokens=4, do_sample=False,
                                   logits_processor=LogitsProcessorList([loaded.strategy_contrast_processor(alpha)]))
    ref_beam = loaded.generate(**inputs, decoder_input_ids=forced, max_new_tokens=4, num_beams=2,
                               logits_processor=LogitsProcessorList([loaded.strategy_contrast_processor(alpha)]))
    rec_scores = loaded.generate(**inputs, decoder_input_ids=forced, max_new_tokens=2, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True,
                                 logits_processor=LogitsProcessorList([loaded.strategy_contrast_processor(alpha)])).scores
    torch.save({"batch": dict(batch)}, tmp_path / "batch.pt")
    out = run_without_hf_persona(f"""
        import json, torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        ckpt = {str(tmp_path / 'ckpt')!r}
        model = AutoModelForSeq2SeqLM.from_pretrained(ckpt, trust_remote_code=True).eval()
        assert type(model).__name__ == "PALForConditionalGeneration", type(model)
        assert "hf_persona" not in type(model).__module__
        batch = torch.load({str(tmp_path / 'batch.pt')!r})["batch"]
        with torch.no_grad():
            logits = model(**batch).logits
        inputs = {{k: batch[k] for k in ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")}}
        seq = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        from transformers import LogitsProcessorList
        proc = model.strategy_contrast_processor({{"Information": 0.6}})
        assert type(proc).__name__ == "StrategyContrastiveLogitsProcessor" and "hf_persona" not in type(proc).__module__
        forced = torch.tensor([[model.config.decoder_start_token_id, model.config.strategy_token_ids[6]]] * 2)
        contrast = model.generate(**inputs, decoder_input_ids=forced, max_new_tokens=4, do_sample=False,
                                  logits_processor=LogitsProcessorList([proc]))
        beam = model.generate(**inputs, decoder_input_ids=forced, max_new_tokens=4, num_beams=2,
                              logits_processor=LogitsProcessorList([model.strategy_contrast_processor({{"Information": 0.6}})]))
        scores = model.generate(**inputs, decoder_input_ids=forced, max_new_tokens=2, do_sample=False,
                                output_scores=True, return_dict_in_generate=True,
                                logits_processor=LogitsProcessorList([model.strategy_contrast_processor({{"Information": 0.6}})])).scores
        import importlib
        pal = importlib.import_module(type(model).__module__.rsplit(".", 1)[0] + ".processing_pal")
        tok = AutoTokenizer.from_pretrained(ckpt)
        ex = pal.build_pal_example(["hi"], ["usr"], None, [], tokenizer=tok)
        print("persona", tok.convert_ids_to_tokens(ex["persona_input_ids"]))
        torch.save({{"logits": logits, "seq": seq, "contrast": contrast, "beam": beam, "scores": scores}},
                   {str(tmp_path / 'remote.pt')!r})
        print("ok", type(model).__module__)
    """)
    assert "persona ['[CLS]', '[No persona]', '[SEP]']" in out and "ok" in out
    remote = torch.load(tmp_path / "remote.pt")
    torch.testing.assert_close(remote["logits"], ref_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(remote["seq"], ref_seq)
    assert torch.equal(remote["contrast"], ref_contrast) and torch.equal(remote["beam"], ref_beam)
    for mine, theirs in zip(rec_scores, remote["scores"]):
        torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)
    # the contrast really acted (alpha 0.6 on [Information]) in the remote process too
    with torch.no_grad():
        plain = loaded(**inputs, decoder_input_ids=forced).logits[:, -1]
    assert (remote["scores"][0] - plain).abs().max() > 1e-4


def test_lora_trains_adapters(pal):
    from peft import LoraConfig, get_peft_model

    model, tok = pal
    base = PALForConditionalGeneration(model.config)
    base.load_state_dict(model.state_dict())
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"], lora_dropout=0.0))
    peft_model.train()
    batch = _batch(tok)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for _ in range(6):
        loss = peft_model(**batch).loss
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for n, p in peft_model.named_parameters() if "lora_" in n]
        assert grads and all(g is not None for g in grads)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert all(not p.requires_grad for n, p in peft_model.named_parameters() if "lora_" not in n)
    # decoder-side LoRA modules exist (cross-attention included)
    names = [n for n, _ in peft_model.named_modules() if n.endswith("crossattention.self.query")]
    assert names and any(hasattr(m, "lora_A") for n, m in peft_model.named_modules() if n in names)
