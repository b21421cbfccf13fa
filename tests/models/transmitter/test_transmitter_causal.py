"""P2Bot Transmitter over an instruction-tuned causal LM (a tiny random llama with a ChatML template):
the chat format, cached scoring against full sequences, per-word perplexity, LoRA, the CLI."""

import json
import math

import pytest
import torch


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from hf_persona.tiny import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tx_llama") / "llama")


@pytest.fixture(scope="module")
def model_tok(llama_dir):
    from hf_persona.training.transmitter import load_transmitter

    torch.manual_seed(0)
    model, tok = load_transmitter(llama_dir, max_context_tokens=96, max_response_tokens=12)
    return model.eval(), tok


PERSONA = ["i like dogs.", "i am a nurse."]
HISTORY = ["hi there", "hello! how are you?", "good, you?"]


def test_chat_format_roles_labels_and_nup(model_tok):
    from hf_persona.models.transmitter import CHAT_SYSTEM_PROMPT, build_example, special_token_ids, uses_chat_format

    _, tok = model_tok
    assert uses_chat_format(tok)
    ids = special_token_ids(tok)
    ex = build_example(tok, PERSONA, HISTORY, "great thanks, walking my dog.", 96, 12)
    expected_prompt = tok.apply_chat_template(
        [{"role": "system", "content": CHAT_SYSTEM_PROMPT + " Your persona: i like dogs. i am a nurse."},
         {"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello! how are you?"},
         {"role": "user", "content": "good, you?"}], tokenize=False, add_generation_prompt=True)
    context = ex["input_ids"][: ex["context_length"]]
    assert context == tok.encode(expected_prompt, add_special_tokens=False)
    reply = tok.encode("great thanks, walking my dog.", add_special_tokens=False)
    assert ex["input_ids"][ex["context_length"]:] == reply + [tok.eos_token_id, ids["nup"]]
    assert ex["labels"] == [-100] * len(context) + reply + [tok.eos_token_id, -100]
    assert ex["cls_index"] == len(ex["input_ids"]) - 1
    assert tok.eos_token == "<|im_end|>"  # the end-of-turn token ends the reply


def test_chat_format_truncation_keeps_the_answered_turn(model_tok):
    from hf_persona.models.transmitter import build_context_ids

    _, tok = model_tok
    long_history = [f"utterance number {i} about something" for i in range(12)] + ["what do you do for work?"]
    ctx = build_context_ids(tok, PERSONA, long_history, max_context_tokens=80)
    text = tok.decode(ctx)
    assert len(ctx) <= 80 and "what do you do for work?" in text and "number 0 " not in text
    assert text.rstrip().endswith("assistant")
    # a single over-long utterance keeps its tail
    ctx = build_context_ids(tok, [], ["blah " * 200 + "the end ?"], max_context_tokens=70)
    assert len(ctx) <= 70 and "blah the end" in tok.decode(ctx)
    with pytest.raises(ValueError, match="max_context_tokens"):
        build_context_ids(tok, PERSONA, HISTORY, max_context_tokens=12)
    with pytest.raises(TypeError, match="string utterance"):
        build_context_ids(tok, PERSONA, ["hi", 3], max_context_tokens=96)


def test_cached_scoring_equals_full_sequences(model_tok):
    """rank_candidates / rerank_scores share the context's KV cache; the numbers must equal the
    uncached forward pass over each full sequence."""
    from hf_persona.models.transmitter import build_context_ids, build_example, encode_response, pad_batch, \
        special_token_ids

    model, tok = model_tok
    ids = special_token_ids(tok)
    cands = ["yes, two dogs", "no", "i drive a bus every single day"]
    scores = model.rank_candidates(tok, PERSONA, HISTORY, cands)
    full = model.score_batch(pad_batch([build_example(tok, PERSONA, HISTORY, c, 96, 12) for c in cands], ids["pad"]))
    assert torch.allclose(torch.tensor(scores), full["nup_logprob"], atol=1e-4)
    ctx = build_context_ids(tok, PERSONA, HISTORY, 96)
    resp = [encode_response(tok, c, 12) for c in cands]
    cached = model.score_continuations(ctx, resp, ids, need_lm=True)
    assert torch.allclose(cached["logprob_sum"], full["logprob_sum"], atol=1e-3)
    assert cached["n_tokens"].tolist() == full["n_tokens"].tolist()
    reply = model.respond(tok, PERSONA, HISTORY, num_beams=2, max_new_tokens=6)
    assert isinstance(reply, str)


def test_per_word_perplexity_is_the_token_nll_over_words(model_tok):
    from hf_persona.evaluation.transmitter import evaluate_transmitter
    from hf_persona.models.transmitter import build_example, pad_batch, special_token_ids
    from hf_persona.training.persona_extractor import count_words

    model, tok = model_tok
    examples = [{"persona": PERSONA, "history": HISTORY, "response": "great thanks, walking my dog today.",
                 "candidates": ["great thanks, walking my dog today.", "no"]},
                {"persona": ["i ski."], "history": ["do you like snow?"], "response": "yes i love it",
                 "candidates": ["yes i love it", "the bus is late"]}]
    m = evaluate_transmitter(model, tok, examples, num_beams=1, max_new_tokens=4, samples=1)
    batch = pad_batch([build_example(tok, e["persona"], e["history"], e["response"], 96, 12) for e in examples],
                      special_token_ids(tok)["pad"])
    s = model.score_batch(batch)
    nll = -float(s["logprob_sum"].sum())
    words = count_words("great thanks, walking my dog today.") + count_words("yes i love it")
    assert words == 10
    assert m["ppl"] == pytest.approx(math.exp(nll / int(s["n_tokens"].sum())), rel=1e-5)
    assert m["ppl_word"] == pytest.approx(math.exp(nll / words), rel=1e-5)
    assert m["samples"] == [{"persona": PERSONA, "partner_said": "good, you?",
                             "gold": "great thanks, walking my dog today.", "generated": m["samples"][0]["generated"]}]


def test_language_style_scores_the_reply_as_the_transmitter_writes_it(model_tok):
    from hf_persona.models.transmitter import build_context_ids, encode_response
    from hf_persona.rewards import LanguageStyleScore

    model, tok = model_tok
    reward = LanguageStyleScore(model, tok)
    prefix, scored = reward._sequence("  i love my dog  ")
    assert prefix == build_context_ids(tok, [], [], max_context_tokens=64)
    assert scored == encode_response(tok, "i love my dog", 64)
    x = torch.tensor([prefix + scored])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1)
    expect = sum(lp[len(prefix) - 1 + j, t].item() for j, t in enumerate(scored)) / len(scored)
    assert reward([""], ["  i love my dog  "])[0] == pytest.approx(expect, abs=1e-4)


def test_lora_training_saves_a_merged_model_and_the_adapter(tmp_path, llama_dir):
    from hf_persona.cli import main
    from hf_persona.data import sample_path
    from hf_persona.training.transmitter import load_transmitter

    out = tmp_path / "lora"
    main(["train", "transmitter", "--backbone", llama_dir, "--data", str(sample_path("personachat")),
          "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2", "--lora", "4", "--lr", "1e-2",
          "--max-context-tokens", "96", "--json", str(tmp_path / "s.json")])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["lora"] == 4 and summary["global_step"] == 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and "nup_head" in adapter["modules_to_save"]
    model, tok = load_transmitter(str(out))  # the merged folder is a plain Transmitter
    assert type(model).__name__ == "TransmitterForDialogue"
    assert not any("lora_" in n for n, _ in model.named_parameters())
    full, _ = load_transmitter(llama_dir)
    total = sum(p.numel() for p in full.parameters())
    assert 0 < summary["trainable_parameters"] < total / 4  # adapters + NUP head only
    assert isinstance(model.respond(tok, PERSONA, HISTORY, num_beams=1, max_new_tokens=3), str)


def test_lora_rank_must_be_positive(model_tok):
    from hf_persona.errors import HFPersonaError
    from hf_persona.training.transmitter import add_transmitter_lora

    with pytest.raises(HFPersonaError, match="rank"):
        add_transmitter_lora(model_tok[0], 0)
