"""Small shared utilities: atomic writes, seeding, logging, deprecated import paths."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def is_main_process() -> bool:
    """Whether this process writes results: rank 0 of a multi-process run (``torchrun``,
    ``accelerate launch``: the initialised process group, else the ``RANK`` variable the launchers
    set), or the only process."""
    import sys

    dist = sys.modules.get("torch.distributed")  # never imports torch by itself
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (when installed)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


#: CLI verbosity, set by ``hf-persona -q`` (-1) / default (0) / ``-v`` (1) through :func:`cli_verbosity`
_VERBOSITY = 0
#: loggers this module configured (handler + level), whose level follows the verbosity
_CONFIGURED: set = set()


def _level_for(verbosity: int) -> int:
    return logging.WARNING if verbosity < 0 else logging.INFO


def get_logger(name: str) -> logging.Logger:
    """A logger that prints ``LEVEL name: message`` on stderr when nothing else configured logging
    (INFO, WARNING under ``hf-persona -q``, ERROR on a process other than rank 0 of a multi-process run)."""
    logger = logging.getLogger(name)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(_process_level(_VERBOSITY))
        _CONFIGURED.add(name)
    return logger


def _process_level(verbosity: int) -> int:
    """The level of this library's loggers: :func:`_level_for` on rank 0 (or with ``-v``); errors only
    on the other processes of a multi-process run, which would repeat what rank 0 says."""
    return _level_for(verbosity) if verbosity > 0 or is_main_process() else logging.ERROR


def verbosity() -> int:
    """The CLI verbosity: -1 (``-q``), 0 (default) or 1 (``-v``); 0 outside the CLI."""
    return _VERBOSITY


class cli_verbosity:  # noqa: N801 - used as a context manager, like contextlib's
    """Set the CLI verbosity (-1 quiet, 0 default, 1 verbose) for the ``with`` block: the level of
    this library's loggers (WARNING when quiet, else INFO) and :func:`verbosity`. Imports nothing
    heavy, so ``hf-persona --help`` stays fast; the framework noise is filtered by
    :func:`expected_noise_filtered` around the work itself."""

    def __init__(self, level: int):
        self.level = max(-1, min(1, int(level)))

    def __enter__(self):
        global _VERBOSITY
        self._previous = _VERBOSITY
        _VERBOSITY = self.level
        self._levels = {name: logging.getLogger(name).level for name in _CONFIGURED}
        level = _process_level(self.level)
        for name in _CONFIGURED:
            logging.getLogger(name).setLevel(level)
        return self

    def __exit__(self, *exc):
        global _VERBOSITY
        _VERBOSITY = self._previous
        for name in list(_CONFIGURED):
            logging.getLogger(name).setLevel(self._levels.get(name, _process_level(self._previous)))
        return False


# ---------------------------------------------------------------------------------------------
# Framework noise a user cannot act on (issue 27 item 3). Hidden by the CLI unless -v; nothing
# else is: every other warning, log record and progress bar passes through.

#: ``warnings`` messages (regular expressions matched at the start) hidden by default
NOISE_WARNINGS = (
    # torch's DataLoader on a machine without a GPU: the Trainer asks for pinned memory anyway
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
    # transformers' EncoderDecoderModel on every training step of a BERT2BERT model: a note about
    # models trained before transformers 4.12 (the library passes labels the current way)
    (FutureWarning, r"Version v4\.12\.0 introduces a better way to train encoder-decoder models"),
    # transformers 5.2x asks its own code (PEFT's adapter loading, the Trainer) to rename a property
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # ... and TRL's configs, which set the old `gradient_checkpointing` argument themselves
    (FutureWarning, r"`gradient_checkpointing` is deprecated"),
)

#: progress bars (their ``desc``) of transformers hidden by default: loading and writing weights
NOISE_BARS = ("Loading weights", "Writing model shards")

#: tied output weights: absent from a checkpoint by design (they are the input embeddings)
_TIED_KEY = re.compile(r"(^|\.)(lm_head\.weight|cls\.predictions\.decoder\.(weight|bias)|embed_out\.weight)$")
#: an output head missing from an encoder-only checkpoint (warm start of a decoder / LM head)
_HEAD_KEY = re.compile(r"(^|\.)(cls\.predictions\.|lm_head\.)")
_REPORT_ROW = re.compile(r"^\s*(\S+)\s*\|\s*([A-Z]+)\s*\|", re.M)


def is_expected_noise(message: str, warm_start: bool = False) -> bool:
    """Whether a transformers log ``message`` is one of the expected reports hidden by default.

    Hidden: (1) the ``LOAD REPORT`` table when it lists only MISSING / UNEXPECTED keys and the load
    is a warm start (a new head or cross-attention on a pretrained encoder; outside a warm start
    only when every missing key is a tied output weight and every unexpected key a pooler);
    (2) "This checkpoint seem corrupted ... tie X to Y" for an output head absent from an encoder
    checkpoint (warm start only); (3) "There were missing keys in the checkpoint model loaded"
    when every key is a tied output weight (``lm_head.weight``, ``cls.predictions.decoder.*``);
    (4) "The new embeddings / lm_head weights will be initialized from a multivariate normal"
    (new special tokens); (5) "mtime may not be reliable on this filesystem". Anything else
    (mismatched sizes, conversion errors, other missing keys...) shows.
    """
    text = str(message)
    if "LOAD REPORT" in text:
        rows = _REPORT_ROW.findall(text)
        statuses = {status for _, status in rows}
        if not rows or not statuses <= {"MISSING", "UNEXPECTED"}:
            return False
        if warm_start:
            return True
        return all(_TIED_KEY.search(key) if status == "MISSING" else key.startswith("pooler.")
                   for key, status in rows)
    if text.startswith("This checkpoint seem corrupted. The tied weights mapping"):
        pair = re.search(r"to tie (\S+) to (\S+),", text)
        return bool(warm_start and pair and all(_HEAD_KEY.search(k) for k in pair.groups()))
    if text.startswith("There were missing keys in the checkpoint model loaded:"):
        keys = re.findall(r"'([^']+)'", text)
        return bool(keys) and all(_TIED_KEY.search(k) for k in keys)
    if text.startswith(("The new embeddings will be initialized from a multivariate normal",
                        "The new lm_head weights will be initialized from a multivariate normal")):
        return True
    return text.startswith("mtime may not be reliable on this filesystem")


class _NoiseFilter(logging.Filter):
    def __init__(self, warm_start: bool):
        super().__init__()
        self.warm_start = warm_start
        self.hidden = 0

    def filter(self, record):
        try:
            noise = is_expected_noise(record.getMessage(), self.warm_start)
        except Exception:  # a record that does not format: let it through as it is
            return True
        self.hidden += noise
        return not noise


class _ErrorsOnly(logging.Filter):
    """The framework's records on a process other than rank 0: only errors (rank 0 says the rest)."""

    def filter(self, record):
        return record.levelno >= logging.ERROR


class expected_noise_filtered:  # noqa: N801 - a context manager
    """Hide the framework noise listed in :data:`NOISE_WARNINGS`, :data:`NOISE_BARS` and
    :func:`is_expected_noise` inside the ``with`` block, unless the CLI runs with ``-v``.

    Also hides the ``datasets`` progress bars (map / save of internal caches) and replaces the
    Trainer's per-step console output: no dict per logging step; an evaluation prints one line
    ``step N/M: eval_loss X`` (none under ``-q``); the training bar shows on a terminal only.
    ``warm_start``: the block loads pretrained encoders into new heads (training commands), so
    load reports of missing / unexpected keys are expected. On a process other than rank 0 of a
    multi-process run only the framework's errors pass. Imports transformers on entry.
    """

    def __init__(self, warm_start: bool = False):
        self.warm_start = warm_start
        self._undo = []

    def __enter__(self):
        if _VERBOSITY > 0:
            return self
        import warnings

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        self._undo.append(lambda: self._warnings.__exit__(None, None, None))
        for category, pattern in NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        if not is_main_process():  # the other processes of a multi-process run would repeat rank 0's warnings
            warnings.simplefilter("ignore")
        try:
            self._quiet_transformers()
        except ImportError:  # transformers not installed: nothing of it to hide
            pass
        try:
            import importlib

            ds_tqdm = importlib.import_module("datasets.utils.tqdm")  # the module (datasets.utils.tqdm is a class)

            if not ds_tqdm.are_progress_bars_disabled() and ds_tqdm.HF_DATASETS_DISABLE_PROGRESS_BARS is None:
                ds_tqdm.disable_progress_bars()
                self._undo.append(ds_tqdm.enable_progress_bars)
        except (ImportError, AttributeError):
            pass
        return self

    def _quiet_transformers(self):
        import transformers.trainer as trainer_mod
        from transformers.utils import logging as tf_logging

        noise = _NoiseFilter(self.warm_start) if is_main_process() else _ErrorsOnly()
        root = tf_logging._get_library_root_logger()
        for handler in list(root.handlers) + list(logging.getLogger().handlers):
            handler.addFilter(noise)
            self._undo.append(lambda h=handler: h.removeFilter(noise))
        previous_hook = None

        def hook(factory, args, kwargs):
            if kwargs.get("desc") in NOISE_BARS:
                factory = tf_logging.EmptyTqdm
            if previous_hook is not None:
                return previous_hook(factory, args, kwargs)
            return factory(*args, **kwargs)

        previous_hook = tf_logging.set_tqdm_hook(hook)
        self._undo.append(lambda: tf_logging.set_tqdm_hook(previous_hook))
        progress_cls, printer_cls = _quiet_trainer_callbacks()
        saved = (trainer_mod.DEFAULT_PROGRESS_CALLBACK, trainer_mod.PrinterCallback)
        trainer_mod.DEFAULT_PROGRESS_CALLBACK, trainer_mod.PrinterCallback = progress_cls, printer_cls

        def restore():
            trainer_mod.DEFAULT_PROGRESS_CALLBACK, trainer_mod.PrinterCallback = saved

        self._undo.append(restore)

    def __exit__(self, *exc):
        while self._undo:
            self._undo.pop()()
        return False


def _eval_line(callback, state, logs) -> str | None:
    """``step N/M: eval_loss X`` once per step with an evaluation (None when quiet or nothing new)."""
    if "eval_loss" not in logs or _VERBOSITY < 0 or getattr(callback, "_last_eval_step", None) == state.global_step:
        return None
    callback._last_eval_step = state.global_step
    total = f"/{state.max_steps}" if state.max_steps and state.max_steps > 0 else ""
    return f"step {state.global_step}{total}: eval_loss {logs['eval_loss']:.4g}"


def _quiet_trainer_callbacks():
    """Trainer console callbacks for the default and quiet modes (see :class:`expected_noise_filtered`)."""
    import sys

    from transformers.trainer_callback import ProgressCallback, TrainerCallback

    class QuietProgressCallback(ProgressCallback):
        """The training bar on a terminal only, no evaluation bars, one line per evaluation."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.current_step = 0
            if _VERBOSITY >= 0 and sys.stderr.isatty():
                super().on_train_begin(args, state, control, **kwargs)

        def on_step_end(self, args, state, control, **kwargs):
            if self.training_bar is not None:
                super().on_step_end(args, state, control, **kwargs)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            pass

        def on_log(self, args, state, control, logs=None, **kwargs):
            line = state.is_world_process_zero and _eval_line(self, state, logs or {})
            if line:
                if self.training_bar is not None:
                    self.training_bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr, flush=True)

        def on_train_end(self, args, state, control, **kwargs):
            if self.training_bar is not None:
                super().on_train_end(args, state, control, **kwargs)

    class QuietPrinterCallback(TrainerCallback):
        """In place of the Trainer's PrinterCallback: one line per evaluation, no dict per log step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            line = state.is_world_process_zero and _eval_line(self, state, logs or {})
            if line:
                print(line, file=sys.stderr, flush=True)

    return QuietProgressCallback, QuietPrinterCallback


def machine_description() -> str:
    """What a benchmark ran on, measured rather than typed in: CPU count, the 1-minute load
    average at the moment of the call (other jobs inflate wall times), torch threads and the GPU."""
    import torch

    parts = [f"cpu: {os.cpu_count()} cores"]
    try:
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    except OSError:  # not available on this platform
        pass
    parts.append(f"torch threads {torch.get_num_threads()}")
    parts.append(f"gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "gpu: none")
    return ", ".join(parts)


def command_line(script: str, argv=None) -> str:
    """The shell line that reproduces a benchmark run: ``OMP_NUM_THREADS`` (when set), ``python``,
    the script and its arguments (``argv``, default ``sys.argv[1:]``), quoted for the shell."""
    import shlex
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = [f"OMP_NUM_THREADS={threads}"] if threads else []
    return shlex.join([*prefix, "python", script, *args])


def parse_floats(text: str) -> list[float]:
    """``"0,0,2"`` -> ``[0.0, 0.0, 2.0]``; a ValueError naming the expected form otherwise."""
    try:
        return [float(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers such as 0,0,2, got {text!r}") from None


def parse_named_folders(specs, several: bool = False) -> list[tuple[str, list[str]]]:
    """``["pal=runs/a", "base=runs/b,runs/c"]`` -> ``[("pal", ["runs/a"]), ("base", ["runs/b", "runs/c"])]``.

    ``several=False`` allows one folder per name. Raises ValueError naming the expected form, and for a
    name given twice.
    """
    form = "NAME=FOLDER or NAME=FOLDER1,FOLDER2,..." if several else "NAME=FOLDER"
    out, seen = [], set()
    for spec in specs:
        name, sep, rest = str(spec).partition("=")
        folders = [f for f in rest.split(",") if f]
        if not sep or not name or not folders or (len(folders) > 1 and not several):
            raise ValueError(f"expected {form}, got {spec!r}")
        if name in seen:
            raise ValueError(f"the name {name!r} is given twice; give each model its own name")
        seen.add(name)
        out.append((name, folders))
    return out


def moved_names(module: str, moved: dict):
    """A module ``__getattr__`` that keeps names importable from ``module`` after they moved.

    ``moved`` maps each old name to the module that now holds it under the same name
    (``"hf_persona.rewards.p2bot"``) or to ``"module:new_name"`` when it was renamed too. Reading one
    warns with a ``DeprecationWarning`` naming the new home and returns the object from there; any
    other name raises ``AttributeError`` as usual. Use: ``__getattr__ = moved_names(__name__, {...})``.
    """
    import importlib
    import warnings

    def __getattr__(name):
        if name in moved:
            home, _, new_name = moved[name].partition(":")
            new_name = new_name or name
            warnings.warn(f"{module}.{name} moved to {home}.{new_name}", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(home), new_name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
