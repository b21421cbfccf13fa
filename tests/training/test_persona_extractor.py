"""Persona extractor: text rules, example building, training/resume, saving, CLI, bad input."""

import json

import pytest

from hf_persona.data import read_personachat, sample_path
from hf_persona.errors import HFPersonaError
from hf_persona.training.persona_extractor import (
    EXTRACTOR_CONFIG_NAME,
    PersonaExtractor,
    content_words,
    count_words,
    examples_from_personachat,
    ground_examples,
    join_source,
    load_extractor_examples,
    persona_key,
    persona_support,
    split_persona,
    train_persona_extractor,
)


def test_count_words_ignores_bare_punctuation():
    assert count_words("i like dogs .") == 3
    assert count_words("  ,  ! ") == 0
    assert count_words("i'm 25 years old!") == 4


def test_split_persona_splits_filters_and_deduplicates():
    long = " ".join(["word"] * 26) + "."
    just_fits = " ".join(["word"] * 25) + "."
    text = f"i like dogs. i am a nurse! | hi | {long} | I like dogs . | {just_fits} | my cat is old ."
    got = split_persona(text)
    # "hi" (1 word) and the 26-word sentence are dropped, the second "I like dogs ." is a duplicate,
    # spaces before punctuation are removed
    assert got == ["i like dogs.", "i am a nurse!", just_fits, "my cat is old."]
    assert split_persona("hi . ok .", min_words=1) == ["hi.", "ok."]
    assert split_persona("") == []
    assert split_persona("i' m a nurse . i ' ve two cats .") == ["i'm a nurse.", "i've two cats."]


def test_split_persona_rejects_bad_arguments():
    with pytest.raises(TypeError):
        split_persona(["not", "a", "string"])
    with pytest.raises(ValueError, match="min_words"):
        split_persona("a b c", min_words=5, max_words=2)


def test_persona_key_is_case_and_punctuation_insensitive():
    assert persona_key("I like Dogs!") == persona_key("i like dogs .") == "i like dogs"


def test_content_words_drop_function_words_and_meet_across_suffixes():
    assert content_words("I'm cooking paella and I like cooks.") == {"cook", "paella"}
    assert content_words("studies") == content_words("study") == {"studi"}
    assert content_words("cookies") == content_words("cookie") == {"cooki"}
    assert content_words("she baked") == content_words("bakes") == content_words("baking") == {"bak"}
    assert content_words("watches") == content_words("watch") == {"watch"}
    assert content_words("i am a") == set()


def test_persona_support_by_hand():
    said = ["i rather read , i've read about 20 books this year .", "i stunt double , so much fun"]
    # content words: read, twenty, book, year -> read, book, year used by the speaker: 3 of 4
    assert persona_support("i read twenty books a year.", said) == pytest.approx(0.75)
    assert persona_support("i only eat kosher.", said) == 0.0
    assert persona_support("i am a stunt double.", said) == 1.0
    assert persona_support("i am.", said) == 0.0  # no content word at all
    assert persona_support("i read books.", []) == 0.0


def test_ground_examples_keeps_supported_sentences_and_drops_empty_examples():
    exs = [
        {"utterances": ["i have two dogs and a cat"], "persona": ["i have two dogs.", "i hate mondays."], "group": 1},
        {"utterances": ["hello there"], "persona": ["i am a nurse."], "group": 2},
    ]
    got = ground_examples(exs, 0.5)
    assert got == [{"utterances": ["i have two dogs and a cat"], "persona": ["i have two dogs."], "group": 1}]
    assert exs[0]["persona"] == ["i have two dogs.", "i hate mondays."]  # input untouched
    assert ground_examples(exs, 0.0) == exs
    with pytest.raises(ValueError, match="min_support"):
        ground_examples(exs, 1.5)


def test_personachat_gives_two_examples_per_dialogue_with_the_right_speaker():
    ds = read_personachat(sample_path("personachat"))
    exs = examples_from_personachat(ds)
    assert len(exs) == 2 * len(ds)
    row, you, partner = ds[0], exs[0], exs[1]
    assert you["persona"] == [p.strip() for p in row["your_persona"]]
    assert partner["persona"] == [p.strip() for p in row["partner_persona"]]
    assert you["utterances"] == [u for u, s in zip(row["utterances"], row["speakers"]) if s == "you"]
    assert partner["utterances"] == [u for u, s in zip(row["utterances"], row["speakers"]) if s == "partner" and u]
    assert join_source(["a  b", "", "c"], " [SEP] ") == "a b [SEP] c"


def _msc_line(convai2_idx, first_text, p1, p2):
    return json.dumps({
        "personas": [p1, p2],
        "dialog": [
            {"id": "Speaker 1", "text": first_text, "convai2_id": f"valid_{convai2_idx}"},
            {"id": "Speaker 2", "text": "tell me more about it .", "convai2_id": f"valid_{convai2_idx}"},
        ],
    })


def test_held_back_split_keeps_msc_episodes_with_their_personachat_dialogue(tmp_path):
    msc = tmp_path / "msc.txt"
    msc.write_text("\n".join([
        _msc_line(3, "i went hiking again .", ["I hike."], ["I cook."]),
        _msc_line(900, "my dog is sick .", ["I have a dog."], ["I am a vet."]),
    ]) + "\n")
    pc = sample_path("personachat")
    n = len(read_personachat(pc))
    train, dev = load_extractor_examples([pc, msc], dev_from=n - 2)
    dev_sources = [(e["source"], e["group"]) for e in dev]
    # the last two PERSONA-CHAT dialogues (two examples each) and the MSC episode of valid_900
    assert sorted(dev_sources) == sorted([("personachat", n - 2)] * 2 + [("personachat", n - 1)] * 2 + [("msc", 900)] * 2)
    assert [e["persona"] for e in train if e["source"] == "msc"] == [["I hike."], ["I cook."]]
    assert len(train) == 2 * (n - 2) + 2


def test_bad_data_files_are_named(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not a dialogue file\n")
    with pytest.raises(HFPersonaError, match="bad.txt"):
        load_extractor_examples([bad])
    with pytest.raises(HFPersonaError, match="not found"):
        load_extractor_examples([tmp_path / "missing.txt"])
    with pytest.raises(HFPersonaError, match="no data files"):
        load_extractor_examples([])


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory, tiny_bert_dir):
    """A tiny BERT2BERT extractor trained for 2 steps on the embedded sample (evaluated at steps 1 and 2)."""
    out = tmp_path_factory.mktemp("extractor")
    pc = sample_path("personachat")
    summary = train_persona_extractor(
        out, [pc], backbone=tiny_bert_dir, dev_from=32, max_steps=2, eval_steps=1, batch_size=4,
        learning_rate=1e-3, warmup_steps=0, max_source_length=32, max_target_length=12,
        eval_generation_examples=2, num_beams=1, progress=False, json_out=out / "summary.json",
    )
    return out, summary


def test_training_saves_a_loadable_extractor_with_checkpoints(trained_tiny):
    out, summary = trained_tiny
    assert summary["global_step"] == 2
    assert summary.output_dir == out and isinstance(summary.model, PersonaExtractor)  # a RecipeResult
    assert summary["train_examples"] == 64 and summary["dev_examples"] == 8
    assert summary["best_checkpoint"] is not None
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    fmt = json.loads((out / EXTRACTOR_CONFIG_NAME).read_text())
    assert fmt["source_separator"] == " [SEP] " and fmt["max_target_length"] == 12
    assert json.loads((out / "summary.json").read_text())["global_step"] == 2
    ev = summary["eval"]
    assert ev["n"] == 2 and 0 <= ev["bleu2"] <= 100 and 0 <= ev["rougeL"] <= 100
    ex = PersonaExtractor.from_pretrained(out, num_beams=1, max_new_tokens=8)
    got = ex.extract([["i have two dogs .", "i love the park ."], ["hello"]], batch_size=2)
    assert len(got) == 2
    for sentences in got:
        assert all(2 <= count_words(s) <= 25 for s in sentences)
    raw = ex.generate_text([["i have two dogs ."]])
    assert split_persona(raw[0]) == ex.extract([["i have two dogs ."]])[0]


def test_training_on_grounded_targets_counts_what_it_kept(tmp_path, tiny_bert_dir):
    pc = sample_path("personachat")
    train, dev = load_extractor_examples([pc], dev_from=32)
    summary = train_persona_extractor(
        tmp_path / "grounded", [pc], backbone=tiny_bert_dir, dev_from=32, max_steps=1, eval_steps=1, batch_size=4,
        max_source_length=32, max_target_length=12, min_support=0.5, report_eval=False, progress=False,
    )
    assert summary["min_support"] == 0.5
    assert summary["examples_before_grounding"] == {"train": len(train), "dev": len(dev)}
    grounded = ground_examples(train, 0.5)
    assert summary["train_examples"] == len(grounded)
    assert sum(len(e["persona"]) for e in grounded) < sum(len(e["persona"]) for e in train)
    assert summary["dev_examples"] == len(ground_examples(dev, 0.5))


def test_training_resumes_from_the_last_checkpoint(trained_tiny, tiny_bert_dir):
    out, _ = trained_tiny
    summary = train_persona_extractor(
        out, [sample_path("personachat")], backbone=tiny_bert_dir, dev_from=32, max_steps=3, eval_steps=1,
        batch_size=4, learning_rate=1e-3, warmup_steps=0, max_source_length=32, max_target_length=12,
        report_eval=False, progress=False,
    )
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 3


def test_training_learns_on_a_fixed_batch(tiny_bert_dir):
    """Dev loss after a few steps on the dev examples themselves is lower than before training."""
    import torch

    from hf_persona.training.persona_extractor import ExtractorFormat, build_extractor_model, tokenize_examples

    model, tok = build_extractor_model(tiny_bert_dir, seed=0)
    exs = examples_from_personachat(read_personachat(sample_path("personachat")))[:4]
    fmt = ExtractorFormat(" [SEP] ", max_source_length=48, max_target_length=16)
    ds = tokenize_examples(exs, tok, fmt, model.config.decoder_start_token_id)
    assert all(ids[0] != tok.cls_token_id and ids[-1] == tok.sep_token_id for ids in ds["labels"])
    from transformers import DataCollatorForSeq2Seq

    batch = DataCollatorForSeq2Seq(tok, model=model)([ds[i] for i in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0] - 0.5


def test_warm_start_copies_self_attention_into_cross_attention(tiny_bert_dir):
    import torch
    from transformers import EncoderDecoderModel

    from hf_persona.training.persona_extractor import warm_start_cross_attention

    torch.manual_seed(0)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(tiny_bert_dir, tiny_bert_dir)
    layer = model.decoder.bert.encoder.layer[1]
    assert not torch.equal(layer.crossattention.self.key.weight, layer.attention.self.key.weight)
    assert warm_start_cross_attention(model) == 2
    for name, param in layer.attention.state_dict().items():
        assert torch.equal(layer.crossattention.state_dict()[name], param), name
    dense = model.decoder.cls.predictions.transform.dense
    assert torch.equal(dense.weight, torch.eye(32)) and not dense.bias.any()
    assert warm_start_cross_attention(torch.nn.Linear(2, 2)) == 0  # not a BERT2BERT: left alone


def test_bad_inputs(tmp_path, trained_tiny):
    out, _ = trained_tiny
    with pytest.raises(HFPersonaError, match=EXTRACTOR_CONFIG_NAME):
        PersonaExtractor.from_pretrained(tmp_path)
    ex = PersonaExtractor.from_pretrained(out, num_beams=1)
    with pytest.raises(TypeError, match="utterance"):
        ex.extract("i like dogs")
    with pytest.raises(TypeError, match="item 0"):
        ex.extract(["i like dogs"])
    with pytest.raises(ValueError, match="num_beams"):
        PersonaExtractor(ex.model, ex.tokenizer, num_beams=0)
    with pytest.raises(HFPersonaError, match="no training examples"):
        train_persona_extractor(tmp_path / "x", train_examples=[], dev_examples=[{"utterances": ["a"], "persona": ["b"]}])


def test_cli_eval_writes_json(trained_tiny, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import cli, register_plugin_commands

    register_plugin_commands()
    out, _ = trained_tiny
    js = tmp_path / "m.json"
    res = CliRunner().invoke(cli, ["eval", "persona-extractor", "--extractor", str(out), "--data",
                                   str(sample_path("personachat")), "--dev-from", "34", "--max-examples", "2",
                                   "--num-beams", "1", "--json", str(js)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(js.read_text())
    assert metrics["n"] == 2 and {"bleu2", "bleu4", "rougeL", "dist1", "dist2"} <= set(metrics)
    assert "bleu2" in res.output


def test_train_cli_options_are_the_config_fields(tmp_path, monkeypatch):
    """`train persona-extractor`'s recipe options are PersonaExtractorTrainingConfig's fields: with none
    given the command builds the Python default config (--dev-from clamped to the small sample); a bad
    value from Python is an HFPersonaError naming the field."""
    import dataclasses

    from click.testing import CliRunner

    import hf_persona.training.persona_extractor as recipe
    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.training.configs import PersonaExtractorTrainingConfig as Config
    from hf_persona.training.recipe import RecipeResult

    register_plugin_commands()
    calls = []
    monkeypatch.setattr(recipe, "train_persona_extractor",
                        lambda config, files: calls.append((config, files)) or RecipeResult({}, config.output_dir))
    pc = str(sample_path("personachat"))
    args = ["train", "persona-extractor", "--data", pc, "--output-dir", str(tmp_path / "run")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    config, files = calls.pop()
    n = len(read_personachat(pc))
    assert files == [pc] and config.dev_from == n - n // 5  # 800 holds nothing of the sample back
    assert config == Config(output_dir=config.output_dir, dev_from=config.dev_from)
    on_cli = {f.name for f in dataclasses.fields(Config) if f.metadata["option"].cli}
    assert on_cli == {p.name for p in cli.commands["train"].commands["persona-extractor"].params} - {"data_files", "json_out"}
    res = CliRunner().invoke(cli, args + ["--eval-examples", "0", "--merge", "--lora", "8", "--dev-from", "20",
                                          "--max-dev-examples", "5", "--no-resume"])
    assert res.exit_code == 0, res.output
    config = calls.pop()[0]
    assert (config.eval_generation_examples, config.merge, config.lora, config.dev_from) == (0, True, 8, 20)
    assert config.max_dev_examples == 5 and not config.resume and config.json_out is None
    monkeypatch.undo()
    for bad, shown in ((dict(min_support=1.5), "min_support = 1.5"), (dict(num_beams=0), "num_beams = 0"),
                       (dict(lora=-1), "lora = -1"), (dict(epochs=float("nan")), "epochs = nan")):
        with pytest.raises(HFPersonaError, match=f"PersonaExtractorTrainingConfig.{shown}: expected"):
            train_persona_extractor(tmp_path / "o", [tmp_path / "missing.txt"], **bad)


# ---------------------------------------------------------------- causal-LM extractor
def test_causal_prompt_uses_the_chat_template_and_masks_the_prompt(tiny_llama_dir):
    from transformers import AutoTokenizer

    from hf_persona.training.persona_extractor import (
        CAUSAL_SYSTEM_PROMPT,
        ExtractorFormat,
        causal_prompt_ids,
        causal_training_example,
    )

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    fmt = ExtractorFormat(" | ", kind="causal", max_source_length=200)
    assert fmt.system_prompt == CAUSAL_SYSTEM_PROMPT
    prompt = tok.decode(causal_prompt_ids(tok, ["i work  at a hospital", "my dog is old"], fmt))
    assert prompt.startswith("<|im_start|> system") and prompt.rstrip().endswith("<|im_start|> assistant")
    assert "i work at a hospital my dog is old" in " ".join(prompt.split())
    ex = causal_training_example(tok, ["i am a nurse"], ["i am a nurse.", "i have a dog."], fmt)
    n_prompt = len(causal_prompt_ids(tok, ["i am a nurse"], fmt))
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    assert ex["input_ids"][n_prompt:] == ex["labels"][n_prompt:]
    assert ex["labels"][-1] == tok.eos_token_id
    assert tok.decode(ex["labels"][n_prompt:-1]) == "i am a nurse. | i have a dog."
    # too long: the oldest utterances go first, then the start of the oldest one kept
    short = ExtractorFormat(" | ", kind="causal", max_source_length=len(causal_prompt_ids(tok, ["b c d"], fmt)))
    ids = causal_prompt_ids(tok, ["a " * 50, "x y z", "b c d"], short)
    assert len(ids) <= short.max_source_length and "b c d" in tok.decode(ids) and "x y z" not in tok.decode(ids)
    two_more = ExtractorFormat(" | ", kind="causal", max_source_length=short.max_source_length + 2)
    ids = causal_prompt_ids(tok, ["w " * 30 + "b c d"], two_more)
    assert len(ids) == two_more.max_source_length
    assert tok.decode(ids).endswith("user w w b c d <|im_end|> <|im_start|> assistant")
    with pytest.raises(HFPersonaError, match="too short"):
        causal_prompt_ids(tok, ["hello"], ExtractorFormat(" | ", kind="causal", max_source_length=5))


def test_causal_extractor_learns_a_persona_and_reloads(tiny_llama_dir, tmp_path):
    """Trained on one speaker until memorised, the saved causal extractor writes that persona back
    through from_pretrained + extract: prompt, labels and generation line up."""
    example = {"utterances": ["i just got back from my shift at the hospital", "my dog waited for me"],
               "persona": ["i am a nurse.", "i have a dog."]}
    summary = train_persona_extractor(
        tmp_path / "causal", train_examples=[example] * 8, dev_examples=[example], backbone=tiny_llama_dir,
        max_steps=60, batch_size=8, learning_rate=1e-2, warmup_steps=0, eval_steps=60, logging_steps=60,
        report_eval=False, progress=False, num_beams=1)
    assert summary["kind"] == "causal" and summary["global_step"] == 60
    saved = json.loads((tmp_path / "causal" / EXTRACTOR_CONFIG_NAME).read_text())
    assert saved["kind"] == "causal" and saved["system_prompt"]
    extractor = PersonaExtractor.from_pretrained(tmp_path / "causal", num_beams=1)
    assert type(extractor.model).__name__ == "LlamaForCausalLM"
    got = extractor.extract([example["utterances"], ["my dog waited for me"]])
    assert got[0] == ["i am a nurse.", "i have a dog."]
    assert len(got) == 2


def test_is_causal_lm_tells_decoders_from_encoders(tiny_llama_dir, tiny_bert_dir):
    from transformers import AutoConfig

    from hf_persona.backbones import is_causal_lm

    assert is_causal_lm(AutoConfig.from_pretrained(tiny_llama_dir))
    assert not is_causal_lm(AutoConfig.from_pretrained(tiny_bert_dir))


def test_old_plugin_import_path_still_works_with_a_deprecation_warning():
    from tests.helpers import assert_names_moved

    assert_names_moved("hf_persona.default_plugins.persona_extractor", dict.fromkeys(
        ("train_persona_extractor_cmd", "eval_persona_extractor_cmd", "annotate_persona_cmd"),
        "hf_persona.commands.persona_extractor"))


def test_extractor_evaluation_counts_distinct_persona_sets_and_recall():
    """Hand-computed: sets compare normalised sentences in any order; recall counts gold sentences
    with a generated sentence at unigram F1 >= 50."""
    from hf_persona.evaluation.persona_extractor import evaluate_extractor_on_examples

    class Fixed:
        def __init__(self, outputs):
            self.outputs = outputs

        def extract(self, utterance_lists, batch_size=16):
            assert len(utterance_lists) == len(self.outputs)
            return self.outputs

    examples = [{"utterances": ["hi"], "persona": ["i have a dog.", "i am a nurse."]},
                {"utterances": ["yo"], "persona": ["i love tea."]},
                {"utterances": ["hey"], "persona": ["i drive a bus."]}]
    # the first two sets are the same persona (case, punctuation, order); the third differs
    out = evaluate_extractor_on_examples(
        Fixed([["i have a dog.", "I like tea ."], ["i like tea", "I have a dog"], ["i drive a red bus."]]), examples,
        samples=2)
    assert out["distinct_persona_sets"] == 2 and len(out["examples"]) == 2
    # gold: "i have a dog." matched exactly; "i am a nurse." no; "i love tea." vs "i like tea" F1 = 2/3 -> yes;
    # "i drive a bus." vs "i drive a red bus." F1 = 2*(3/4*1)/(3/4+1) = 85.7 -> yes: 3 of 4
    assert out["persona_recall_f1_50"] == pytest.approx(75.0)
    assert out["sentences_per_example"] == pytest.approx(5 / 3)


def test_lora_extractor_keeps_the_adapter_alone_or_merges(tiny_llama_dir, tmp_path):
    """--lora trains adapters on a causal LM: the folder holds the adapter (no full weights) and
    loads onto its backbone with the same outputs; merge=True saves full weights instead."""
    import torch

    from hf_persona.training.persona_extractor import PersonaExtractor, train_persona_extractor

    train = [{"utterances": ["i walk my dog every day", "he is a poodle"], "persona": ["i have a dog."]}] * 8
    dev = [{"utterances": ["i teach math at school"], "persona": ["i am a teacher."]}] * 2
    common = dict(train_examples=train, dev_examples=dev, backbone=tiny_llama_dir, max_steps=2, eval_steps=2,
                  batch_size=4, warmup_steps=0, learning_rate=1e-2, max_source_length=64, max_target_length=12,
                  eval_generation_examples=0, num_beams=1, progress=False)
    summary = train_persona_extractor(tmp_path / "lora", lora=4, **common)
    assert summary["lora_rank"] == 4 and not summary["merged"]
    names = {p.name for p in (tmp_path / "lora").iterdir()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names
    loaded = PersonaExtractor.from_pretrained(tmp_path / "lora", num_beams=1)
    merged = train_persona_extractor(tmp_path / "merged", lora=4, merge=True, **common)
    assert merged["merged"]
    names = {p.name for p in (tmp_path / "merged").iterdir()}
    assert "model.safetensors" in names and "adapter_model.safetensors" not in names
    again = PersonaExtractor.from_pretrained(tmp_path / "merged", num_beams=1)
    # the same seed and data train the same adapter: the adapter folder and the merged folder agree
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, again.model(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)
    from transformers import AutoModelForCausalLM

    with torch.no_grad():  # and the adapter changed the model
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(input_ids=ids).logits
    assert not torch.allclose(plain, again.model(input_ids=ids).logits, atol=1e-4)
    with pytest.raises(HFPersonaError, match="LoRA needs a pretrained causal LM"):
        train_persona_extractor(tmp_path / "s2s", lora=4, **dict(common, backbone="minilm"))


def test_msc_alignment_skips_malformed_lines(tmp_path):
    """The MSC -> ConvAI2 alignment reads past lines the reader reports: huge numbers, deep nesting,
    a non-list dialog, invalid UTF-8."""
    from hf_persona.training.persona_extractor import msc_convai2_groups

    good = {"personas": [["a"], ["b"]], "dialog": [{"text": "hi  there", "id": "Speaker 1", "convai2_id": "valid_7"}]}
    path = tmp_path / "msc.txt"
    path.write_bytes((json.dumps(good) + "\n").encode() + b'{"dialog": [{"text": "x", "n": ' + b"9" * 5000 + b"}]}\n"
                     + b"[" * 100000 + b"\n" + b'{"dialog": "nope"}\n\xff\xfe\n')
    assert msc_convai2_groups(path) == {"hi there": 7}
