"""``hf-persona demo``: by default the supporter pipeline on the scripted conversation (here on tiny
random models, built once per module), ``--quick`` the same on tiny models from the CLI, and
``--train`` the older train-then-talk frame (stages skip models that have not landed, fail loudly
otherwise, and write a report)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time

import pytest

from hf_persona import demo
from hf_persona.training.common import trainer_state

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: stage -> the modules whose presence decides whether it runs
STAGE_MODULES = {
    "CoBERT": ["hf_persona.training.cobert"],
    "Receiver": ["hf_persona.training.receiver"],
    "Persona extractor": ["hf_persona.training.persona_extractor"],
    "PAL": ["hf_persona.training.pal"],
}


def _present(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_landed_distinguishes_missing_modules_from_broken_ones(tmp_path, monkeypatch):
    with pytest.raises(demo.NotLanded, match="Foo has not landed yet \\(no module hf_persona.training.no_such_model\\)"):
        demo.landed("Foo", "hf_persona.training.no_such_model", "train_foo")
    with pytest.raises(demo.NotLanded, match="hf_persona.utils has no train_foo"):
        demo.landed("Foo", "hf_persona.utils", "train_foo")
    assert demo.landed("Utils", "hf_persona.utils", "atomic_write_text") is not None
    # a module that exists but whose own import fails is a real error, not "not landed"
    pkg = tmp_path / "hfp_demo_broken"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "training.py").write_text("import hfp_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="hfp_dependency_that_is_missing"):
        demo.landed("Broken", "hfp_demo_broken.training", "train")


def test_run_demo_skips_not_landed_stages_in_one_line_and_fails_loudly_on_errors(tmp_path, monkeypatch, capsys):
    calls = []

    def missing(ctx):
        calls.append("missing")
        demo.landed("Ghost", "hf_persona.training.ghost_model", "train_ghost")

    def fine(ctx):
        calls.append("fine")

    monkeypatch.setattr(demo, "STAGES", (missing, fine))
    monkeypatch.setattr(demo, "section_overview", lambda out: "## Overview\n")
    out = demo.run_demo(tmp_path / "report", backbone="unused", train=True)
    printed = capsys.readouterr().out
    assert calls == ["missing", "fine"]
    ghost_lines = [line for line in printed.splitlines() if "Ghost" in line]
    assert ghost_lines[0] == "-- Ghost has not landed yet (no module hf_persona.training.ghost_model); skipping it"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["not_landed"] == ["Ghost: no module hf_persona.training.ghost_model"]
    assert "## Not landed yet\n\n- Ghost: no module hf_persona.training.ghost_model" in (out / "README.md").read_text()

    def broken(ctx):
        raise RuntimeError("a real bug in a landed model")

    monkeypatch.setattr(demo, "STAGES", (broken, fine))
    with pytest.raises(RuntimeError, match="a real bug in a landed model"):
        demo.run_demo(tmp_path / "report2", backbone="unused", train=True)


def test_training_curves_come_from_trainer_state(tmp_path):
    run = tmp_path / "run"
    for step, history in ((2, [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]),
                          (4, [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 2, "eval_loss": 2.7},
                               {"step": 3, "loss": 2.0}, {"step": 4, "loss": 1.5}])):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": history}))
    (run / "checkpoint-9").mkdir()
    (run / "checkpoint-9" / "trainer_state.json").write_text('{"global_step": 9, "log_')  # torn: ignored
    state = trainer_state(run)
    assert state["global_step"] == 4 and len(state["log_history"]) == 5
    png = demo.plot_training_curves({"Model": run, "Empty": tmp_path / "nothing"}, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert demo.plot_training_curves({"Empty": tmp_path / "nothing"}, tmp_path / "none.png") is None


def test_train_quick_demo_writes_the_report(tmp_path):
    out = demo.run_demo(tmp_path / "demo", quick=True, train=True)
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "README.md").read_text()
    assert report.startswith("# hf_persona demo")
    assert "## Plugins" in report and "## Embedded sample" in report  # the lead's first section stays first
    assert report.index("## Plugins") < report.index("## Training") < report.index("## Conversation")
    trained = {row["model"] for row in summary["training"]}
    skipped = {line.split(":")[0] for line in summary["not_landed"]}
    for stage, modules in STAGE_MODULES.items():
        present = all(_present(m) for m in modules)
        assert (stage in trained) == present, f"{stage}: present={present}, trained={trained}"
        if not present:
            assert stage in skipped
    for row in summary["training"]:
        assert row["steps"] == demo.BUDGETS["quick"][row["model"].lower().replace(" ", "_")]
    if trained:
        assert "training_curves.png" in summary["plots"]
    if "Receiver" in trained:
        assert "receiver_heatmap.png" in summary["plots"]
    for name in summary["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in report
    if trained & {"CoBERT", "PAL"}:
        assert len(summary["conversation"]) == demo.BUDGETS["quick"]["turns"]
        for row in summary["conversation"]:
            assert row["seeker"] == demo.SEEKER_TURNS[row["turn"] - 1]
            if "CoBERT" in trained:
                assert row["CoBERT top"]


def test_strategy_first_processor_masks_by_position():
    """The --train conversation's processor (pipeline.strategy_first_processor) with the MiniLM PAL's
    banned ids: a strategy first, then no strategy or special token but eos."""
    import torch

    proc = demo.strategy_first_processor([5, 7], banned_later=[0, 1, 5, 7])
    scores = torch.arange(10, dtype=torch.float).repeat(2, 1)
    first = proc(torch.zeros(2, 1, dtype=torch.long), scores)
    inf = float("-inf")
    assert first.tolist() == [[inf, inf, inf, inf, inf, 5.0, inf, 7.0, inf, inf]] * 2
    later = proc(torch.zeros(2, 2, dtype=torch.long), scores)
    # strategy and special tokens are banned after the first step, eos (2) stays allowed
    assert later.tolist() == [[inf, inf, 2.0, 3.0, 4.0, inf, 6.0, inf, 8.0, 9.0]] * 2
    assert scores.tolist()[0] == list(map(float, range(10)))  # the input is not modified


# ------------------------------------------------------------------ the default: the shipped supporter

@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from hf_persona.pipeline import SupportPipeline

    return SupportPipeline.tiny(tmp_path_factory.mktemp("demo_tiny"))


def test_pipeline_demo_prints_each_turn_and_writes_the_report(tiny_pipe, tmp_path, capsys):
    started = time.time()
    out = demo.run_demo(tmp_path / "report", pipeline=tiny_pipe, started=started - 1.5, turns=3, seed=2)
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "README.md").read_text()
    assert len(summary["turns"]) == 3
    for number, row in enumerate(summary["turns"], start=1):
        assert row["turn"] == number and row["seeker"] == demo.SEEKER_TURNS[number - 1]
        assert row["strategy"] and row["reply"] and 1 <= row["reply_rank"] <= row["candidates"]
        assert f"[turn {number}] seeker> {row['seeker']}" in printed
        assert f"supporter> {row['reply']}" in printed
    assert printed.count("  CoBERT    the reply ranks ") == 3
    # counted from ``started`` (the command passes its process start): 1.5 s before the call at least
    assert 1.5 < summary["seconds_to_first_reply"] <= summary["seconds_total"] < time.time() - started + 1.6
    assert re.search(r"first reply after \d+\.\ds \(loading 0\.0s\); total \d+\.\ds", printed)
    # the persona timeline: every sentence of the last turn's persona, first inferred at some turn
    timeline = summary["persona_timeline"]
    assert [row["sentence"] for row in timeline] == summary["turns"][-1]["persona"]
    for row in timeline:
        assert row["turns"] == list(range(row["first_turn"], 4))  # inferred persona is only ever added to
    assert summary["plots"] == ["receiver_heatmap.png", "persona_timeline.png"]
    for name in summary["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and f"]({name})" in report
    assert report.startswith("# hf_persona demo")
    assert report.index("## Conversation") < report.index("## Timings") < report.index("## Persona timeline")
    assert "| persona sentence | first inferred at turn | 1 | 2 | 3 |" in report


def test_persona_timeline_table_and_plot(tmp_path):
    from hf_persona.pipeline import SupportTurn

    def turn(persona):
        return SupportTurn(seeker="s", reply="r", persona=persona, strategy="Question", alpha=None, ranking=[],
                           receiver_score=None, seconds=0.1)

    turns = [turn([]), turn(["i have a dog ."]), turn(["i have a dog .", "i work | at night ."])]
    timeline = demo.persona_timeline(turns)
    assert timeline == [{"sentence": "i have a dog .", "first_turn": 2, "turns": [2, 3]},
                        {"sentence": "i work | at night .", "first_turn": 3, "turns": [3]}]
    assert demo.timeline_table(timeline, 3).splitlines() == [
        "| persona sentence | first inferred at turn | 1 | 2 | 3 |", "|---|---|---|---|---|",
        "| i have a dog . | 2 |  | ● | ● |", "| i work \\| at night . | 3 |  |  | ● |"]
    assert demo.timeline_table([], 3) == "(no persona inferred)"
    assert demo.plot_persona_timeline(timeline, 3, tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC
    assert demo.plot_persona_timeline([], 3, tmp_path / "none.png") is None


def test_cli_demo_options():
    """--help names the three ways; a bad --seed fails in one line before any model loads."""
    proc = subprocess.run([sys.executable, "-m", "hf_persona.cli", "demo", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--train" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "hf_persona.cli", "demo", "--seed", "-1"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: Invalid value for '--seed'")


def test_process_started_is_in_the_past():
    started = demo.process_started()
    assert started <= time.time() and time.time() - started < 24 * 3600
