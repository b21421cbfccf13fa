"""Small shared utilities: atomic writes, seeding, logging, deprecated import paths."""

from __future__ import annotations

import json
import logging
import os
import random
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


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


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

    ``moved`` maps each old name to the module that now holds it (under the same name). Reading one
    warns with a ``DeprecationWarning`` naming the new home and returns the object from there; any
    other name raises ``AttributeError`` as usual. Use: ``__getattr__ = moved_names(__name__, {...})``.
    """
    import importlib
    import warnings

    def __getattr__(name):
        if name in moved:
            warnings.warn(f"{module}.{name} moved to {moved[name]}.{name}", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(moved[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
