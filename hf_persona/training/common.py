"""Helpers shared by the training recipes: resuming and finding checkpoints."""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from ..errors import HFPersonaError


def last_checkpoint(output_dir) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (None when there is none).

    A checkpoint counts as complete when it holds ``trainer_state.json``, which the Trainer writes
    last; a folder left by a run killed mid-save is ignored, so resuming never starts from a
    half-written checkpoint (see :func:`checkpoint_is_complete`).
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    best = None
    for child in root.iterdir():
        if not child.is_dir() or not child.name.startswith("checkpoint-"):
            continue
        step = child.name.split("-", 1)[1]
        if not step.isdigit() or not checkpoint_is_complete(child):
            continue
        if best is None or int(step) > best[0]:
            best = (int(step), child)
    return os.fspath(best[1]) if best else None


def checkpoint_is_complete(path) -> bool:
    """True when ``path`` is a checkpoint the Trainer finished writing.

    transformers writes a checkpoint in place (weights, optimizer, scheduler, RNG state) and
    ``trainer_state.json`` last, without a temporary folder; a process killed mid-save can leave
    a folder without that file or with a truncated one. Complete means: ``trainer_state.json``
    parses as JSON, its ``global_step`` equals the folder's ``checkpoint-<step>`` number, and some
    weights file is present (``*.safetensors``, or a sharded index).
    """
    path = Path(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return False
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    step = path.name.split("-", 1)[1] if path.name.startswith("checkpoint-") else None
    if not isinstance(state, dict) or (step is not None and str(state.get("global_step")) != step):
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json"))


class TrainingInterrupted(HFPersonaError):
    """Training stopped on a signal after saving a checkpoint; running the command again resumes it."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"training stopped by {name} at step {step}; checkpoint saved in {checkpoint}; "
                         "run the same command again to resume")


def stop_on_signal_callback(signals=(signal.SIGTERM, signal.SIGINT)):
    """A ``TrainerCallback`` that turns SIGTERM/SIGINT into "save a checkpoint now, then stop".

    The handler only sets a flag; at the end of the current optimizer step the callback asks the
    Trainer to save (``control.should_save``) and stop (``control.should_training_stop``), so the
    checkpoint holds the step that just finished and resuming neither loses nor repeats a step.
    A second signal gets the previous handler (the default kills the process at once).
    Use it through :func:`train_resumable`, which installs and removes the handlers.
    """
    from transformers import TrainerCallback

    class StopOnSignalCallback(TrainerCallback):
        def __init__(self):
            self.signals = tuple(signals)
            self.received: int | None = None
            self._previous: dict = {}

        def _handle(self, signum, frame):
            self.received = signum
            for sig, handler in self._previous.items():  # a second signal acts as before
                signal.signal(sig, handler)

        @contextmanager
        def installed(self):
            if threading.current_thread() is not threading.main_thread():
                yield self  # signal handlers can only be set from the main thread
                return
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
            try:
                yield self
            finally:
                for sig, handler in self._previous.items():
                    signal.signal(sig, handler)
                self._previous = {}

        def on_step_end(self, args, state, control, **kwargs):
            if self.received is not None:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopOnSignalCallback()


def train_resumable(trainer, resume: bool = True, signals=(signal.SIGTERM, signal.SIGINT)):
    """``trainer.train()`` that resumes from the newest complete checkpoint and survives SIGTERM.

    With ``resume`` the run continues from :func:`last_checkpoint` of ``trainer.args.output_dir``
    (optimizer, scheduler, RNG and data position restored by the Trainer). A SIGTERM/SIGINT
    during training saves a checkpoint at the end of the current step and raises
    :class:`TrainingInterrupted` (so a recipe never mistakes the stop for a finished run).
    Returns the Trainer's ``TrainOutput``.
    """
    checkpoint = last_checkpoint(trainer.args.output_dir) if resume else None
    callback = stop_on_signal_callback(signals)
    trainer.add_callback(callback)
    try:
        with callback.installed():
            output = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        trainer.remove_callback(callback)
    state = trainer.state
    if callback.received is not None and state.global_step < state.max_steps:
        raise TrainingInterrupted(callback.received, state.global_step,
                                  os.path.join(trainer.args.output_dir, f"checkpoint-{state.global_step}"))
    return output


def atomic_save_to_disk(dataset, path) -> None:
    """``dataset.save_to_disk(path)`` so a crash leaves either the previous dataset or the new one.

    The dataset is written into a temporary sibling folder, then swapped in with renames. A
    process killed during the write leaves ``path`` untouched; one killed between the two renames
    (a few microseconds) leaves the previous version as ``.<name>.old-<pid>``, which the next call
    puts back before writing.
    """
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # recover from a crash between the two renames of an earlier call
        olds = sorted(path.parent.glob(f".{path.name}.old-*"))
        if olds:
            os.replace(olds[-1], path)
    for stale in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        dataset.save_to_disk(os.fspath(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def time_budget_callback(minutes):
    """A TrainerCallback that stops training once ``minutes`` of wall time have passed (None: never).

    The clock starts when training (or a resumed run) begins. When the budget runs out, the
    callback asks the Trainer to save a checkpoint and, where evaluation is configured
    (``args.eval_strategy`` other than ``"no"``), to evaluate first, then to stop. It records the
    step in ``stopped_at`` (None while the budget has not run out); ``stopped_early`` is the same
    as a bool. ``minutes`` must be None or a number >= 0 (0: stop after the first step).
    Every recipe uses this one callback (CoBERT, persona extractor, PAL, Receiver, Transmitter,
    self-play).
    """
    if minutes is not None:
        try:
            minutes = float(minutes)
        except (TypeError, ValueError):
            raise HFPersonaError(f"time budget must be a number of minutes or None, got {minutes!r}") from None
        if not minutes >= 0:  # also rejects NaN
            raise HFPersonaError(f"time budget must be >= 0 minutes, got {minutes}")
    return _time_budget_class()(minutes)


_TIME_BUDGET_CLASS = None


def _time_budget_class():
    """The callback class behind :func:`time_budget_callback`, built once (transformers is
    imported only when a recipe asks for it)."""
    global _TIME_BUDGET_CLASS
    if _TIME_BUDGET_CLASS is not None:
        return _TIME_BUDGET_CLASS
    import time

    from transformers import TrainerCallback

    class TimeBudgetCallback(TrainerCallback):
        def __init__(self, minutes):
            self.minutes = minutes
            self.start = None
            self.stopped_at = None

        @property
        def stopped_early(self) -> bool:
            return self.stopped_at is not None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if self.minutes is None:
                return control
            if self.start is None:  # a step without on_train_begin: start the clock now
                self.start = time.monotonic()
            if time.monotonic() - self.start >= self.minutes * 60:
                control.should_training_stop = True
                control.should_save = True
                # evaluating without evaluation configured (no eval set) would fail in the Trainer
                control.should_evaluate = getattr(args, "eval_strategy", None) != "no"
                self.stopped_at = state.global_step
            return control

    _TIME_BUDGET_CLASS = TimeBudgetCallback
    return TimeBudgetCallback


def trainer_state(run_dir) -> dict:
    """The most advanced ``trainer_state.json`` under ``run_dir`` (its own or a checkpoint's)."""
    best: dict = {}
    for path in Path(run_dir).rglob("trainer_state.json"):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        key = (state.get("global_step", 0), len(state.get("log_history", [])))
        if not best or key > (best.get("global_step", 0), len(best.get("log_history", []))):
            best = state
    return best
