"""PAL over a causal LM: identity at initialisation, causal fusion (incremental = full pass),
strategy contrastive decoding against two uncached full passes, chat-template examples,
save / load and LoRA."""

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

from hf_persona.models.pal import (
    DEFAULT_STRATEGY_ALPHA,
    STRATEGY_NAMES,
    PALCausalCache,
    PALCollator,
    PALForCausalLM,
    PALPersonaFusion,
    build_pal_causal_example,
    build_pal_example,
)

DISTINCT = {name: round(0.15 + 0.2 * i, 2) for i, name in enumerate(STRATEGY_NAMES)}


@pytest.fixture(scope="module", params=[0, 1], ids=["fused_layer0", "fused_last_layer"])
def pal_causal(tiny_llama_dir, request):
    """Both fusion placements of the 2-layer model: a lower layer (contrastive decoding doubles the
    batch and the cache) and the last layer (both passes share one trunk and one cache)."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = PALForCausalLM.from_backbone(tiny_llama_dir, tokenizer, fusion_layer=request.param).eval()
    assert model.fuses_last_layer == (request.param == 1)
    examples = [
        build_pal_causal_example(["hi", "hello , how can i help ?", "i lost my job and i feel awful"],
                                 ["usr", "sys", "usr"], ["", "Question", ""], ["i am a teacher .", "i have two kids ."],
                                 tokenizer=tokenizer),
        build_pal_causal_example(["my dog died"], ["usr"], None, [], tokenizer=tokenizer),
        build_pal_causal_example(["exams are next week", "you sound worried", "i cannot sleep"], ["usr", "sys", "usr"],
                                 ["", "Reflection of feelings", ""], ["i am a student ."], tokenizer=tokenizer),
    ]
    batch = PALCollator(tokenizer, padding_side="left")(examples)
    assert (batch["attention_mask"][:, 0] == 0).any()  # left padding really happens
    return model, tokenizer, batch


@pytest.fixture
def opened(pal_causal):
    """The model with a random, non-zero gate and mixture (as after training), restored afterwards."""
    model, tok, batch = pal_causal
    saved = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fusion")}
    torch.manual_seed(1)
    with torch.no_grad():
        model.fusion_gate.uniform_(0.3, 1.0)
        model.fusion.mixture_logits.normal_()
    yield model, tok, batch
    with torch.no_grad():
        for k, v in saved.items():
            model.state_dict()[k].copy_(v)


def _inputs(batch, rows=1):
    keys = ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")
    return {k: batch[k].repeat_interleave(rows, dim=0) for k in keys}


class Recorder(LogitsProcessor):
    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append((input_ids.clone(), scores.clone()))
        return scores


def _full(model, x, ids, persona=True):
    """Last-position logits of one uncached full pass over the prompt + generated tokens."""
    width = x["input_ids"].shape[1]
    mask = torch.cat([x["attention_mask"], torch.ones(ids.shape[0], ids.shape[1] - width, dtype=torch.long)], 1)
    context = torch.zeros_like(mask)
    context[:, :width] = x["attention_mask"]
    kw = dict(persona_input_ids=x["persona_input_ids"], persona_attention_mask=x["persona_attention_mask"]) if persona else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, context_mask=context, use_cache=False, **kw).logits[:, -1].float()


def test_identity_at_initialisation(pal_causal):
    """A zero gate: exactly the pretrained LM, with or without a persona."""
    model, _, batch = pal_causal
    x = _inputs(batch)
    with torch.no_grad():
        plain = model.backbone(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        with_persona = model(**x).logits
        without = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
    assert torch.equal(with_persona, plain) and torch.equal(without, plain)


def test_persona_changes_the_logits_once_the_gate_opens(opened):
    model, _, batch = opened
    x = _inputs(batch)
    with torch.no_grad():
        plain = model.backbone(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        with_persona = model(**x).logits
        without = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
    assert torch.equal(without, plain)
    assert (with_persona - plain).abs().max() > 1e-3


def test_fusion_halves_equal_the_seq2seq_fusion():
    """refine_persona + fuse_positions (causal PAL) compute what PALPersonaFusion.forward does."""
    torch.manual_seed(0)
    fusion = PALPersonaFusion(8, scale=True)
    with torch.no_grad():
        fusion.mixture_logits.normal_()
    d, p = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    dm, pm = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    fused, _, refined, attn, _ = fusion(d, dm, p, pm)
    refined2 = fusion.refine_persona(p, pm, d, dm)
    fused2, attn2 = fusion.fuse_positions(d, p, pm, refined2)
    torch.testing.assert_close(refined2, refined)
    torch.testing.assert_close(fused2, fused)
    torch.testing.assert_close(attn2, attn)


def test_reply_tokens_never_reach_the_refined_persona(opened):
    """Teacher forcing with labels: changing a reply token changes no logit before it."""
    model, tok, batch = opened
    x = _inputs(batch)
    reply = torch.tensor([[model.config.strategy_token_ids[0], 2000, 2001, 2002]] * 3)
    ids = torch.cat([x["input_ids"], reply], 1)
    mask = torch.cat([x["attention_mask"], torch.ones_like(reply)], 1)
    labels = torch.cat([torch.full_like(x["input_ids"], -100), reply], 1)
    other = ids.clone()
    other[:, -1] = 2500
    kw = dict(persona_input_ids=x["persona_input_ids"], persona_attention_mask=x["persona_attention_mask"])
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, labels=labels, **kw)
        b = model(input_ids=other, attention_mask=mask, labels=labels, **kw).logits
    torch.testing.assert_close(a.logits[:, :-1], b[:, :-1], atol=1e-6, rtol=1e-6)
    assert torch.isfinite(a.loss) and a.loss > 0


@pytest.mark.parametrize("sampling", [False, True])
def test_generation_with_the_cache_equals_full_passes(opened, sampling):
    model, _, batch = opened
    x = _inputs(batch)
    rec = Recorder()
    torch.manual_seed(5)
    kw = dict(do_sample=True, top_k=20, temperature=0.8) if sampling else dict(do_sample=False)
    model.generate(**x, max_new_tokens=4, logits_processor=LogitsProcessorList([rec]), **kw)
    assert len(rec.steps) == 4
    for ids, scores in rec.steps:  # (temperature and top-k come after the recorder)
        torch.testing.assert_close(scores, _full(model, x, ids), atol=1e-4, rtol=1e-4)


def _reference(model, x, ids, table, width, log_probs=False):
    a, b = _full(model, x, ids), _full(model, x, ids, persona=False)
    by_id = dict(zip(model.config.strategy_token_ids, STRATEGY_NAMES))
    if ids.shape[1] > width:
        alpha = torch.tensor([table.get(by_id.get(t), 0.0) if t in by_id else 0.0 for t in ids[:, width].tolist()])
    else:
        alpha = torch.zeros(ids.shape[0])
    alpha = alpha[:, None]
    if log_probs:
        a, b = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        return torch.where(alpha == 0, a, torch.log_softmax((1 + alpha) * a - alpha * b, -1))
    return (1 + alpha) * a - alpha * b


class ForceStrategies(LogitsProcessor):
    """First step: make each row's (or beam's) strategy the winner, so alphas differ per row."""

    def __init__(self, token_ids, width):
        self.token_ids, self.width = token_ids, width

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.width:
            scores = scores.clone()
            for rank, tid in enumerate(self.token_ids):
                scores[:, tid] = 50.0 - 0.5 * rank
        return scores


@pytest.mark.parametrize("in_hidden_space", [True, False])
def test_contrastive_greedy_matches_two_full_passes(opened, in_hidden_space):
    model, _, batch = opened
    x = _inputs(batch)
    width = x["input_ids"].shape[1]
    proc = model.strategy_contrast_processor(alpha=DISTINCT, combine_before_lm_head=in_hidden_space)
    rec = Recorder()
    first = [model.config.strategy_token_ids[i] for i in (6, 1, 4)]
    out = model.generate(**x, max_new_tokens=4, do_sample=False,
                         logits_processor=LogitsProcessorList([proc, ForceStrategies(first[:1], width), rec]))
    assert model.strategies_of(out, width) == ["Information"] * 3
    for ids, produced in rec.steps[1:]:
        torch.testing.assert_close(produced, _reference(model, x, ids, DISTINCT, width), atol=1e-4, rtol=1e-4)
    assert proc.last_alpha.tolist() == pytest.approx([DISTINCT["Information"]] * 3)


def test_contrastive_beams_with_different_strategies_match_full_passes(opened):
    model, _, batch = opened
    x = _inputs(batch)
    width = x["input_ids"].shape[1]
    proc = model.strategy_contrast_processor(alpha=DISTINCT)
    rec = Recorder()
    order = [model.config.strategy_token_ids[i] for i in (5, 1, 6, 7, 4)]
    out = model.generate(**x, num_beams=3, num_return_sequences=2, max_new_tokens=5, do_sample=False,
                         logits_processor=LogitsProcessorList([proc, ForceStrategies(order, width), rec]))
    assert out.shape[0] == 6
    mixed = reordered = False
    previous = None
    for ids, produced in rec.steps[1:]:
        if previous is not None and not torch.equal(ids[:, :-1], previous):
            reordered = True
        previous = ids
        xr = _inputs(batch, 3)
        expected = _reference(model, xr, ids, DISTINCT, width, log_probs=True)
        alphas = {DISTINCT.get(model.strategies_of(ids, width)[i]) for i in range(3)}
        mixed = mixed or len(alphas) > 1
        torch.testing.assert_close(produced, expected, atol=1e-4, rtol=1e-4)
    assert mixed and reordered


def test_contrastive_sampling_and_alpha_zero(opened):
    model, _, batch = opened
    x = _inputs(batch)
    torch.manual_seed(2)
    plain = model.generate(**x, max_new_tokens=5, do_sample=True, top_k=10, num_return_sequences=2)
    torch.manual_seed(2)
    zero = model.strategy_contrast_processor(alpha=0.0)
    same = model.generate(**x, max_new_tokens=5, do_sample=True, top_k=10, num_return_sequences=2,
                          logits_processor=LogitsProcessorList([zero]))
    assert torch.equal(plain, same)
    rec = Recorder()
    width = x["input_ids"].shape[1]
    proc = model.strategy_contrast_processor()  # Table 2
    model.generate(**x, max_new_tokens=4, do_sample=True, top_k=10, num_return_sequences=2,
                   logits_processor=LogitsProcessorList([proc, ForceStrategies(
                       [model.config.strategy_token_ids[STRATEGY_NAMES.index("Information")]], width), rec]))
    xr = _inputs(batch, 2)
    for ids, produced in rec.steps[1:]:
        expected = _reference(model, xr, ids, DEFAULT_STRATEGY_ALPHA, width)
        finite = torch.isfinite(produced)
        torch.testing.assert_close(produced[finite], expected[finite], atol=1e-4, rtol=1e-4)


def test_the_cache_holds_the_persona_and_both_halves(opened):
    model, _, batch = opened
    x = _inputs(batch)
    out = model.generate(**x, max_new_tokens=2, do_sample=False, return_dict_in_generate=True,
                         logits_processor=LogitsProcessorList([model.strategy_contrast_processor()]))
    cache = out.get("cache", out.get("past_key_values"))
    assert isinstance(cache, PALCausalCache) and cache.persona is not None
    rows = 3 if model.fuses_last_layer else 6
    assert cache.doubled == (not model.fuses_last_layer)
    assert cache.layers[0].keys.shape[0] == rows and cache.persona[0].shape[0] == 3


def test_causal_example_uses_the_chat_template(pal_causal):
    model, tok, _ = pal_causal
    ex = build_pal_causal_example(["i feel alone", "that sounds hard", "nobody calls me"], ["usr", "sys", "usr"],
                                  ["", "Reflection of feelings", ""], ["i live alone ."], "have you tried calling a friend ?",
                                  "Question", tokenizer=tok, system_prompt="be kind")
    n = ex["prompt_length"]
    prompt = tok.decode(ex["input_ids"][:n])
    assert prompt.startswith("<|im_start|> system be kind <|im_end|>")
    assert "<|im_start|> assistant [Reflection of feelings] that sounds hard <|im_end|>" in prompt
    assert prompt.endswith("<|im_start|> assistant")
    assert ex["labels"][:n] == [-100] * n
    assert ex["labels"][n] == tok.convert_tokens_to_ids("[Question]") and ex["labels"][-1] == tok.eos_token_id
    assert ex["persona_input_ids"] == build_pal_example(["x"], ["usr"], persona_sentences=["i live alone ."],
                                                        tokenizer=tok)["persona_input_ids"]
    # the window counts the dialogue only: a long system turn (a Hard Prompt persona) comes on top
    long_system = "be kind and listen to what the person says before you answer"
    short = build_pal_causal_example(["a " * 80, "b " * 10, "c c c"], ["usr", "sys", "usr"], None, [], tokenizer=tok,
                                     system_prompt=long_system, max_source_length=20)
    system_text = tok.apply_chat_template([{"role": "system", "content": long_system}], tokenize=False)
    system = len(tok(system_text, add_special_tokens=False)["input_ids"])
    text = tok.decode(short["input_ids"])
    assert system > 10 and short["prompt_length"] - system <= 20 < short["prompt_length"]
    assert "c c c" in text and "b b" not in text and "listen to what the person says" in text
    with pytest.raises(ValueError, match="chat template"):
        build_pal_causal_example(["hi"], ["usr"], tokenizer=_no_template(tok))


def _no_template(tok):
    import copy

    other = copy.deepcopy(tok)
    other.chat_template = None
    return other


def test_save_load_and_lora(opened, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tok, batch = opened
    x = _inputs(batch)
    model.save_pretrained(tmp_path / "pal_causal")
    loaded = PALForCausalLM.from_pretrained(tmp_path / "pal_causal").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, model(**x).logits)
    assert (tmp_path / "pal_causal" / "model.safetensors").exists()
    lora = get_peft_model(loaded, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                             modules_to_save=["fusion"], lora_dropout=0.0))
    lora.train()
    before = {n: p.clone() for n, p in lora.named_parameters() if p.requires_grad}
    labels = x["input_ids"].masked_fill(x["attention_mask"] == 0, -100)
    loss = lora(**x, labels=labels).loss
    loss.backward()
    torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.1).step()
    changed = [n for n, p in lora.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("lora_" in n for n in changed)


def test_remote_code_round_trip_without_hf_persona(opened, tmp_path):
    """A user with only transformers loads the checkpoint with trust_remote_code and decodes the
    same tokens, contrastive beams included."""
    import json

    from tests.helpers import run_without_hf_persona

    model, tok, batch = opened
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_pal_causal.PALForCausalLM"
    x = _inputs(batch)
    ref_beam = model.generate(**x, max_new_tokens=4, num_beams=2,
                              logits_processor=LogitsProcessorList([model.strategy_contrast_processor(0.6,
                                                                    unknown_strategy_alpha=0.6)]))
    torch.save(x, tmp_path / "x.pt")
    out = run_without_hf_persona(f"""
        import torch
        from transformers import AutoModelForCausalLM, LogitsProcessorList
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "PALForCausalLM" and "hf_persona" not in type(model).__module__
        x = torch.load({str(tmp_path / 'x.pt')!r})
        proc = model.strategy_contrast_processor(0.6, unknown_strategy_alpha=0.6)
        beam = model.generate(**x, max_new_tokens=4, num_beams=2, logits_processor=LogitsProcessorList([proc]))
        torch.save(beam, {str(tmp_path / 'beam.pt')!r})
        print("ok")
    """)
    assert "ok" in out
    assert torch.equal(torch.load(tmp_path / "beam.pt"), ref_beam)


def test_one_unpadded_dialogue_generates_as_in_a_padded_batch(opened):
    """A single prompt without padding: transformers then steps the cache without an attention
    mask, which must cover the cached positions too (it once covered the new token only, and
    greedy decoding of the real model turned to punctuation after the first token)."""
    model, tok, batch = opened
    one = {k: batch[k][1:2] for k in ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")}
    start = int((one["attention_mask"][0] == 0).sum())  # drop this row's left padding
    alone = {"input_ids": one["input_ids"][:, start:], "attention_mask": one["attention_mask"][:, start:],
             "persona_input_ids": one["persona_input_ids"], "persona_attention_mask": one["persona_attention_mask"]}
    assert alone["attention_mask"].all()
    with torch.no_grad():
        padded = model.generate(**_inputs(batch), do_sample=False, max_new_tokens=6, min_new_tokens=6)
        single = model.generate(**alone, do_sample=False, max_new_tokens=6, min_new_tokens=6)
    width = batch["input_ids"].shape[1]
    assert single[0, alone["input_ids"].shape[1]:].tolist() == padded[1, width:].tolist()
    # the same step with and without the mask
    with torch.no_grad():
        first = model(**alone, use_cache=True)
        step = {"input_ids": single[:, alone["input_ids"].shape[1]:][:, :1]}
        import copy

        cache_a, cache_b = first.cache, copy.deepcopy(first.cache)
        full_mask = torch.ones(1, alone["input_ids"].shape[1] + 1, dtype=torch.long)
        with_mask = model(**step, attention_mask=full_mask, cache=cache_a).logits
        without = model(**step, cache=cache_b).logits
    torch.testing.assert_close(without, with_mask)
