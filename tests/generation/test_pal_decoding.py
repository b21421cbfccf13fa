"""Strategy contrastive decoding (PAL section 3.4): per-step equality with two uncached full
passes, beams, sampling, processor ordering, alpha = 0 identity, alpha tables and errors."""

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

import hf_persona
from hf_persona.generation import (
    DEFAULT_STRATEGY_ALPHA,
    STRATEGY_NAMES,
    StrategyContrastiveLogitsProcessor,
    resolve_strategy_alphas,
)
from hf_persona.models.pal import PALCollator, PALForConditionalGeneration, build_pal_example

# a distinct alpha per strategy, so a wrong lookup cannot pass
DISTINCT = {name: round(0.15 + 0.2 * i, 2) for i, name in enumerate(STRATEGY_NAMES)}


@pytest.fixture(scope="module", params=["coattention", "concat"])
def pal(tiny_bert_dir, request):
    """Both persona alignments: with "concat" the persona pass has more keys than the persona-free one."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = PALForConditionalGeneration.from_backbone(tiny_bert_dir, tokenizer, persona_alignment=request.param).eval()
    examples = [
        build_pal_example(["hi", "hello , how can i help ?", "i lost my job and i feel awful about it"],
                          ["usr", "sys", "usr"], ["", "Question", ""], ["i am a teacher .", "i have two kids ."],
                          tokenizer=tokenizer),
        build_pal_example(["my dog died"], ["usr"], None, [], tokenizer=tokenizer),
        build_pal_example(["exams are next week", "you sound worried", "i cannot sleep"], ["usr", "sys", "usr"],
                          ["", "Reflection of feelings", ""], ["i am a student ."], tokenizer=tokenizer),
    ]
    batch = PALCollator(tokenizer)(examples)
    assert (batch["attention_mask"] == 0).any() and (batch["persona_attention_mask"] == 0).any()  # padded
    return model, tokenizer, batch


class Recorder(LogitsProcessor):
    """Placed after the contrastive processor: records what it produced at each step."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append((input_ids.clone(), scores.clone()))
        return scores


def _inputs(batch, rows_per_example=1):
    keys = ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")
    return {k: batch[k].repeat_interleave(rows_per_example, dim=0) for k in keys}


def _reference(model, batch, input_ids, table, log_probs=False, unknown=0.0, rows_per_example=1):
    """(1+a)*logits(d,p) - a*logits(d) from two independent full decoder passes without cache."""
    enc = _inputs(batch, rows_per_example)
    with torch.no_grad():
        a = model(**enc, decoder_input_ids=input_ids, use_cache=False).logits[:, -1].float()
        b = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=input_ids,
                  use_cache=False).logits[:, -1].float()
    by_id = dict(zip(model.config.strategy_token_ids, STRATEGY_NAMES))
    if input_ids.shape[1] > 1:
        alpha = torch.tensor([table[by_id[t]] if t in by_id else unknown for t in input_ids[:, 1].tolist()])
    else:
        alpha = torch.zeros(input_ids.shape[0])
    alpha = alpha[:, None]
    if log_probs:
        a, b = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        out = torch.log_softmax((1 + alpha) * a - alpha * b, -1)
        return torch.where(alpha == 0, a, out), alpha
    return (1 + alpha) * a - alpha * b, alpha


def _forced(model, tokenizer, strategies, rows_per_example=1):
    start = model.config.decoder_start_token_id
    ids = [[start, tokenizer.convert_tokens_to_ids(f"[{s}]")] for s in strategies]
    return torch.tensor(ids).repeat_interleave(rows_per_example, dim=0)


@pytest.mark.parametrize("group", [STRATEGY_NAMES[0:3], STRATEGY_NAMES[3:6], STRATEGY_NAMES[5:8]])
def test_greedy_each_strategy_matches_two_full_passes(pal, group):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha=DISTINCT)
    rec = Recorder()
    seq = model.generate(**_inputs(batch), decoder_input_ids=_forced(model, tok, group), max_new_tokens=3,
                         do_sample=False, logits_processor=LogitsProcessorList([proc, rec]))
    assert len(rec.steps) == 3 and seq.shape[1] == 5
    for input_ids, produced in rec.steps:
        expected, alpha = _reference(model, batch, input_ids, DISTINCT)
        assert alpha.squeeze(1).tolist() == pytest.approx([DISTINCT[s] for s in group])
        torch.testing.assert_close(produced, expected, atol=1e-5, rtol=1e-5)
    assert model.strategies_of(seq) == list(group)
    assert proc._model_alpha is None  # every model step was checked by the processor
    assert "forward" not in model.backbone.get_output_embeddings().__dict__  # CPU head path removed again


def test_first_step_is_plain_then_alpha_of_the_generated_strategy(pal):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha=DISTINCT, unknown_strategy_alpha=0.4)
    rec = Recorder()
    model.generate(**_inputs(batch), max_new_tokens=3, do_sample=False, logits_processor=LogitsProcessorList([proc, rec]))
    first_ids, first_scores = rec.steps[0]
    assert first_ids.shape[1] == 1
    with torch.no_grad():
        plain = model(**_inputs(batch), decoder_input_ids=first_ids).logits[:, -1]
    torch.testing.assert_close(first_scores, plain, atol=1e-5, rtol=1e-5)
    for input_ids, produced in rec.steps[1:]:
        expected, _ = _reference(model, batch, input_ids, DISTINCT, unknown=0.4)
        torch.testing.assert_close(produced, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("in_hidden_space", [True, False])
def test_beam_search_three_beams_matches_full_passes(pal, in_hidden_space):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha=DISTINCT, combine_before_lm_head=in_hidden_space)
    rec = Recorder()
    strategies = ["Providing Suggestions", "Others", "Restatement or Paraphrasing"]
    out = model.generate(**_inputs(batch), decoder_input_ids=_forced(model, tok, strategies), num_beams=3,
                         num_return_sequences=2, max_new_tokens=5, do_sample=False,
                         logits_processor=LogitsProcessorList([proc, rec]))
    assert out.shape[0] == 6
    reordered = False
    previous = None
    for input_ids, produced in rec.steps:
        assert input_ids.shape[0] == 9  # 3 examples x 3 beams
        if previous is not None and not torch.equal(input_ids[:, :-1], previous):
            reordered = True
        previous = input_ids
        expected, _ = _reference(model, batch, input_ids, DISTINCT, log_probs=True, rows_per_example=3)
        # beams that start finished carry -inf-free scores; compare everywhere
        torch.testing.assert_close(produced, expected, atol=1e-5, rtol=1e-5)
    assert reordered, "the beams never reordered; the test would not exercise the cache alignment"
    assert model.strategies_of(out) == [s for s in strategies for _ in range(2)]


def test_sampling_num_return_sequences_matches_full_passes(pal):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor()  # paper Table 2
    rec = Recorder()
    strategies = ["Information", "Affirmation and Reassurance", "Question"]
    torch.manual_seed(3)
    out = model.generate(**_inputs(batch), decoder_input_ids=_forced(model, tok, strategies), do_sample=True,
                         top_k=10, top_p=0.9, temperature=0.5, num_return_sequences=2, max_new_tokens=4,
                         logits_processor=LogitsProcessorList([proc, rec]))
    assert out.shape[0] == 6
    for input_ids, produced in rec.steps:
        expected, alpha = _reference(model, batch, input_ids, DEFAULT_STRATEGY_ALPHA, rows_per_example=2)
        assert alpha.squeeze(1).tolist() == [0.75, 0.75, 0.75, 0.75, 0.0, 0.0]
        torch.testing.assert_close(produced, expected, atol=1e-5, rtol=1e-5)


def test_combination_happens_before_repetition_penalty(pal):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha=DISTINCT)
    rec = Recorder()
    model.generate(**_inputs(batch), decoder_input_ids=_forced(model, tok, STRATEGY_NAMES[4:7]), max_new_tokens=3,
                   do_sample=False, repetition_penalty=1.5, logits_processor=LogitsProcessorList([proc, rec]))
    penalty = RepetitionPenaltyLogitsProcessor(1.5)
    for input_ids, produced in rec.steps:
        combined, _ = _reference(model, batch, input_ids, DISTINCT)
        torch.testing.assert_close(produced, penalty(input_ids, combined), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampling", [False, True])
def test_alpha_zero_is_plain_generate(pal, sampling):
    model, _, batch = pal
    kwargs = dict(max_new_tokens=6, do_sample=sampling, top_k=10, top_p=0.9, temperature=0.7) if sampling else \
        dict(max_new_tokens=6, do_sample=False)
    torch.manual_seed(11)
    plain = model.generate(**_inputs(batch), **kwargs)
    torch.manual_seed(11)
    proc = model.strategy_contrast_processor(alpha=0.0)
    contrast = model.generate(**_inputs(batch), logits_processor=LogitsProcessorList([proc]), **kwargs)
    assert torch.equal(plain, contrast)
    assert proc.last_alpha is not None and (proc.last_alpha == 0).all()


def test_nonzero_alpha_changes_the_distribution(pal):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha="high")
    rec_c, rec_p = Recorder(), Recorder()
    forced = _forced(model, tok, ["Information"] * 3)
    model.generate(**_inputs(batch), decoder_input_ids=forced, max_new_tokens=1, logits_processor=LogitsProcessorList([proc, rec_c]))
    model.generate(**_inputs(batch), decoder_input_ids=forced, max_new_tokens=1, logits_processor=LogitsProcessorList([rec_p]))
    assert (rec_c.steps[0][1] - rec_p.steps[0][1]).abs().max() > 1e-3


# ---------------------------------------------------------------- alpha tables and errors
def test_table2_defaults_and_levels():
    assert resolve_strategy_alphas() == {
        "Question": 0.0, "Restatement or Paraphrasing": 0.75, "Reflection of feelings": 0.0, "Self-disclosure": 0.0,
        "Affirmation and Reassurance": 0.75, "Providing Suggestions": 0.75, "Information": 0.75, "Others": 0.375}
    assert set(resolve_strategy_alphas("medium").values()) == {0.375}
    assert set(resolve_strategy_alphas(0.3).values()) == {0.3}
    table = resolve_strategy_alphas({"question": "high", "[Others]": 0.1})
    assert table["Question"] == 0.75 and table["Others"] == 0.1 and table["Information"] == 0.75


@pytest.mark.parametrize(
    "alpha, error",
    [
        ({"Hugging": 0.5}, ValueError),
        ({"Question": "very high"}, ValueError),
        ({"Question": -0.1}, ValueError),
        ({"Question": float("nan")}, ValueError),
        ({"Question": True}, TypeError),
        ({"Question": [0.5]}, TypeError),
        ({}, ValueError),
        ("extreme", ValueError),
        (float("inf"), ValueError),
        ([0.5] * 8, TypeError),
    ],
)
def test_bad_alpha_lists_valid_strategies(alpha, error):
    with pytest.raises(error) as err:
        resolve_strategy_alphas(alpha)
    for name in STRATEGY_NAMES:
        assert name in str(err.value)


def test_processor_needs_pal_generate(pal):
    model, _, _ = pal
    proc = model.strategy_contrast_processor()
    with pytest.raises(RuntimeError, match="PAL"):
        proc(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="one vocabulary id per strategy"):
        StrategyContrastiveLogitsProcessor([1, 2, 3])


def test_plugin_factory(pal):
    model, tok, _ = pal
    proc = hf_persona.get_logits_processor("strategy_contrast", model=model, alpha={"Question": "medium"})
    assert isinstance(proc, StrategyContrastiveLogitsProcessor)
    assert proc.alphas["Question"] == 0.375 and proc.alphas["Information"] == 0.75
    assert proc.strategy_token_ids == model.config.strategy_token_ids
    by_tokenizer = hf_persona.get_logits_processor("strategy_contrast", tokenizer=tok)
    assert by_tokenizer.strategy_token_ids == model.config.strategy_token_ids
    with pytest.raises(TypeError, match="PAL model"):
        hf_persona.get_logits_processor("strategy_contrast", model=torch.nn.Linear(2, 2))


def test_blenderbot_small_backbone_beams():
    """The Hub backbone family (facebook/blenderbot_small-90M) as a tiny random config: training
    loss, and contrastive beam search matching two uncached full passes."""
    from transformers import BlenderbotSmallConfig

    from hf_persona.models.pal import PALConfig

    torch.manual_seed(0)
    bb = BlenderbotSmallConfig(vocab_size=120, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                               max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                               decoder_start_token_id=1)
    config = PALConfig(backbone=bb, strategy_token_ids=list(range(100, 108)), pad_token_id=0, eos_token_id=2,
                       decoder_start_token_id=1)
    model = PALForConditionalGeneration(config).eval()
    x = dict(input_ids=torch.tensor([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]]),
             attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
             persona_input_ids=torch.tensor([[11, 12, 2], [13, 2, 0]]),
             persona_attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    loss = model(**x, labels=torch.tensor([[100, 20, 21, 2], [105, 22, 2, -100]])).loss
    assert torch.isfinite(loss) and loss.item() > 0
    rec = Recorder()
    out = model.generate(**x, decoder_input_ids=torch.tensor([[1, 105], [1, 106]]), num_beams=3, max_new_tokens=4,
                         decoder_start_token_id=1, eos_token_id=2, pad_token_id=0,
                         logits_processor=LogitsProcessorList([model.strategy_contrast_processor(0.5), rec]))
    assert model.strategies_of(out) == ["Providing Suggestions", "Information"]
    compared = 0
    for ids, produced in rec.steps:
        enc = {k: v.repeat_interleave(3, 0) for k, v in x.items()}
        with torch.no_grad():
            a = torch.log_softmax(model(**enc, decoder_input_ids=ids, use_cache=False).logits[:, -1], -1)
            b = torch.log_softmax(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                        decoder_input_ids=ids, use_cache=False).logits[:, -1], -1)
        finite = torch.isfinite(produced)
        if finite.float().mean() < 0.5:  # a step where a built-in processor forced eos
            continue
        torch.testing.assert_close(produced[finite], torch.log_softmax(1.5 * a - 0.5 * b, -1)[finite], atol=1e-5, rtol=1e-5)
        compared += 1
    assert compared >= 2


class BoostStrategiesAtFirstStep(LogitsProcessor):
    """At the first step, make the strategies the top choices with decreasing margins, so the beams
    of one example start with different strategies (and so different alphas)."""

    def __init__(self, token_ids):
        self.token_ids = token_ids

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == 1:
            scores = scores.clone()
            for rank, tid in enumerate(self.token_ids):
                scores[:, tid] = 50.0 - 0.5 * rank
        return scores


def test_beams_with_different_strategies_keep_their_alphas_when_reordered(pal):
    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha=DISTINCT)
    rec = Recorder()
    order = [model.config.strategy_token_ids[i] for i in (5, 1, 6, 7, 4)]
    out = model.generate(**_inputs(batch), num_beams=3, max_new_tokens=5, do_sample=False,
                         logits_processor=LogitsProcessorList([proc, BoostStrategiesAtFirstStep(order), rec]))
    assert out.shape[0] == 3
    mixed = False
    for input_ids, produced in rec.steps[1:]:
        expected, alpha = _reference(model, batch, input_ids, DISTINCT, log_probs=True, rows_per_example=3)
        if len(set(alpha.squeeze(1).tolist()[:3])) > 1:
            mixed = True
        torch.testing.assert_close(produced, expected, atol=1e-5, rtol=1e-5)
    assert mixed, "the beams of an example never had different strategies"


# ---------------------------------------------------------------- public-API plumbing
def test_cache_argument_name_matches_the_installed_transformers(pal):
    """The one version-dependent function: the name it gives is the one generate() and the
    backbone take (transformers 5.25 renamed past_key_values to cache)."""
    import inspect

    import transformers
    from transformers import GenerationMixin

    from hf_persona.models.pal.generation_pal import cache_argument_name

    model, _, _ = pal
    name = cache_argument_name()
    assert name in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    assert cache_argument_name(model.backbone.forward) in inspect.signature(model.backbone.forward).parameters
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    assert name == ("cache" if (major, minor) >= (5, 25) else "past_key_values")


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_forward_takes_the_cache_under_either_name_and_ignores_extra_kwargs(pal, name):
    """Incremental decoding through forward with a cache equals one uncached full pass,
    whichever name the cache comes under; keywords a generate() may add are ignored."""
    from transformers import DynamicCache, EncoderDecoderCache

    model, tok, batch = pal
    x = _inputs(batch)
    ids = _forced(model, tok, ["Question", "Others", "Information"])
    ids = torch.cat([ids, torch.tensor([[7], [8], [9]])], dim=1)
    with torch.no_grad():
        full = model(**x, decoder_input_ids=ids, use_cache=False).logits
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        enc = model.encode(**x)
        steps = []
        for t in range(ids.shape[1]):
            out = model(encoder_outputs=enc, attention_mask=x["attention_mask"], decoder_input_ids=ids[:, t:t + 1],
                        use_cache=True, cache_position=torch.tensor([t]), next_sequence_length=1, **{name: cache})
            assert out.cache is cache and out.past_key_values is cache
            steps.append(out.logits[:, -1])
    assert cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="two different caches"):
        model(**x, decoder_input_ids=ids[:, :1], cache=cache, past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()))


def test_persona_free_rows_share_the_batch_and_cache(pal):
    """The contrastive cache holds 2R rows (persona, persona-free) after generate(), returned
    when the user asks for it; the processor refuses a cache of the user's own."""
    from transformers import DynamicCache, EncoderDecoderCache

    from hf_persona.models.pal.generation_pal import StrategyContrastCache

    model, tok, batch = pal
    proc = model.strategy_contrast_processor(alpha=DISTINCT)
    out = model.generate(**_inputs(batch), decoder_input_ids=_forced(model, tok, STRATEGY_NAMES[:3]), max_new_tokens=3,
                         do_sample=False, logits_processor=LogitsProcessorList([proc]), return_dict_in_generate=True)
    cache = out.get("cache", out.get("past_key_values"))
    assert isinstance(cache, StrategyContrastCache)
    keys = cache.self_attention_cache.layers[0].keys
    assert keys.shape[0] == 2 * 3  # three sequences, each with its persona-free twin
    assert cache.get_seq_length() == out.sequences.shape[1] - 1  # the last token is never fed back
    with pytest.raises(ValueError, match="brings its own cache"):
        model.generate(**_inputs(batch), max_new_tokens=2, logits_processor=LogitsProcessorList([proc]),
                       **{"past_key_values": EncoderDecoderCache(DynamicCache(), DynamicCache())})
    with pytest.raises(ValueError, match="at most one"):
        model.generate(**_inputs(batch), max_new_tokens=2, logits_processor=LogitsProcessorList([proc, proc]))


def test_a_cache_out_of_step_with_the_sequences_fails_loudly(pal, monkeypatch):
    """If beam reordering stopped reaching the strategy tracking (what a transformers release
    that bypassed Cache.reorder_cache would do), decoding raises instead of mixing alphas."""
    from hf_persona.models.pal.generation_pal import StrategyContrastCache

    model, _, batch = pal
    original = StrategyContrastCache.reorder_cache

    def forgetful(self, beam_idx):
        tokens = self.strategy_tokens
        original(self, beam_idx)
        self.strategy_tokens = tokens  # the KV rows move, the tracked strategies do not

    monkeypatch.setattr(StrategyContrastCache, "reorder_cache", forgetful)
    proc = model.strategy_contrast_processor(alpha=DISTINCT)
    order = [model.config.strategy_token_ids[i] for i in (5, 1, 6, 7, 4)]
    with pytest.raises(RuntimeError, match="out of step"):
        model.generate(**_inputs(batch), num_beams=3, max_new_tokens=6, do_sample=False,
                       logits_processor=LogitsProcessorList([proc, BoostStrategiesAtFirstStep(order)]))
