"""Checkpoint manifests (issue 28 item 2): every checkpoint saved through train_resumable carries a
manifest written last; a corrupt, tampered or half-saved newest checkpoint is skipped with a one-line
warning, set aside (never deleted), and the run resumes from the newest intact one and finishes with
the same weights as an uninterrupted run; the reported loss covers the whole run across resumes."""

from __future__ import annotations

import json
import logging
import shutil
import struct
from pathlib import Path

import pytest

from hf_persona.training.common import MANIFEST_NAME, checkpoint_problem, last_checkpoint
from tests import reliability_job

TOTAL_STEPS = reliability_job.STEPS_PER_EPOCH * reliability_job.EPOCHS
LOGGER = "hf_persona.training.common"


def _run(out, **kwargs):
    import torch

    threads = torch.get_num_threads()
    try:
        return reliability_job.run(out, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (checkpoints 5, 10, 15, 20, 24), and its Trainer."""
    out = tmp_path_factory.mktemp("reference")
    return out, _run(out)


def _killed_after(reference_dir, dest, step, manifests=True):
    """``dest`` as a run killed after saving checkpoint-``step`` leaves it."""
    dest.mkdir(parents=True, exist_ok=True)
    for ckpt in Path(reference_dir).glob("checkpoint-*"):
        if int(ckpt.name.split("-")[1]) <= step:
            shutil.copytree(ckpt, dest / ckpt.name)
            if not manifests:
                (dest / ckpt.name / MANIFEST_NAME).unlink()
    return dest


def _truncate(name):
    def corrupt(ckpt):
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[: len(data) // 2])
    return corrupt


def _garbage(name):
    def corrupt(ckpt):
        size = (ckpt / name).stat().st_size
        (ckpt / name).write_bytes((b"not a torch file " * (size // 17 + 1))[:size])  # same size
    return corrupt


def _empty(name):
    return lambda ckpt: (ckpt / name).write_bytes(b"")


def _delete(name):
    return lambda ckpt: (ckpt / name).unlink()


def _zero_weights(ckpt):
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[: 8 + n] + bytes(len(data) - 8 - n))  # header intact, every tensor zero


CORRUPTIONS = {
    "truncated weights": (_truncate("model.safetensors"), "model.safetensors"),
    "zeroed weights": (_zero_weights, "model.safetensors"),
    "garbage optimizer.pt": (_garbage("optimizer.pt"), "optimizer.pt"),
    "truncated scheduler.pt": (_truncate("scheduler.pt"), "scheduler.pt"),
    "empty rng_state.pth": (_empty("rng_state.pth"), "rng_state.pth"),
    "broken trainer_state.json": (_truncate("trainer_state.json"), "trainer_state.json"),
    "broken config.json": (_truncate("config.json"), "config.json"),
    "deleted optimizer.pt": (_delete("optimizer.pt"), "optimizer.pt"),
}
#: without a manifest (a run saved before manifests existed) all but zeroed weights are still caught
LEGACY = [name for name in CORRUPTIONS if name != "zeroed weights"]


def _skip_warnings(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
            and r.getMessage().startswith("skipping checkpoint")]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def _assert_same_final_weights(out, reference_dir):
    import torch

    got, want = _weights(out / "final"), _weights(reference_dir / "final")
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_every_checkpoint_gets_a_manifest_written_last(reference):
    out, _ = reference
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert steps == [5, 10, 15, 20, 24]
    for step in steps:
        ckpt = out / f"checkpoint-{step}"
        manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
        assert manifest["global_step"] == step
        assert set(manifest["files"]) == {p.name for p in ckpt.iterdir() if p.name != MANIFEST_NAME}
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                "trainer_state.json", "config.json"} <= set(manifest["files"])
        # written last: no file of the checkpoint is newer than its manifest
        assert max(p.stat().st_mtime_ns for p in ckpt.iterdir()) == (ckpt / MANIFEST_NAME).stat().st_mtime_ns
        assert manifest["run_loss"]["steps"] == step
        assert checkpoint_problem(ckpt) is None


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_and_finishes(reference, tmp_path, caplog, case):
    ref_dir, _ = reference
    corrupt, culprit = CORRUPTIONS[case]
    out = _killed_after(ref_dir, tmp_path / "run", 15)
    corrupt(out / "checkpoint-15")
    damaged = sorted((p.name, p.read_bytes()) for p in (out / "checkpoint-15").iterdir())

    caplog.set_level(logging.WARNING)
    trainer = _run(out)

    # one line naming the checkpoint skipped, why, and where the run resumed from; no traceback
    [record] = _skip_warnings(caplog)
    message = record.getMessage()
    assert "\n" not in message and record.exc_info is None
    assert str(out / "checkpoint-15") in message and culprit in message, message
    assert "resuming from checkpoint-10" in message and "corrupt-checkpoint-15" in message
    # the damaged checkpoint is kept, untouched, out of the Trainer's way
    kept = out / "corrupt-checkpoint-15"
    assert sorted((p.name, p.read_bytes()) for p in kept.iterdir() if p.name != "SKIPPED_BY_HF_PERSONA.txt") == damaged
    assert culprit in (kept / "SKIPPED_BY_HF_PERSONA.txt").read_text()
    # resumed from step 10 and finished exactly like the uninterrupted run
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == trainer.state.global_step == TOTAL_STEPS
    assert [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, TOTAL_STEPS + 1))
    assert checkpoint_problem(out / "checkpoint-15") is None  # saved again, intact
    _assert_same_final_weights(out, ref_dir)


@pytest.mark.parametrize("case", LEGACY)
def test_checkpoints_without_a_manifest_are_checked_structurally(reference, tmp_path, caplog, case):
    ref_dir, _ = reference
    corrupt, culprit = CORRUPTIONS[case]
    out = _killed_after(ref_dir, tmp_path / "run", 15, manifests=False)
    assert last_checkpoint(out, set_aside=False) == str(out / "checkpoint-15")  # an old intact run resumes
    corrupt(out / "checkpoint-15")
    caplog.set_level(logging.WARNING)
    assert last_checkpoint(out) == str(out / "checkpoint-10")
    [record] = _skip_warnings(caplog)
    assert culprit in record.getMessage() and "\n" not in record.getMessage()
    assert (out / "corrupt-checkpoint-15").is_dir() or (out / "incomplete-checkpoint-15").is_dir()


def test_a_run_saved_before_manifests_resumes_and_finishes(reference, tmp_path, caplog):
    ref_dir, ref = reference
    out = _killed_after(ref_dir, tmp_path / "run", 15, manifests=False)
    _truncate("model.safetensors")(out / "checkpoint-15")
    caplog.set_level(logging.WARNING)
    trainer = _run(out)
    assert len(_skip_warnings(caplog)) == 1
    assert trainer.state.global_step == TOTAL_STEPS
    _assert_same_final_weights(out, ref_dir)
    # the whole-run loss is rebuilt from the old checkpoint's log_history
    assert trainer.result.training_loss == pytest.approx(ref.result.training_loss, rel=1e-6)


@pytest.mark.parametrize("manifests", [True, False])
def test_truncating_any_file_of_the_newest_checkpoint_resumes_from_the_previous_one(reference, tmp_path, manifests):
    ref_dir, _ = reference
    names = sorted(p.name for p in (ref_dir / "checkpoint-15").iterdir() if p.name != MANIFEST_NAME)
    for name in names:
        out = _killed_after(ref_dir, tmp_path / f"{name}-{manifests}", 15, manifests=manifests)
        _truncate(name)(out / "checkpoint-15")
        assert checkpoint_problem(out / "checkpoint-15"), name
        assert last_checkpoint(out, set_aside=False) == str(out / "checkpoint-10"), name
    out = _killed_after(ref_dir, tmp_path / "manifest", 15)
    _truncate(MANIFEST_NAME)(out / "checkpoint-15")
    assert last_checkpoint(out, set_aside=False) == str(out / "checkpoint-10")


def test_kill_mid_save_never_loses_the_previous_checkpoint(reference, tmp_path, caplog):
    ref_dir, _ = reference
    caplog.set_level(logging.WARNING)
    # killed while the Trainer was writing checkpoint-15: no trainer_state.json yet, no manifest
    out = _killed_after(ref_dir, tmp_path / "mid", 15)
    for name in ("trainer_state.json", MANIFEST_NAME, "rng_state.pth"):
        (out / "checkpoint-15" / name).unlink()
    assert last_checkpoint(out) == str(out / "checkpoint-10")
    assert (out / "incomplete-checkpoint-15" / "model.safetensors").is_file()
    # killed after the Trainer's save, before the manifest: checkpoint-10 is verified, 15 is not
    out = _killed_after(ref_dir, tmp_path / "late", 15)
    (out / "checkpoint-15" / MANIFEST_NAME).unlink()
    assert last_checkpoint(out) == str(out / "checkpoint-10")
    assert "no checkpoint_manifest.json although checkpoint-10 has one" in _skip_warnings(caplog)[-1].getMessage()
    # ... unless save_total_limit rotation already deleted every older checkpoint: then 15 is all
    # there is, it passes the structural checks and is resumed from
    out = _killed_after(ref_dir, tmp_path / "rotated", 15)
    for step in (5, 10):
        shutil.rmtree(out / f"checkpoint-{step}")
    (out / "checkpoint-15" / MANIFEST_NAME).unlink()
    assert last_checkpoint(out) == str(out / "checkpoint-15")


def test_nothing_intact_starts_over_and_keeps_every_folder(reference, tmp_path, caplog):
    ref_dir, _ = reference
    out = _killed_after(ref_dir, tmp_path / "run", 10)
    for step in (5, 10):
        _truncate("model.safetensors")(out / f"checkpoint-{step}")
    caplog.set_level(logging.WARNING)
    assert last_checkpoint(out) is None
    assert sorted(p.name for p in out.iterdir()) == ["corrupt-checkpoint-10", "corrupt-checkpoint-5"]
    assert all("starting from step 0" in r.getMessage() for r in _skip_warnings(caplog))
    # a second damaged checkpoint-10 set aside later does not overwrite the first one
    shutil.copytree(out / "corrupt-checkpoint-10", out / "checkpoint-10")
    assert last_checkpoint(out) is None
    assert (out / "corrupt-checkpoint-10.2").is_dir()


# ------------------------------------------------------------------ the whole run's loss


def test_whole_run_loss_after_a_resume_matches_an_uninterrupted_run(reference, tmp_path):
    ref_dir, ref = reference
    out = _killed_after(ref_dir, tmp_path / "run", 10)
    trainer = _run(out)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = {e["step"]: e["loss"] for e in history if "loss" in e}
    assert sorted(losses) == list(range(1, TOTAL_STEPS + 1))
    whole = trainer.result.training_loss
    assert whole == pytest.approx(ref.result.training_loss, rel=1e-6)
    assert whole == pytest.approx(sum(losses.values()) / TOTAL_STEPS, rel=1e-6)  # logging_steps=1: plain mean
    segment = trainer.result.metrics["segment_train_loss"]
    assert segment == pytest.approx(sum(losses[s] for s in range(11, TOTAL_STEPS + 1)) / (TOTAL_STEPS - 10), rel=1e-6)
    assert abs(segment - whole) > 1e-3  # the Trainer's own figure covers the last segment only
    assert trainer.result.metrics["train_loss"] == whole
    assert history[-1]["train_loss"] == pytest.approx(whole) and history[-1]["segment_train_loss"] == segment


def test_whole_run_loss_over_several_resumes_with_sparse_logging(tmp_path):
    """logging_steps=4 with checkpoints at 5, 7, 10, 13...: a save forces a log entry, and each
    manifest carries the run's loss so far, so two resumes still give the uninterrupted figure."""
    ref = _run(tmp_path / "reference", logging_steps=4)
    out = tmp_path / "run"
    first = _run(out, logging_steps=4, stop_at=7)
    assert first.state.global_step == 7
    assert first.result.training_loss == pytest.approx(
        json.loads((out / "checkpoint-7" / MANIFEST_NAME).read_text())["run_loss"]["sum"] / 7, rel=1e-6)
    second = _run(out, logging_steps=4, stop_at=13)
    assert second.state.global_step == 13
    state13 = json.loads((out / "checkpoint-13" / "trainer_state.json").read_text())
    assert [e["step"] for e in state13["log_history"] if "loss" in e] == [4, 5, 7, 8, 10, 12, 13]
    last = _run(out, logging_steps=4)
    assert last.state.global_step == TOTAL_STEPS
    assert last.result.training_loss == pytest.approx(ref.result.training_loss, rel=1e-6)
    assert last.result.metrics["segment_train_loss"] != pytest.approx(ref.result.training_loss, rel=1e-3)


def test_trainer_state_ignores_set_aside_checkpoints(tmp_path):
    from hf_persona.training.common import trainer_state

    for name, step in (("checkpoint-10", 10), ("corrupt-checkpoint-15", 15), ("incomplete-checkpoint-20", 20)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    assert trainer_state(tmp_path)["global_step"] == 10
