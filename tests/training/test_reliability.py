"""Reliability: a Trainer run killed mid-way resumes with no lost or repeated step; writes are atomic."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_persona.training.common import checkpoint_is_complete, last_checkpoint
from tests import reliability_job

ROOT = Path(__file__).resolve().parents[2]
TOTAL_STEPS = reliability_job.STEPS_PER_EPOCH * reliability_job.EPOCHS


def _start(out, pace):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "from tests.reliability_job import main; main()", str(out), str(pace)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc, out, step, timeout=240):
    progress = Path(out) / "progress"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"job ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if progress.is_file() and int(progress.read_text() or 0) >= step:
            return int(progress.read_text())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"job did not reach step {step} in {timeout}s")


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def _losses(state):
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


def _run_here(out):
    import torch

    threads = torch.get_num_threads()
    try:
        reliability_job.run(out)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference")
    _run_here(out)
    return out


def test_sigterm_then_sigkill_then_resume_matches_an_uninterrupted_run(reference, tmp_path):
    import torch

    out = tmp_path / "run"
    # 1. SIGTERM mid-way: the run saves a checkpoint at the end of the current step and exits 3.
    proc = _start(out, pace=0.2)
    _wait_for_step(proc, out, 7)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    stopped_at = int((out / "progress").read_text())
    assert 7 <= stopped_at < TOTAL_STEPS
    assert last_checkpoint(out) == str(out / f"checkpoint-{stopped_at}")
    state = json.loads((out / f"checkpoint-{stopped_at}" / "trainer_state.json").read_text())
    assert state["global_step"] == stopped_at
    assert [s for s, _ in _losses(state)] == list(range(1, stopped_at + 1))
    assert not (out / "final").exists()  # an interrupted run never looks finished

    # 2. Resume, and this time SIGKILL it (no chance to save) once checkpoint-15 is written.
    proc = _start(out, pace=0.2)
    _wait_for_step(proc, out, 17)
    proc.kill()
    proc.communicate(timeout=60)
    assert last_checkpoint(out) == str(out / "checkpoint-15")
    # a checkpoint folder left half-written by a crash is not resumed from
    broken = out / "checkpoint-99"
    shutil.copytree(out / "checkpoint-15", broken)
    (broken / "trainer_state.json").write_text('{"global_step": 99, "log_hist')
    assert last_checkpoint(out, set_aside=False) == str(out / "checkpoint-15")
    assert broken.is_dir()  # set_aside=False: only a query
    assert last_checkpoint(out) == str(out / "checkpoint-15")
    assert not broken.exists() and (out / "corrupt-checkpoint-99").is_dir()  # set aside, not deleted
    shutil.rmtree(out / "corrupt-checkpoint-99")

    # 3. Resume to the end (in this process: the job is the same function).
    _run_here(out)

    final = json.loads((out / "trainer_state.json").read_text())
    ref = json.loads((reference / "trainer_state.json").read_text())
    assert final["global_step"] == ref["global_step"] == TOTAL_STEPS
    steps = [s for s, _ in _losses(final)]
    assert steps == list(range(1, TOTAL_STEPS + 1)), "a step was lost or repeated"
    for (step, loss), (_, ref_loss) in zip(_losses(final), _losses(ref)):
        assert loss == pytest.approx(ref_loss, abs=1e-5), f"loss differs at step {step}"
    got, want = _weights(out / "final"), _weights(reference / "final")
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    # the reported loss covers the whole run across both resumes, not the last segment
    assert final["log_history"][-1]["train_loss"] == pytest.approx(ref["log_history"][-1]["train_loss"], rel=1e-6)
    assert final["log_history"][-1]["segment_train_loss"] != pytest.approx(final["log_history"][-1]["train_loss"])


def test_checkpoint_completeness(tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    assert not checkpoint_is_complete(ckpt)  # nothing written yet
    save_file({"w": torch.ones(4)}, str(ckpt / "model.safetensors"))
    (ckpt / "trainer_state.json").write_text('{"global_step": 3, "log_')  # killed mid-write
    assert not checkpoint_is_complete(ckpt)
    (ckpt / "trainer_state.json").write_text('{"global_step": 2}')  # does not belong to this folder
    assert not checkpoint_is_complete(ckpt)
    (ckpt / "trainer_state.json").write_text('{"global_step": 3}')
    assert checkpoint_is_complete(ckpt)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:-3])  # torn weights
    assert not checkpoint_is_complete(ckpt)
    (ckpt / "model.safetensors").unlink()
    assert not checkpoint_is_complete(ckpt)  # state without weights


# ------------------------------------------------------------------ atomic writes

_CRASH_CHILD = r"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("hfp_utils", sys.argv[1])
utils = importlib.util.module_from_spec(spec); spec.loader.exec_module(utils)
os.replace = lambda *a, **k: os._exit(9)   # the process dies after writing the temp file, before the rename
utils.atomic_write_json(sys.argv[2], {"version": 2, "payload": "x" * 100000})
"""


def test_a_crash_mid_write_leaves_the_previous_file(tmp_path):
    from hf_persona.utils import atomic_write_json

    target = tmp_path / "state.json"
    atomic_write_json(target, {"version": 1})
    done = subprocess.run([sys.executable, "-c", _CRASH_CHILD, str(ROOT / "hf_persona" / "utils.py"), str(target)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    assert json.loads(target.read_text()) == {"version": 1}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "state.json"]
    assert leftovers and all(n.startswith(".state.json.") for n in leftovers)  # only the dead temp file


def test_a_failed_write_keeps_the_previous_file_and_cleans_up(tmp_path, monkeypatch):
    from hf_persona import utils

    target = tmp_path / "card.md"
    utils.atomic_write_text(target, "old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        utils.atomic_write_text(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]


def test_dataset_save_is_atomic(tmp_path, monkeypatch):
    from datasets import Dataset, load_from_disk

    from hf_persona.training.common import atomic_save_to_disk

    target = tmp_path / "pesconv"
    atomic_save_to_disk(Dataset.from_dict({"a": [1, 2, 3]}), target)
    assert load_from_disk(str(target))["a"] == [1, 2, 3]

    original = Dataset.save_to_disk

    def crash_midway(self, path, **kwargs):
        original(self, path, **kwargs)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"torn")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(Dataset, "save_to_disk", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_to_disk(Dataset.from_dict({"a": [9]}), target)
    assert load_from_disk(str(target))["a"] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pesconv"]
    monkeypatch.setattr(Dataset, "save_to_disk", original)
    atomic_save_to_disk(Dataset.from_dict({"a": [4, 5]}), target)
    assert load_from_disk(str(target))["a"] == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pesconv"]
