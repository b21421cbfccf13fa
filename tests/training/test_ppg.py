"""PPG generators, critic reward, the RLOO adaptation, RL steps and resume (tiny random models)."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from hf_persona.data import ppg as D
from hf_persona.errors import HFPersonaError
from hf_persona.rewards import CriticScore, PPGCriticScore
from hf_persona.training import ppg as P
from hf_persona.training import ppg_rl as R
from hf_persona.training.common import MANIFEST_NAME
from tests.resume_checks import assert_whole_run_loss


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: a second intra-op thread only adds synchronisation on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rows():
    from hf_persona.data import read_personachat, sample_path

    return list(read_personachat(sample_path("personachat")))[:4]


@pytest.fixture(scope="module")
def tiny_gen(tiny_bert_dir):
    model, tok = P.load_generator(tiny_bert_dir)
    return model, tok


def _tiny_critic(tmp_path, minilm_path, bias):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, num_labels=2)
    m = BertForSequenceClassification(cfg)
    if bias is not None:  # logits = bias exactly: a critic with a known answer
        with torch.no_grad():
            m.classifier.weight.zero_()
            m.classifier.bias.copy_(torch.tensor(bias))
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.fixture(scope="module")
def random_critic(tmp_path_factory, minilm_path):
    return _tiny_critic(tmp_path_factory.mktemp("critic"), minilm_path, None)


def test_offline_generator_is_a_bert_decoder(tiny_gen):
    model, tok = tiny_gen
    assert type(model).__name__ == "BertLMHeadModel" and model.config.is_decoder
    assert tok.eos_token_id == tok.sep_token_id and model.generation_config.eos_token_id == tok.sep_token_id


def test_batched_nll_and_generation_equal_one_at_a_time(tiny_gen):
    model, tok = tiny_gen
    prompts = [D.drg_prompt(["i ski."], ["i am a nurse."], ["hi"], ["partner"]),
               D.drg_prompt(["i like long walks on the beach."], ["i am tall.", "i have a cat."],
                            ["hello , how are you doing today ?", "fine"], ["you", "partner"])]
    comps = [" good , you ?", " i love cats"]
    nll, n = P.completion_nll(model, tok, prompts, comps, batch_size=2)
    # reference: plain log-softmax over each unpadded sequence
    ref_nll, ref_n = 0.0, 0
    for p, c in zip(prompts, comps):
        e = D.encode_example(tok, p, c, 32)
        ids = torch.tensor([e["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        for i, (t, m) in enumerate(zip(e["input_ids"][1:], e["completion_mask"][1:])):
            if m:
                ref_nll -= float(lp[i, t])
                ref_n += 1
    assert n == ref_n == 5 + 4  # "good , you ?" and "i love cats", each plus EOS
    assert nll == pytest.approx(ref_nll, rel=1e-4)
    # left padding + mask-derived positions: batched greedy generation equals unbatched
    batched = P.generate(model, tok, prompts, max_new_tokens=5, batch_size=2, no_repeat_ngram_size=0)
    single = [P.generate(model, tok, [p], max_new_tokens=5, batch_size=1, no_repeat_ngram_size=0)[0]
              for p in prompts]
    assert batched == single


def test_sft_trains_on_completion_tokens_only(tiny_gen, rows, tmp_path):
    model, tok = tiny_gen
    turns = D.build_turns(rows)[:6]
    ds = P.sft_dataset(P.task_examples("drg", turns, tok, 120), tok, 16)
    trainer = P.make_sft_trainer(model, tok, ds, tmp_path, max_steps=1, batch_size=3)
    batch = next(iter(trainer.get_train_dataloader()))
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    by_ids = {tuple(r["input_ids"]): r for r in ds}
    for i in range(ids.shape[0]):
        row = by_ids[tuple(ids[i][mask[i] == 1].tolist())]  # the loader shuffles: find the row
        n_prompt = len(row["input_ids"]) - sum(row["completion_mask"])
        real = labels[i][labels[i] != -100].tolist()
        assert real == row["input_ids"][n_prompt:]  # exactly the completion (+ EOS) is supervised
    # the loss is the model's own NLL (full LM head incl. BERT's prediction transform), not TRL's fused head
    model.eval()
    rows_in_batch = [by_ids[tuple(ids[i][mask[i] == 1].tolist())] for i in range(ids.shape[0])]
    total, count = 0.0, 0
    for r in rows_in_batch:
        n_prompt = len(r["input_ids"]) - sum(r["completion_mask"])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1], -1)
        for j in range(n_prompt - 1, len(r["input_ids"]) - 1):
            total -= float(lp[j, r["input_ids"][j + 1]])
            count += 1
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    assert float(loss) == pytest.approx(total / count, rel=1e-4)


def test_train_generator_with_lora_changes_attention_and_saves_a_causal_lm(tiny_bert_dir, rows, tmp_path):
    from transformers import AutoModelForCausalLM

    base, _ = P.load_generator(tiny_bert_dir)
    q0 = base.bert.encoder.layer[0].attention.self.query.weight.clone()
    meta = P.train_generator(rows, tmp_path / "g", task="ppg", backbone=tiny_bert_dir, max_steps=2, batch_size=2,
                             learning_rate=1e-2, lora_target_modules=["query", "value"], max_prompt_tokens=60,
                             max_completion_tokens=16)
    assert meta["steps"] == 2 and meta["lora"] == ["query", "value"]
    # a RecipeResult: the summary written, the folder and the trained generator (adapters merged)
    assert dict(meta) == json.loads((tmp_path / "g" / P.META_FILE).read_text()) and meta.output_dir == tmp_path / "g"
    assert type(meta.model).__name__ == "BertLMHeadModel"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "g")
    assert type(loaded).__name__ == "BertLMHeadModel"
    q1 = loaded.bert.encoder.layer[0].attention.self.query.weight
    k0 = base.bert.encoder.layer[0].attention.self.key.weight
    assert not torch.allclose(q0, q1)  # the merged adapter moved the targeted module
    assert torch.equal(k0, loaded.bert.encoder.layer[0].attention.self.key.weight)  # untargeted: untouched
    assert json.loads((tmp_path / "g" / P.META_FILE).read_text())["task"] == "ppg"
    with warnings.catch_warnings(record=True) as said:  # the earlier (task, rows, output_dir, base) order
        warnings.simplefilter("always")
        with pytest.raises(HFPersonaError, match=r"GeneratorTrainingConfig\.task = 'persona': expected one of"):
            P.train_generator("persona", rows, tmp_path / "x", tiny_bert_dir)
    assert any("train_generator(task, train_rows, output_dir" in str(w.message) for w in said)


def test_train_generator_resumes_with_manifests_and_the_whole_run_loss(tiny_bert_dir, rows, tmp_path):
    out = tmp_path / "g"
    kw = dict(batch_size=2, learning_rate=1e-3, max_prompt_tokens=60, max_completion_tokens=16, save_steps=2,
              logging_steps=1)
    first = P.train_generator(rows, out, task="drg", backbone=tiny_bert_dir, max_steps=2, **kw)
    assert first["steps"] == 2 and first["resumed_from"] is None
    assert (out / "checkpoints" / "checkpoint-2" / MANIFEST_NAME).is_file()
    again = P.train_generator(rows, out, task="drg", backbone=tiny_bert_dir, max_steps=3, **kw)
    assert again["steps"] == 3 and again["resumed_from"] == str(out / "checkpoints" / "checkpoint-2")
    losses = assert_whole_run_loss(again["train_loss"], out / "checkpoints" / "checkpoint-3", 2)
    assert again["train_loss"] != pytest.approx(losses[3], rel=1e-4)  # not the resumed segment's alone
    assert json.loads((out / P.META_FILE).read_text())["train_loss"] == again["train_loss"]
    fresh = P.train_generator(rows, out, task="drg", backbone=tiny_bert_dir, max_steps=3, resume=False, **kw)
    assert fresh["resumed_from"] is None and fresh["steps"] == 3


def test_train_critic_resumes_with_manifests_and_the_whole_run_loss(tiny_bert_dir, rows, tmp_path):
    out = tmp_path / "c"
    kw = dict(backbone=tiny_bert_dir, batch_size=8, max_length=64, warmup_ratio=0.0, save_steps=2)
    first = P.train_critic(rows[:3], out, max_steps=2, **kw)
    assert first["steps"] == 2 and first["resumed_from"] is None
    again = P.train_critic(rows[:3], out, max_steps=4, **kw)
    assert again["steps"] == 4 and again["resumed_from"] == str(out / "checkpoints" / "checkpoint-2")
    # logging_steps=20: only the saves (steps 2 and 4) log; the loss covers steps 1-4
    losses = assert_whole_run_loss(again["train_loss"], out / "checkpoints" / "checkpoint-4", 2)
    assert sorted(losses) == [2, 4] and again["train_loss"] == pytest.approx((losses[2] + losses[4]) / 2)


def test_critic_reward_values_and_batching(tmp_path, minilm_path, random_critic):
    import hf_persona

    yes = _tiny_critic(tmp_path / "yes", minilm_path, [0.0, 1.0])
    no = _tiny_critic(tmp_path / "no", minilm_path, [2.0, 0.0])
    comps = ["i am a nurse too", "metallica rocks", "hello"]
    cols = {"partner_persona": [["i am a nurse."], "i like metal.", ["i ski.", "i am tall."]]}
    r = hf_persona.get_reward("critic", model=yes)
    assert r(prompts=["a", "b", "c"], completions=comps, **cols) == [1.0, 1.0, 1.0]
    assert hf_persona.get_reward("critic", model=no)(prompts=["a"] * 3, completions=comps, **cols) == [-1.0] * 3
    probs = hf_persona.get_reward("critic", model=yes, mode="prob")(prompts=["a"] * 3, completions=comps, **cols)
    assert probs == pytest.approx([1 / (1 + torch.e ** -1.0)] * 3, abs=1e-5)  # softmax([0, 1])[1]
    # a real (random) critic: batched scores equal one-at-a-time scores
    one = P.CriticScorer(random_critic, batch_size=1)
    many = P.CriticScorer(random_critic, batch_size=3)
    personas = cols["partner_persona"]
    p1, p3 = one.probs(personas, comps), many.probs(personas, comps)
    assert p1 == pytest.approx(p3, abs=1e-5) and one.calls == 3 and many.calls == 1
    assert one.rewards(personas, comps) == [1.0 if p > 0.5 else -1.0 for p in p1]


def test_critic_reward_bad_input(random_critic, tmp_path):
    import hf_persona

    r = hf_persona.get_reward("critic", model=random_critic)
    with pytest.raises(HFPersonaError, match="needs the column 'partner_persona'"):
        r(prompts=["a"], completions=["b"], persona=["x"])
    with pytest.raises(HFPersonaError, match="1 completions but 2 personas"):
        r(prompts=["a"], completions=["b"], partner_persona=["x", "y"])
    with pytest.raises(HFPersonaError, match="'label' or 'prob'"):
        hf_persona.get_reward("critic", model=random_critic, mode="sigmoid")
    with pytest.raises(HFPersonaError, match="needs model="):
        hf_persona.get_reward("critic")
    with pytest.raises(HFPersonaError, match="no config.json"):
        P.CriticScorer(tmp_path)


def test_train_critic_warms_up_and_reports_dev_accuracy(tiny_bert_dir, rows, tmp_path):
    meta = P.train_critic(rows[:3], tmp_path / "c", dev_rows=rows[3:], backbone=tiny_bert_dir, max_steps=4,
                          batch_size=8, max_length=64, warmup_ratio=0.5, save_steps=100)
    assert meta["steps"] == 4 and meta["warmup_steps"] == 2 and meta["max_length"] == 64
    pairs = D.critic_examples(rows[3:])
    assert meta["dev_pairs"] == len(pairs) and sum(p["label"] for p in pairs) * 2 == len(pairs)
    # the stored accuracy is the saved critic's accuracy on the dev pairs, recomputed here
    assert meta["dev_accuracy"] == pytest.approx(P.critic_accuracy(P.CriticScorer(tmp_path / "c"), pairs))
    assert json.loads((tmp_path / "c" / P.META_FILE).read_text()) == dict(meta) and meta.output_dir == tmp_path / "c"
    assert meta["warmup_steps"] == 2 and meta.model.config.num_labels == 2
    with pytest.raises(HFPersonaError, match=r"CriticTrainingConfig\.warmup_ratio = 1\.0: expected"):
        P.train_critic(rows[:1], tmp_path / "bad", backbone=tiny_bert_dir, max_steps=1, warmup_ratio=1.0)


def test_why_rloo_needed_an_adaptation(tiny_gen):
    """TRL's fused LM head skips BERT's prediction-head transform; GPT-2's head is a plain projection."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model, _ = tiny_gen
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    assert R.fused_head_mismatch(model, ids) > 1e-2
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=4000, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    assert R.fused_head_mismatch(gpt2, ids) < 1e-4


def test_rloo_logps_match_the_model_under_left_padding(tiny_bert_dir, random_critic, rows, tmp_path):
    from datasets import Dataset

    model, tok = P.load_generator(tiny_bert_dir)
    ex = P.task_examples("drg", D.build_turns(rows)[:2], tok, 120)
    ds = Dataset.from_list([{"prompt": e["prompt"], "partner_persona": e["partner_persona"]} for e in ex])
    reward = CriticScore(random_critic, mode="prob")
    trainer = R.make_rloo_trainer(model, tok, reward, ds, tmp_path, max_steps=1, batch_size=4,
                                  max_completion_length=4)
    seqs = [[101, 2023, 2003, 102, 7592, 2088], [101, 2026, 102, 7592, 2088, 999, 2204, 102]]
    ids, mask = P.left_pad(seqs, tok.pad_token_id)
    k = 3
    logps, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model.eval(), ids, mask, k,
                                                                compute_entropy=True)
    for row, s in enumerate(seqs):  # reference: each sequence alone, unpadded
        with torch.no_grad():
            lp = torch.log_softmax(trainer.model(input_ids=torch.tensor([s])).logits[0].float(), -1)
        want = [float(lp[len(s) - k - 1 + j, s[len(s) - k + j]]) for j in range(k)]
        assert logps[row].tolist() == pytest.approx(want, abs=2e-3)
    assert (ent > 0).all()
    # what TRL's scoring forward does (no position_ids): the left-padded row is shifted and scores differ
    with torch.no_grad():
        lp = torch.log_softmax(trainer.model(input_ids=ids, attention_mask=mask).logits[0].float(), -1)
    s = seqs[0]
    pad = ids.shape[1] - len(s)
    shifted = [float(lp[pad + len(s) - k - 1 + j, s[len(s) - k + j]]) for j in range(k)]
    assert max(abs(a - b) for a, b in zip(shifted, logps[0].tolist())) > 1e-2


def test_rloo_needs_two_generations(tiny_gen, random_critic):
    model, tok = tiny_gen
    reward = CriticScore(random_critic)
    with pytest.raises(HFPersonaError, match=r"num_generations = 1: expected an integer >= 2"):
        R.make_rloo_trainer(model, tok, reward, None, "unused", max_steps=1, num_generations=1)
    with pytest.raises(HFPersonaError, match="multiple of num_generations"):
        R.make_rloo_trainer(model, tok, reward, None, "unused", max_steps=1, batch_size=3)


def safetensors_load(folder):
    return load_file(f"{folder}/model.safetensors")


def _rl_generators(tmp_path, tiny_bert_dir):
    gens = {}
    for task in ("ppg", "drg"):
        m, t = P.load_generator(tiny_bert_dir)
        m.save_pretrained(tmp_path / task)
        t.save_pretrained(tmp_path / task)
        (tmp_path / task / P.META_FILE).write_text(json.dumps({"max_completion_tokens": 6}))  # short samples
        gens[task] = str(tmp_path / task)
    return gens


def test_rl_phases_score_with_the_floored_rewards(tiny_bert_dir, random_critic, rows, tmp_path, monkeypatch):
    """Each phase's reward is hf_persona.rewards.critic's: an empty completion (a generated persona in the
    PPG phase, a response in the DRG phase) gets the minimum, a real one what the plain class gives."""
    from hf_persona.rewards.bounds import BoundedReward

    gens = _rl_generators(tmp_path, tiny_bert_dir)

    class Captured(Exception):
        pass

    captured = {}

    def capture(model, tok, reward, train_dataset, output_dir, config, **kw):
        captured.update(reward=reward, ds=train_dataset)
        raise Captured

    monkeypatch.setattr(R, "make_rloo_trainer", capture)
    drg_model, drg_tok = P.load_generator(gens["drg"])
    plain = {"ppg": PPGCriticScore(drg_model, drg_tok, random_critic, "prob", max_new_tokens=6,
                                      max_prompt_tokens=100),
             "drg": CriticScore(random_critic, "prob")}
    for task in ("ppg", "drg"):
        with pytest.raises(Captured):
            R.train_rl(gens["ppg"], gens["drg"], random_critic, rows, tmp_path / f"rl-{task}", rounds=1,
                       steps_per_phase=1, batch_size=2, max_prompt_tokens=100, max_prompts=4, reward_mode="prob",
                       train_ppg=task == "ppg", train_drg=task == "drg")
        reward, row = captured["reward"], captured["ds"][0]
        assert isinstance(reward, BoundedReward) and isinstance(reward, type(plain[task]))
        assert reward.reward_range == (0.0, 1.0)
        columns = {k: [v, v, v] for k, v in row.items() if k != "prompt"}
        completion = "i like dogs ." if task == "ppg" else "i like dogs , do you ?"
        got = reward([row["prompt"]] * 3, ["", completion, " "], **columns)
        expected = plain[task]([row["prompt"]], [completion], **{k: v[:1] for k, v in columns.items()})
        assert got[0] == 0.0 and got[2] == 0.0, task
        assert got[1] == pytest.approx(expected[0], abs=1e-6), task
        assert plain[task]([row["prompt"]], [""], **{k: v[:1] for k, v in columns.items()})[0] > 0.0  # no floor


def test_alternating_rl_resumes_after_a_kill(tiny_bert_dir, random_critic, rows, tmp_path):
    from transformers import TrainerCallback

    gens = _rl_generators(tmp_path, tiny_bert_dir)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt("simulated kill")

    # "prob" rewards are continuous, so the two samples of a prompt differ and RLOO's advantages are non-zero
    kw = dict(rounds=1, steps_per_phase=2, batch_size=2, save_steps=1, max_prompt_tokens=100, max_prompts=4,
              reward_mode="prob", learning_rate=1e-2)
    out = tmp_path / "rl"
    with pytest.raises(KeyboardInterrupt):
        R.train_rl(gens["ppg"], gens["drg"], random_critic, rows, out, callbacks=[Kill()], **kw)
    assert (out / "round0-ppg" / "checkpoints" / "checkpoint-1").is_dir()
    assert not (out / R.STATE_FILE).exists()
    state = R.train_rl(gens["ppg"], gens["drg"], random_critic, rows, out, **kw)
    assert state["done"] == ["round0-ppg", "round0-drg"]
    # a RecipeResult: the state (as in rl_state.json), the folder, no model in memory
    assert dict(state) == json.loads((out / R.STATE_FILE).read_text())
    assert state.output_dir == out and state.model is None
    assert state["phases"]["round0-ppg"]["steps"] == 1  # resumed at step 1: only step 2 ran again
    # the phases train through train_resumable: manifests, and the resumed phase's loss covers both steps
    ppg_phase = state["phases"]["round0-ppg"]
    assert ppg_phase["resumed_from"] == str(out / "round0-ppg" / "checkpoints" / "checkpoint-1")
    assert_whole_run_loss(ppg_phase["train_loss"], out / "round0-ppg" / "checkpoints" / "checkpoint-2", 1)
    assert state["phases"]["round0-drg"]["resumed_from"] is None
    assert state["phases"]["round0-drg"]["steps"] == 2
    assert state["ppg"].endswith("round0-ppg/final") and state["drg"].endswith("round0-drg/final")
    assert 0 < state["reward_share"] < 1
    # the RLOO steps changed both generators (attention weights included)
    for task in ("ppg", "drg"):
        a = safetensors_load(gens[task])
        b = safetensors_load(state[task])
        changed = [k for k in a if not torch.equal(a[k], b[k])]
        assert any("attention" in k for k in changed), task
    # a finished run is not redone
    again = R.train_rl(gens["ppg"], gens["drg"], random_critic, rows, out, **kw)
    assert again["done"] == state["done"] and again["steps"] == state["steps"]
    with pytest.raises(HFPersonaError, match="no config.json"):
        R.train_rl(tmp_path / "missing", gens["drg"], random_critic, rows, out, **kw)
    with pytest.raises(HFPersonaError, match="nothing to train"):
        R.train_rl(gens["ppg"], gens["drg"], random_critic, rows, out, train_ppg=False, train_drg=False)


def test_train_critic_cli_passes_length_and_warmup(tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.data import sample_path

    register_plugin_commands()
    out = tmp_path / "critic"
    res = CliRunner().invoke(cli, ["train", "critic", "--data", str(sample_path("personachat")), "--output-dir",
                                   str(out), "--backbone", str(tiny_bert_dir), "--train-dialogues", "34",
                                   "--max-steps", "2", "--batch-size", "4", "--max-length", "48",
                                   "--warmup-ratio", "0.5"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / P.META_FILE).read_text())
    assert meta["max_length"] == 48 and meta["warmup_steps"] == 1 and meta["steps"] == 2
    assert 0.0 <= meta["dev_accuracy"] <= 1.0 and meta["dev_pairs"] > 0


def test_eval_ppg_cli_evaluates_the_rl_ablation(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.data import read_personachat, sample_path

    calls = []

    def fake_evaluate(ppg_path, drg_path, critic_path, dev_rows, **kw):
        calls.append((ppg_path, drg_path, kw["bm25_drg_path"], len(dev_rows)))
        return {"drg.ppl": float(len(calls)), "ppg.ppl": 10.0 * len(calls)}

    import hf_persona.evaluation.ppg as E

    monkeypatch.setattr(E, "evaluate_ppg", fake_evaluate)
    register_plugin_commands()
    out = tmp_path / "m.json"
    res = CliRunner().invoke(cli, ["eval", "ppg", "--ppg", "p", "--drg", "d", "--ppg-rl", "p2", "--drg-rl", "d2",
                                   "--bm25-drg", "b", "--data", str(sample_path("personachat")),
                                   "--skip-dialogues", "30", "--json", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    n_dev = len(read_personachat(sample_path("personachat"))) - 30
    assert calls == [("p", "d", "b", n_dev), ("p2", "d", None, n_dev), ("p", "d2", None, n_dev),
                     ("p2", "d2", None, n_dev)]
    metrics = json.loads(out.read_text())
    assert metrics["sft.drg.ppl"] == 1.0 and metrics["rl_both.ppg.ppl"] == 40.0
    assert metrics["drg.ppl"] == 4.0  # unprefixed: the fullest system
    for system in ("sft", "rl_ppg_only", "rl_drg_only", "rl_both"):
        assert system in res.output


def test_old_plugin_import_path_still_works_with_a_deprecation_warning():
    from tests.helpers import assert_names_moved

    assert_names_moved("hf_persona.default_plugins.ppg", {
        **dict.fromkeys(("critic_reward_factory", "ppg_critic_reward_factory"), "hf_persona.rewards.critic"),
        **dict.fromkeys(("train_ppg_cmd", "train_drg_cmd", "train_critic_cmd", "train_ppg_rl_cmd", "eval_ppg_cmd"),
                        "hf_persona.commands.ppg"),
    })
