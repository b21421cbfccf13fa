"""Helpers shared by the training recipes: resuming, verifying and finding checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import struct
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import HFPersonaError

logger = logging.getLogger(__name__)

#: Written last into every ``checkpoint-<step>`` folder saved through :func:`train_resumable`
#: (by :func:`checkpoint_manifest_callback`): the size and sha256 of every file in the folder,
#: and the run's loss so far. A checkpoint whose files do not match it is never resumed from.
MANIFEST_NAME = "checkpoint_manifest.json"
MANIFEST_FORMAT = "hf_persona.checkpoint_manifest/1"
#: Prefixes given to a skipped checkpoint folder (``checkpoint-15`` -> ``corrupt-checkpoint-15``):
#: out of the Trainer's ``checkpoint-*`` namespace, so neither resuming nor ``save_total_limit``
#: rotation ever sees (or deletes) it, and a later save of the same step cannot mix into it.
SET_ASIDE_PREFIXES = ("corrupt-", "incomplete-")
_SET_ASIDE_NAMES = tuple(prefix + "checkpoint-" for prefix in SET_ASIDE_PREFIXES)
SKIP_NOTE = "SKIPPED_BY_HF_PERSONA.txt"

_CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_verified: dict[str, tuple[tuple, str | None]] = {}  # path -> (files' stat signature, problem)


def last_checkpoint(output_dir, *, set_aside: bool = True) -> str | None:
    """The newest intact ``checkpoint-<step>`` folder in ``output_dir`` (None when there is none).

    Checkpoints are tried newest first with :func:`checkpoint_problem`; each one skipped gets a
    one-line warning naming it, the reason, and the checkpoint resumed from instead. With
    ``set_aside`` (the default; recipes call this right before resuming) a skipped folder is
    renamed ``corrupt-checkpoint-<step>`` (or ``incomplete-...`` when its save was cut short):
    nothing is deleted, and the Trainer's checkpoint rotation and later saves cannot touch it.

    Checkpoints without a manifest (saved before manifests existed, by a recipe that does not
    train through :func:`train_resumable`, or by a run killed between the Trainer's save and the
    manifest) are checked structurally instead, and used when they pass, except that one without
    a manifest is treated as incomplete when an *older* checkpoint in the same folder has one: the
    run was writing manifests, so the missing one means the save did not finish, and the older,
    verified checkpoint is the safe place to resume from. (Only a checkpoint with a manifest
    is proof against silent damage such as zeroed weights; the structural checks catch truncated,
    empty, garbage and missing files.) Call it with ``set_aside`` only when no other process is
    training into ``output_dir``: a checkpoint being saved there right now looks incomplete.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT_RE.fullmatch(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    found.sort(reverse=True)
    with_manifest = [step for step, child in found if (child / MANIFEST_NAME).exists()]
    skipped = []
    chosen = None
    for step, child in found:
        problem = checkpoint_problem(child)
        if problem is None and not (child / MANIFEST_NAME).exists():
            older = [s for s in with_manifest if s < step]
            if older:
                problem = (f"it has no {MANIFEST_NAME} although checkpoint-{older[0]} has one "
                           "(the run was stopped while saving it)")
        if problem is None:
            chosen = child
            break
        skipped.append((child, problem))
    for child, problem in skipped:
        where = _set_aside(child, problem) if set_aside else None
        moved = f"; moved to {where.name} (nothing deleted)" if where else ""
        resume = f"resuming from {chosen.name}" if chosen else "no intact checkpoint left: starting from step 0"
        logger.warning("skipping checkpoint %s: %s%s; %s", child, problem, moved, resume)
    return os.fspath(chosen) if chosen is not None else None


def _set_aside(child: Path, problem: str) -> Path | None:
    incomplete = "no trainer_state.json" in problem or f"no {MANIFEST_NAME}" in problem
    prefix = SET_ASIDE_PREFIXES[1] if incomplete else SET_ASIDE_PREFIXES[0]
    target = child.with_name(prefix + child.name)
    n = 1
    while target.exists():
        n += 1
        target = child.with_name(f"{prefix}{child.name}.{n}")
    try:
        os.rename(child, target)
    except OSError as exc:
        logger.warning("could not rename %s to %s (%s); leaving it in place", child, target.name, exc)
        return None
    _verified.pop(os.fspath(child), None)
    try:
        (target / SKIP_NOTE).write_text(f"hf_persona skipped this checkpoint when resuming: {problem}\n"
                                        f"Rename the folder back to {child.name} to use it anyway.\n",
                                        encoding="utf-8")
    except OSError:
        pass
    return target


def checkpoint_is_complete(path) -> bool:
    """True when ``path`` is a checkpoint safe to resume from (see :func:`checkpoint_problem`)."""
    return checkpoint_problem(path) is None


def checkpoint_problem(path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None when it is intact.

    Always: ``trainer_state.json`` parses and its ``global_step`` equals the folder's
    ``checkpoint-<step>`` number. With a manifest (:data:`MANIFEST_NAME`): every file it lists
    exists with the recorded size and sha256 (this catches truncation, garbage, zeroed weights and
    deleted files alike). Without one, structural checks: a weights file is present, every
    ``*.safetensors`` file's header parses and accounts for the file's exact size, every
    ``*.json`` parses, every torch file (``.pt``/``.pth``/``.bin``) is a complete zip archive
    whose CRCs match, and the optimizer and scheduler files are both present or both absent.
    Results are cached per process until a file in the folder changes.
    """
    path = Path(path)
    try:
        signature = _signature(path)
    except OSError as exc:
        return f"cannot be read ({exc})"
    key = os.fspath(path)
    cached = _verified.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    problem = _problem(path)
    _verified[key] = (signature, problem)
    return problem


def _files(path: Path) -> list[Path]:
    """Regular files under a checkpoint folder, minus the manifest and temporary files."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
                  and not p.name.startswith(f".{MANIFEST_NAME}.") and p.name != SKIP_NOTE)


def _signature(path: Path) -> tuple:
    out = []
    for p in sorted(path.rglob("*")):
        st = p.stat()
        out.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _problem(path: Path) -> str | None:
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json (the save was cut short)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"trainer_state.json is unreadable ({_short(exc)})"
    match = _CHECKPOINT_RE.fullmatch(path.name)
    if not isinstance(state, dict):
        return "trainer_state.json does not hold a trainer state"
    if match and str(state.get("global_step")) != match.group(1):
        return f"trainer_state.json is for step {state.get('global_step')}, not {match.group(1)}"
    if (path / MANIFEST_NAME).exists():
        return _manifest_problem(path)
    return _structure_problem(path)


def _manifest_problem(path: Path) -> str | None:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not files:
            raise ValueError("not a checkpoint manifest")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return f"{MANIFEST_NAME} is unreadable ({_short(exc)})"
    for name, entry in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing (listed in {MANIFEST_NAME})"
        try:
            size = file.stat().st_size
            if size != entry["size"]:
                return f"{name} has {size} bytes, {MANIFEST_NAME} says {entry['size']}"
            if _sha256(file) != entry["sha256"]:
                return f"{name} does not match its sha256 in {MANIFEST_NAME} (same size, different content)"
        except (OSError, KeyError, TypeError) as exc:
            return f"{name} cannot be checked ({_short(exc)})"
    return None


def _structure_problem(path: Path) -> str | None:
    files = _files(path)
    names = {p.relative_to(path).as_posix() for p in files}
    if not any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return "no weights file (*.safetensors)"
    if ("optimizer.pt" in names) != ("scheduler.pt" in names):
        pair = ["optimizer.pt", "scheduler.pt"]
        present, missing = pair if "optimizer.pt" in names else pair[::-1]
        return f"{missing} is missing but {present} is present"
    for file in files:
        name = file.relative_to(path).as_posix()
        try:
            if name.endswith(".safetensors"):
                _check_safetensors(file)
            elif name.endswith(".json"):
                data = json.loads(file.read_text(encoding="utf-8"))
                if name.endswith(".safetensors.index.json"):
                    for shard in set(data.get("weight_map", {}).values()):
                        if not (file.parent / shard).is_file():
                            return f"{shard} (listed in {name}) is missing"
            elif name.endswith(_TORCH_SUFFIXES):
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    raise ValueError(f"CRC mismatch in {bad}")
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, zipfile.BadZipFile,
                struct.error, AttributeError, TypeError, EOFError) as exc:
            return f"{name} is truncated or corrupt ({_short(exc)})"
    return None


def _check_safetensors(file: Path) -> None:
    """Raise ValueError unless ``file``'s header parses and its tensors end exactly at the end of file."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, shorter than a header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(fh.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{size} bytes, the header describes {8 + n + end}")


def _sha256(file: Path) -> str:
    with open(file, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def write_checkpoint_manifest(path, run_loss: dict | None = None) -> Path:
    """Write :data:`MANIFEST_NAME` into the checkpoint folder ``path`` (atomically, after fsyncing
    every file it lists): each file's size and sha256, the step, and ``run_loss`` (the run's
    ``{"sum", "steps"}`` of per-step losses so far, which :func:`train_resumable` continues after a
    resume). Returns the manifest's path."""
    from ..utils import atomic_write_json

    path = Path(path)
    files = {}
    for file in _files(path):
        with open(file, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            os.fsync(fh.fileno())
        files[file.relative_to(path).as_posix()] = {"size": file.stat().st_size, "sha256": digest}
    match = _CHECKPOINT_RE.fullmatch(path.name)
    manifest = {"format": MANIFEST_FORMAT, "global_step": int(match.group(1)) if match else None, "files": files}
    if run_loss is not None:
        manifest["run_loss"] = run_loss
    atomic_write_json(path / MANIFEST_NAME, manifest)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path / MANIFEST_NAME


def _run_loss_until(checkpoint, state) -> tuple[float, int]:
    """``(sum, steps)`` of the per-step losses of the run up to the step resumed from: the
    manifest's record when the checkpoint has one, else rebuilt from ``state.log_history`` (each
    logged ``loss`` is the mean over the steps since the previous one)."""
    if checkpoint:
        try:
            rec = json.loads((Path(checkpoint) / MANIFEST_NAME).read_text(encoding="utf-8"))["run_loss"]
            return float(rec["sum"]), int(rec["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    total, steps, last = 0.0, 0, 0
    for entry in sorted((e for e in state.log_history if "loss" in e and "step" in e), key=lambda e: e["step"]):
        if last < entry["step"] <= state.global_step:
            total += float(entry["loss"]) * (entry["step"] - last)
            steps += entry["step"] - last
            last = entry["step"]
    return total, steps


def checkpoint_manifest_callback():
    """A ``TrainerCallback`` that writes :data:`MANIFEST_NAME` last into every checkpoint.

    ``on_save`` runs after the Trainer has written the whole checkpoint, so a manifest vouches
    for a finished save. The callback also keeps the run's loss across resumes: it asks for a log
    entry at every save (so a checkpoint's ``log_history`` covers every step up to it), adds up
    the logged losses, and records the running ``{"sum", "steps"}`` in the manifest;
    :func:`train_resumable` turns that into the whole run's mean loss. :func:`train_resumable`
    adds one; pass it in ``callbacks=`` to a Trainer that does not train through it.
    """
    return _manifest_class()()


_MANIFEST_CLASS = None


def _manifest_class():
    global _MANIFEST_CLASS
    if _MANIFEST_CLASS is not None:
        return _MANIFEST_CLASS
    from transformers import TrainerCallback

    class CheckpointManifestCallback(TrainerCallback):
        def __init__(self):
            self.resumed_from: str | None = None  # set by train_resumable before training
            self.start_step = 0
            self.base = (0.0, 0)  # run loss (sum, steps) before start_step
            self.sum, self.steps, self.last_logged = 0.0, 0, 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = self.last_logged = state.global_step
            self.sum, self.steps = 0.0, 0
            checkpoint = self.resumed_from
            if checkpoint is None and state.global_step:
                checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self.base = _run_loss_until(checkpoint, state) if state.global_step else (0.0, 0)

        def _log_with_save(self, control):
            if control.should_save:
                control.should_log = True
            return control

        def on_step_end(self, args, state, control, **kwargs):
            return self._log_with_save(control)

        def on_epoch_end(self, args, state, control, **kwargs):
            return self._log_with_save(control)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.global_step > self.last_logged:
                n = state.global_step - self.last_logged
                self.sum += float(logs["loss"]) * n
                self.steps += n
                self.last_logged = state.global_step

        def run_loss(self) -> dict:
            return {"sum": self.base[0] + self.sum, "steps": self.base[1] + self.steps}

        def whole_run_loss(self, segment_loss, global_step):
            """The mean per-step loss over the whole run: the run's loss before this segment plus
            this segment's, from the logged losses when they cover every step of it (a save, hence
            a log, at the last step), else from the Trainer's mean over the segment."""
            n = global_step - self.start_step
            if not self.start_step or segment_loss is None:
                return segment_loss
            if self.last_logged == global_step and self.steps == n:
                segment_sum = self.sum
            else:
                segment_sum = float(segment_loss) * n
            steps = self.base[1] + n
            return (self.base[0] + segment_sum) / steps if steps > 0 else segment_loss

        def on_save(self, args, state, control, **kwargs):
            if not args.should_save:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_checkpoint_manifest(folder, self.run_loss())
                _verified.pop(os.fspath(folder), None)

    _MANIFEST_CLASS = CheckpointManifestCallback
    return CheckpointManifestCallback


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
                control.should_save = _saves(args)
                control.should_training_stop = True
            return control

    return StopOnSignalCallback()


def train_resumable(trainer, resume: bool = True, signals=(signal.SIGTERM, signal.SIGINT)):
    """``trainer.train()`` that resumes from the newest intact checkpoint and survives SIGTERM.

    With ``resume`` the run continues from :func:`last_checkpoint` of ``trainer.args.output_dir``
    (optimizer, scheduler, RNG and data position restored by the Trainer); a corrupt or half-saved
    newer checkpoint is skipped with a one-line warning and set aside, never deleted. Every
    checkpoint saved gets a manifest (:func:`checkpoint_manifest_callback`), written last. A
    SIGTERM/SIGINT during training saves a checkpoint at the end of the current step and raises
    :class:`TrainingInterrupted` (so a recipe never mistakes the stop for a finished run).

    Returns the Trainer's ``TrainOutput``, except that after a resume ``training_loss`` (and
    ``metrics["train_loss"]``, and the ``train_loss`` of the run's last ``log_history`` entry) is
    the mean per-step loss of the whole run across resumes, not of the last segment only; the
    Trainer's own figure stays as ``segment_train_loss``.
    """
    checkpoint = last_checkpoint(trainer.args.output_dir) if resume else None
    manifest_cls = _manifest_class()
    manifest = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, manifest_cls)), None)
    added = manifest is None
    if added:
        manifest = manifest_cls()
    manifest.resumed_from = checkpoint
    callback = stop_on_signal_callback(signals)
    trainer.add_callback(callback)
    if added:
        trainer.add_callback(manifest)  # after the callbacks that ask for a save: it logs at every save
    try:
        with callback.installed():
            output = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        trainer.remove_callback(callback)
        if added:
            trainer.remove_callback(manifest)
    state = trainer.state
    if callback.received is not None and state.global_step < state.max_steps:
        raise TrainingInterrupted(callback.received, state.global_step,
                                  os.path.join(trainer.args.output_dir, f"checkpoint-{state.global_step}"))
    whole = manifest.whole_run_loss(output.training_loss, state.global_step)
    if manifest.start_step and whole is not None:
        metrics = dict(output.metrics or {})
        metrics["segment_train_loss"] = output.training_loss
        metrics["train_loss"] = whole
        for entry in reversed(state.log_history):
            if "train_loss" in entry:
                entry["segment_train_loss"] = entry["train_loss"]
                entry["train_loss"] = whole
                break
        output = output._replace(training_loss=whole, metrics=metrics)
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


def _saves(args) -> bool:
    """Whether the Trainer's arguments ask for checkpoints at all (``save_strategy`` not "no")."""
    strategy = getattr(args, "save_strategy", "steps")
    return getattr(strategy, "value", strategy) != "no"


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
                control.should_save = _saves(args)  # a run configured without checkpoints keeps none
                # evaluating without evaluation configured (no eval set) would fail in the Trainer
                control.should_evaluate = getattr(args, "eval_strategy", None) != "no"
                self.stopped_at = state.global_step
            return control

    _TIME_BUDGET_CLASS = TimeBudgetCallback
    return TimeBudgetCallback


def trainer_state(run_dir) -> dict:
    """The most advanced ``trainer_state.json`` under ``run_dir`` (its own or a checkpoint's; not one
    in a checkpoint that :func:`last_checkpoint` set aside as corrupt or incomplete)."""
    best: dict = {}
    for path in Path(run_dir).rglob("trainer_state.json"):
        if any(part.startswith(_SET_ASIDE_NAMES) for part in path.relative_to(run_dir).parts):
            continue  # a checkpoint skipped as corrupt or incomplete
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        key = (state.get("global_step", 0), len(state.get("log_history", [])))
        if not best or key > (best.get("global_step", 0), len(best.get("log_history", []))):
            best = state
    return best
