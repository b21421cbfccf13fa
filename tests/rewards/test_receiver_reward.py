"""The persona_perception reward (TRL convention, RS.3), plugin registration and the receiver CLI."""

import json

import pytest
import torch

import hf_persona
from hf_persona.errors import HFPersonaError
from hf_persona.models.receiver import ReceiverModel
from hf_persona.rewards import discounted_returns

P = ["i play the guitar in a band .", "i like to go fishing .", "i love horror movies ."]
Q = ["i bake bread every sunday .", "my favorite color is green ."]


@pytest.fixture(scope="module")
def receiver_dir(tiny_bert_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = ReceiverModel.from_encoder_pretrained(tiny_bert_dir)
    out = tmp_path_factory.mktemp("receiver")
    model.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def receiver(receiver_dir):
    return ReceiverModel.from_pretrained(receiver_dir).eval()


def test_discounted_returns_by_hand():
    own, partner = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    g = 0.5
    expected0 = 1 + g * 20 + g**2 * 2 + g**3 * 30 + g**4 * 3
    expected1 = 2 + g * 30 + g**2 * 3
    assert discounted_returns(own, partner, g) == pytest.approx([expected0, expected1, 3.0])
    assert discounted_returns(own, partner, 0.0) == own
    with pytest.raises(HFPersonaError, match="gamma"):
        discounted_returns(own, partner, 1.5)


def test_registered_as_plugin():
    names = hf_persona.list_plugins()
    assert "persona_perception" in names["rewards"] and "receiver" in names["models"]
    spec = hf_persona.get_model_spec("receiver")
    assert spec.model_class is ReceiverModel


def test_turn_reward_matches_receiver_and_is_one_pass(receiver, monkeypatch):
    reward = hf_persona.get_reward("persona_perception", model=receiver)
    assert reward.__name__ == "persona_perception"
    completions = ["i play guitar in my band", "i bake bread", [{"role": "assistant", "content": "i went fishing"}]]
    calls = []
    original = receiver.encode
    monkeypatch.setattr(receiver, "encode", lambda *a, **k: calls.append(k.get("kind")) or original(*a, **k))
    got = reward(prompts=["hi"] * 3, completions=completions, persona=[P, P, "\n".join(P)], other=[1, 2, 3])
    assert calls == ["utterance", "persona"]  # one encoder pass per side for the whole batch
    monkeypatch.undo()
    expected = [receiver.score(t, P) for t in ["i play guitar in my band", "i bake bread", "i went fishing"]]
    assert got == pytest.approx(expected, abs=1e-5)
    assert all(isinstance(x, float) for x in got)


def test_discounted_reward_is_rs3(receiver):
    reward = hf_persona.get_reward("persona_perception", model=receiver, mode="discounted", gamma=0.5)
    future = ["i baked bread today", "i went fishing", "green is nice", "horror movies rock"]
    got = reward(prompts=["a", "b"], completions=["i play guitar", "i play guitar"], persona=[P, P],
                 partner_persona=[Q, Q], future_turns=[[], future])
    r = lambda text, persona: receiver.score(text, persona)  # noqa: E731
    expected = (r("i play guitar", P) + 0.5 * r(future[0], Q) + 0.25 * r(future[1], P)
                + 0.125 * r(future[2], Q) + 0.0625 * r(future[3], P))
    assert got[0] == pytest.approx(r("i play guitar", P), abs=1e-5)
    assert got[1] == pytest.approx(expected, abs=1e-5)
    # the same number through the dialogue-level helper
    own = [r("i play guitar", P), r(future[1], P), r(future[3], P)]
    partner = [0.0, r(future[0], Q), r(future[2], Q)]
    assert got[1] == pytest.approx(discounted_returns(own, partner, 0.5)[0], abs=1e-5)


def test_reward_errors(receiver, receiver_dir):
    reward = hf_persona.get_reward("persona_perception", model=receiver)
    with pytest.raises(HFPersonaError, match="no column 'persona'"):
        reward(prompts=["a"], completions=["b"], speaker_persona=[P])
    with pytest.raises(HFPersonaError, match="rows for 2 completions"):
        reward(prompts=["a", "b"], completions=["b", "c"], persona=[P])
    with pytest.raises(HFPersonaError, match="list of persona sentences"):
        reward(prompts=["a"], completions=["b"], persona=[3])
    with pytest.raises(HFPersonaError, match="mode"):
        hf_persona.get_reward("persona_perception", model=receiver, mode="episode")
    with pytest.raises(HFPersonaError, match="needs model"):
        hf_persona.get_reward("persona_perception")
    assert reward(prompts=[], completions=[], persona=[]) == []
    # a folder works as well as a model, with the same scores
    from_dir = hf_persona.get_reward("persona_perception", model=str(receiver_dir), persona_column="who")
    assert from_dir(prompts=["a"], completions=["i fish"], who=[P]) == pytest.approx(
        reward(prompts=["a"], completions=["i fish"], persona=[P]), abs=1e-5)


def test_cli_train_eval_heatmap(tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from hf_persona.cli import register_plugin_commands, cli
    from hf_persona.data import sample_path

    register_plugin_commands()
    runner = CliRunner()
    out = tmp_path / "rcv"
    res = runner.invoke(cli, ["train", "receiver", "--output-dir", str(out), "--backbone", tiny_bert_dir,
                              "--first", "28", "--max-steps", "2", "--batch-size", "8", "--loss", "softmax",
                              "--loss-temperature", "0.25"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and f"saved to {out}" in res.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["loss_type"], saved["loss_temperature"]) == ("softmax", 0.25)

    metrics_file = tmp_path / "m.json"
    res = runner.invoke(cli, ["eval", "receiver", "--model", str(out), "--data", str(sample_path("personachat")),
                              "--first", "28", "--candidates", "6", "--zeroshot-backbone", tiny_bert_dir,
                              "--json", str(metrics_file)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads(metrics_file.read_text())
    for method in ("receiver", "zeroshot", "ir"):
        assert 0.0 <= metrics[f"{method}.hits@1.personachat_sample"] <= 1.0
        assert 0.0 < metrics[f"{method}.mrr.personachat_sample"] <= 1.0
    assert metrics["probe_items.personachat_sample"] == 16 and metrics["pairs_per_second"] > 0
    assert metrics["allow_shared_sentences"] is False
    legacy_file = tmp_path / "legacy.json"
    res = runner.invoke(cli, ["eval", "receiver", "--model", str(out), "--data", str(sample_path("personachat")),
                              "--first", "28", "--candidates", "8", "--no-baselines", "--allow-shared-sentences",
                              "--json", str(legacy_file)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(legacy_file.read_text())["allow_shared_sentences"] is True
    # the model card template renders with these metrics and the recorded base encoder
    from hf_persona.hub import build_card

    card = build_card(out, "me/receiver", card_template="receiver", metrics_json=metrics_file)
    assert "`me/receiver`" in card and "| receiver.hits@1.personachat_sample |" in card
    assert f"base_model: {tiny_bert_dir}" in card

    png = tmp_path / "fig.png"
    res = runner.invoke(cli, ["receiver", "heatmap", "--model", str(out), "-u", "i play guitar", "-u", "i fish",
                              "-p", P[0], "-p", P[1], "-p", P[2], "--out", str(png)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_heatmap_rejects_mismatched_grid(tmp_path):
    from hf_persona.evaluation.plots import render_relevance_heatmap

    with pytest.raises(HFPersonaError, match="shape"):
        render_relevance_heatmap([[1.0, 2.0]], ["a"], ["x", "y", "z"], tmp_path / "x.png")


def test_old_plugin_import_path_still_works_with_a_deprecation_warning():
    from tests.helpers import assert_names_moved

    assert_names_moved("hf_persona.default_plugins.receiver", {
        **dict.fromkeys(("discounted_returns", "load_receiver", "PersonaPerceptionReward", "persona_perception"),
                        "hf_persona.rewards.persona_perception"),
        "evaluate_receiver": "hf_persona.evaluation.receiver",
        "render_relevance_heatmap": "hf_persona.evaluation.plots",
    })
