"""PPG / DRG on causal chat LMs (tiny random llama with a ChatML template): the chat prompt format,
per-word perplexity, and ``train ppg`` / ``train drg`` end to end."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from hf_persona.errors import HFPersonaError
from hf_persona.evaluation.ppg import evaluate_ppg
from hf_persona.training import ppg as P
from hf_persona.data import ppg as D


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rows():
    from hf_persona.data import read_personachat, sample_path

    return list(read_personachat(sample_path("personachat")))[:4]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return P.load_generator(tiny_llama_dir)


def _rloo_prompt_ids(tokenizer, prompts):
    """What TRL's RLOOTrainer computes for text prompts (its own method, on a stand-in trainer)."""
    from trl import RLOOTrainer

    ids, _, _ = RLOOTrainer._tokenize_prompts(SimpleNamespace(processing_class=tokenizer), prompts)
    return [list(x) for x in ids]


@pytest.mark.parametrize("task", ["ppg", "drg"])
def test_chat_prompt_is_the_template_and_sft_ids_are_rloo_ids_plus_completion(llama, rows, task):
    _, tok = llama
    assert tok.eos_token == "<|im_end|>" and D.end_of_turn_token(tok) == "<|im_end|>"
    turns = D.build_turns(rows)[:5]
    examples = P.task_examples(task, turns, tok, 250)
    assert len(examples) == len(turns)
    for turn, ex in zip(turns, examples):
        text = (D.ppg_example(turn) if task == "ppg" else D.drg_example(turn))["prompt"]
        assert ex["text_prompt"] == text
        assert ex["prompt"] == ("<|im_start|>system\n" + D.SYSTEM_PROMPTS[task] + "<|im_end|>\n<|im_start|>user\n"
                                + text + "<|im_end|>\n<|im_start|>assistant\n")
        gold = " ".join(turn["partner_persona"]) if task == "ppg" else turn["response"]
        assert ex["completion"] == gold  # no leading space for chat models
        enc = D.encode_example(tok, ex["prompt"], ex["completion"], 64)
        (rloo,) = _rloo_prompt_ids(tok, [ex["prompt"]])
        completion = tok(gold, add_special_tokens=False)["input_ids"][:63]
        assert enc["input_ids"] == rloo + completion + [tok.convert_tokens_to_ids("<|im_end|>")]
        assert enc["completion_mask"] == [0] * len(rloo) + [1] * (len(completion) + 1)
        # the inner text round-trips
        parsed = D.parse_prompt(ex["prompt"], tok)
        assert parsed["kind"] == task and parsed["context"] == turn["context"]
        assert parsed["self_persona"] == turn["self_persona"]
        assert D.unwrap_prompt(tok, ex["prompt"]) == text


def test_chat_prompt_errors(llama):
    _, tok = llama
    with pytest.raises(ValueError, match="not a PPG/DRG prompt rendered"):
        D.unwrap_prompt(tok, "you: hi\npartner persona:")
    with pytest.raises(ValueError, match="task must be"):
        D.render_prompt(tok, "persona", "x")
    with pytest.raises(TypeError, match="prompt must be a string"):
        D.render_prompt(tok, "drg", ["x"])


def test_bert_format_is_unchanged(minilm_path, rows):
    from transformers import AutoTokenizer

    tok = D.prepare_tokenizer(AutoTokenizer.from_pretrained(minilm_path))
    assert not D.uses_chat_template(tok) and D.end_of_turn_token(tok) is None and tok.eos_token == "[SEP]"
    turns = D.build_turns(rows)[:4]
    for task, build in (("ppg", D.ppg_example), ("drg", D.drg_example)):
        for turn, ex in zip(turns, P.task_examples(task, turns, tok, 500)):
            plain = build(turn)
            assert ex["prompt"] == plain["prompt"] == ex["text_prompt"]
            assert ex["completion"] == plain["completion"] and ex["completion"].startswith(" ")
            assert D.parse_prompt(ex["prompt"], tok)["kind"] == task


def test_per_word_perplexity_by_hand(llama):
    from hf_persona.training.persona_extractor import count_words

    model, tok = llama
    turn = {"self_persona": ["i ski ."], "partner_persona": ["i am a nurse ."], "context": ["hi , how are you ?"],
            "context_speakers": ["partner"], "response": "x", "n_context": 1}
    prompts = [D.render_prompt(tok, "drg", D.drg_example(turn)["prompt"])] * 2
    completions = ["good , thanks . you ?", "i love my cats and my dogs"]
    stats = P.completion_stats(model, tok, prompts, completions, max_completion_tokens=5, batch_size=2)
    nll = tokens = words = 0
    for p, c in zip(prompts, completions):
        prompt_ids = tok(p)["input_ids"]
        comp_ids = tok(c, add_special_tokens=False)["input_ids"][:4] + [tok.eos_token_id]  # cut to 5 incl. EOS
        ids = torch.tensor([prompt_ids + comp_ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        for j, t in enumerate(comp_ids):
            nll -= float(lp[len(prompt_ids) + j - 1, t])
        tokens += len(comp_ids)
        words += count_words(tok.decode(comp_ids, skip_special_tokens=True))
    # "good , thanks . <eos>" has 2 words; "i love my cats <eos>" 4: the words of the scored tokens only
    assert words == 6 and tokens == 10
    assert stats["tokens"] == tokens and stats["words"] == words
    assert stats["nll"] == pytest.approx(nll, rel=1e-4)
    assert P.word_perplexity(stats["nll"], stats["words"]) == pytest.approx(math.exp(nll / 6), rel=1e-4)
    assert P.completion_nll(model, tok, prompts, completions, 5, 2) == (stats["nll"], stats["tokens"])
    assert math.isnan(P.word_perplexity(1.0, 0))
    with pytest.raises(ValueError, match="words must be"):
        P.word_perplexity(1.0, -1)


def test_train_ppg_and_drg_cli_on_a_chat_llama_end_to_end(tiny_llama_dir, minilm_path, tmp_path):
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertForSequenceClassification

    from hf_persona.cli import register_plugin_commands, cli
    from hf_persona.data import read_personachat, sample_path

    register_plugin_commands()
    data = str(sample_path("personachat"))
    folders = {}
    for task in ("ppg", "drg"):
        out = tmp_path / task
        res = CliRunner().invoke(cli, ["train", task, "--data", data, "--output-dir", str(out), "--backbone",
                                       str(tiny_llama_dir), "--train-dialogues", "4", "--max-steps", "2",
                                       "--batch-size", "2", "--lr", "1e-2", "--max-prompt-tokens", "250",
                                       "--lora", "q_proj,v_proj", "--lora-r", "4"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        meta = json.loads((out / P.META_FILE).read_text())
        assert meta["format"] == "hf_persona.ppg/v2-chat" and meta["steps"] == 2 and meta["lora_r"] == 4
        model = AutoModelForCausalLM.from_pretrained(out)  # LoRA merged: a plain causal LM folder
        assert type(model).__name__ == "LlamaForCausalLM"
        assert D.uses_chat_template(AutoTokenizer.from_pretrained(out))
        folders[task] = out
    # a critic with a known answer (logits = bias) makes the reward checkable
    critic = tmp_path / "critic"
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, num_labels=2)
    clf = BertForSequenceClassification(cfg)
    with torch.no_grad():
        clf.classifier.weight.zero_()
        clf.classifier.bias.copy_(torch.tensor([0.0, 2.0]))
    clf.save_pretrained(critic)
    tok.save_pretrained(critic)
    dev = list(read_personachat(sample_path("personachat")))[30:32]
    m = evaluate_ppg(folders["ppg"], folders["drg"], critic, dev, max_examples=4, cold_start=(1,), cold_start_examples=2,
                   max_prompt_tokens=250, n_samples=3)
    for key in ("drg.ppl_word", "drg.gold.ppl_word", "drg.bm25_gold.ppl_word", "ppg.ppl_word",
                "cold_start.n1.ppl_word"):
        assert math.isfinite(m[key]) and m[key] > 1.0, key
    # per word = the same NLL over fewer units: ppl_word = ppl ** (tokens / words)
    ratio = m["drg.completion_tokens"] / m["drg.completion_words"]
    assert m["drg.ppl_word"] == pytest.approx(m["drg.ppl"] ** ratio, rel=1e-6)
    assert m["drg.reward"] == 1.0 and m["drg.reward_prob"] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-5)
    assert len(m["samples"]) == 3
    assert set(m["samples"][0]) >= {"context", "gold_partner_persona", "ppg", "gold_response", "drg", "critic_prob"}
    with pytest.raises(HFPersonaError, match="LoRA rank"):
        P.lora_config(["q_proj"], r=0)


def test_generate_renders_plain_prompts_for_a_chat_model(llama):
    model, tok = llama
    plain = D.drg_prompt(["i ski ."], ["i am a nurse ."], ["hi , how are you ?"], ["partner"])
    rendered = D.render_prompt(tok, "drg", plain)
    assert D.ensure_rendered(tok, plain) == rendered and D.ensure_rendered(tok, rendered) == rendered
    assert D.ensure_rendered(tok, "just some text") == "just some text"
    kw = dict(max_new_tokens=4, batch_size=2, no_repeat_ngram_size=0)
    assert P.generate(model, tok, [plain, rendered], **kw) == P.generate(model, tok, [rendered, rendered], **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default only")
def test_sft_and_rloo_train_in_fp32_on_a_cpu(llama, rows, tmp_path):
    """TRL 1.x defaults to bf16, i.e. CPU autocast onto a non-BLAS GEMM (minutes per SmolLM2 step)."""
    from datasets import Dataset

    from hf_persona.training import ppg_rl as R

    model, tok = llama
    ex = P.task_examples("drg", D.build_turns(rows)[:4], tok, 250)
    sft = P.make_sft_trainer(model, tok, P.sft_dataset(ex, tok, 8), tmp_path / "sft", max_steps=1, batch_size=2)
    assert sft.args.bf16 is False and sft.args.fp16 is False

    def reward(prompts, completions, **kw):
        return [0.0] * len(completions)

    ds = Dataset.from_list([{"prompt": e["prompt"]} for e in ex])
    rloo = R.make_rloo_trainer(model, tok, reward, ds, tmp_path / "rl", max_steps=1, batch_size=2)
    assert rloo.args.bf16 is False and rloo.args.fp16 is False
