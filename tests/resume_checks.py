"""Checks shared by the recipes' resume tests: a resumed run went through ``train_resumable``
(manifests in its checkpoints) and reports the whole run's training loss, not the last segment's."""

import json
from pathlib import Path

import pytest

from hf_persona.training.common import MANIFEST_NAME


def logged_losses(checkpoint) -> dict:
    """``{step: loss}`` of the ``loss`` entries in ``checkpoint``'s ``trainer_state.json``."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def whole_run_mean(losses: dict, last_step: int) -> float:
    """The mean per-step loss over steps 1..last_step: each logged loss is the mean over the steps
    since the previous log entry, so it counts that many times."""
    total, previous = 0.0, 0
    for step in sorted(losses):
        total += losses[step] * (step - previous)
        previous = step
    assert previous == last_step, f"the log history ends at step {previous}, not {last_step}"
    return total / last_step


def assert_whole_run_loss(reported, final_checkpoint, first_segment_end: int):
    """``reported`` is the whole run's mean loss, computed from the log history of the final
    checkpoint (which carries a manifest); the log covers the first segment's last step (a save
    forces a log entry). Returns the ``{step: loss}`` read."""
    final = Path(final_checkpoint)
    assert (final / MANIFEST_NAME).is_file()
    last_step = int(final.name.split("-")[-1])
    losses = logged_losses(final)
    assert first_segment_end in losses
    assert reported == pytest.approx(whole_run_mean(losses, last_step), rel=1e-6, abs=1e-9)
    return losses
