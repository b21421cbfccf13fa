"""The demo frame: stages skip models that have not landed, fail loudly otherwise, and write a report."""

from __future__ import annotations

import importlib.util
import json

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
    out = demo.run_demo(tmp_path / "report", backbone="unused")
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
        demo.run_demo(tmp_path / "report2", backbone="unused")


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


def test_quick_demo_writes_the_report(tmp_path):
    out = demo.run_demo(tmp_path / "demo", quick=True)
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
    import torch

    proc = demo.strategy_first_processor(strategy_ids=[5, 7], special_ids=[0, 1, 2, 5, 7], eos_ids=[2])
    scores = torch.arange(10, dtype=torch.float).repeat(2, 1)
    first = proc(torch.zeros(2, 1, dtype=torch.long), scores)
    inf = float("-inf")
    assert first.tolist() == [[inf, inf, inf, inf, inf, 5.0, inf, 7.0, inf, inf]] * 2
    later = proc(torch.zeros(2, 2, dtype=torch.long), scores)
    # strategy and special tokens are banned after the first step, eos (2) stays allowed
    assert later.tolist() == [[inf, inf, 2.0, 3.0, 4.0, inf, 6.0, inf, 8.0, 9.0]] * 2
    assert scores.tolist()[0] == list(map(float, range(10)))  # the input is not modified
