"""CoBERT training / evaluation recipe and CLI tests (tiny encoder, embedded sample)."""

import json

import pytest
from datasets import Dataset

from hf_persona.data import read_personachat, sample_path
from hf_persona.errors import HFPersonaError
from hf_persona.evaluation.cobert import evaluate_ranking
from hf_persona.training.cobert import candidate_sets, load_selector, ranking_examples


def _dialogue(i, utts, persona=("i like tea .",)):
    return {"dialogue_id": i, "your_persona": list(persona), "partner_persona": ["i am tall ."],
            "utterances": utts, "speakers": (["partner", "you"] * 10)[: len(utts)]}


def test_ranking_examples_contexts_personas_and_leakage():
    ds = Dataset.from_list([
        _dialogue(0, ["hello", "hi , i like tea .", "cool", "yes"], persona=("i like tea .", "i run .")),
        {"dialogue_id": 1, "your_persona": ["i sing ."], "partner_persona": [], "utterances": ["hey", "how are you"],
         "speakers": ["you", "partner"]},
    ])
    ex = ranking_examples(ds)
    assert [e["response"] for e in ex] == ["hi , i like tea .", "yes"]
    assert ex[0]["context"] == ["hello"] and ex[1]["context"] == ["hello", "hi , i like tea .", "cool"]
    assert ex[0]["persona"] == ["i run ."]  # "i like tea ." appears in the response: removed
    assert ex[1]["persona"] == ["i like tea .", "i run ."]
    both = ranking_examples(ds, both_sides=True)
    partner = [e for e in both if e["response"] in ("cool", "how are you")]
    assert [e["persona"] for e in partner] == [["i am tall ."], []]
    with pytest.raises(HFPersonaError, match="columns"):
        ranking_examples(Dataset.from_list([{"text": "x"}]))


def test_candidate_sets_gold_first_other_dialogues_only_and_seeded():
    ex = ranking_examples(read_personachat(sample_path("personachat")))
    pool, idx = candidate_sets(ex, 20, seed=3)
    assert len(idx) == len(ex) and all(len(row) == 20 and len(set(row)) == 20 for row in idx)
    for e, row in zip(ex, idx):
        assert pool[row[0]] == e["response"]
        same = {x["response"] for x in ex if x["dialogue_id"] == e["dialogue_id"]}
        assert not {pool[j] for j in row[1:]} & same
    assert candidate_sets(ex, 20, seed=3)[1] == idx and candidate_sets(ex, 20, seed=4)[1] != idx
    with pytest.raises(HFPersonaError, match="candidates per example"):
        candidate_sets(ex[:8], 20)


def test_train_eval_resume_and_cli(tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.training.cobert import train_cobert

    register_plugin_commands()
    data = str(sample_path("personachat"))
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(cli, ["train", "cobert", "--data", data, "--output-dir", str(out), "--backbone", tiny_bert_dir,
                              "--train-dialogues", "0", "--max-steps", "2", "--eval-steps", "1", "--batch-size", "4",
                              "--num-negatives", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["best_checkpoint"] in (str(out / "checkpoint-1"),
                                                                          str(out / "checkpoint-2"))
    assert (out / "model.safetensors").is_file() and (out / "modeling_cobert.py").is_file()

    # resume: a longer run continues from the newest complete checkpoint
    result = train_cobert(read_personachat(data), out, backbone=tiny_bert_dir, max_steps=3, eval_steps=1,
                          batch_size=4, resume=True)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(out / "checkpoint-2") and summary["global_step"] == 3
    assert dict(result) == summary and result.output_dir == out  # the RecipeResult is the summary written
    assert result.model.tokenizer is not None and result.model.train_summary == summary

    metrics_file = tmp_path / "m.json"
    res = runner.invoke(cli, ["eval", "cobert", "--model", str(out), "--data", data, "--candidates", "20",
                              "--hits-candidates", "10", "--max-examples", "40", "--json", str(metrics_file)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads(metrics_file.read_text())
    for key in ("r@1", "r@10", "mrr", "hits@1_10", "r@1_no_persona", "hits@1_10_no_persona"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["r@1"] <= metrics["hits@1_10"] <= metrics["r@10"]  # more candidates, harder
    assert metrics["examples"] == 40 and "hits@1_10" in res.output

    # evaluate_ranking on the reloaded model reproduces the CLI numbers (same seed, same candidates)
    ex = ranking_examples(read_personachat(data))
    again = evaluate_ranking(load_selector(out), ex, num_candidates=20, hits_candidates=10, max_examples=40)
    assert again["r@1"] == pytest.approx(metrics["r@1"]) and again["mrr"] == pytest.approx(metrics["mrr"])


def test_cli_rejects_bad_options(tmp_path):
    from hf_persona.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "cobert", "--data", str(sample_path("personachat")), "--output-dir", str(tmp_path),
              "--batch-size", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["eval", "cobert", "--model", str(tmp_path / "missing"), "--data", str(sample_path("personachat"))])
    assert exc.value.code == 2


def test_old_plugin_import_path_still_works_with_a_deprecation_warning():
    from tests.helpers import assert_names_moved

    assert_names_moved("hf_persona.default_plugins.cobert",
                       dict.fromkeys(("train_cobert_cmd", "eval_cobert_cmd"), "hf_persona.commands.cobert"))
