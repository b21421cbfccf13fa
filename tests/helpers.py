"""Test helpers shared by the model tests and the plugin tests."""

import os
import subprocess
import sys
import tempfile
import textwrap

_BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class _BlockHFPersona(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_persona" or name.startswith("hf_persona.") or name.startswith("hf_persona_"):
                raise ImportError(f"{name} is blocked: this process simulates a user without hf_persona")
            return None
    sys.meta_path.insert(0, _BlockHFPersona())
    try:
        import hf_persona  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_persona is importable; the clean-environment check is invalid")
    """
)


def run_without_hf_persona(code: str, timeout: int = 300) -> str:
    """Run ``code`` in a fresh interpreter where ``import hf_persona`` fails; return its stdout.

    The process runs from an empty temporary folder with its own HF_HOME (so the remote-code
    module cache starts empty) and the Hub offline. A non-zero exit raises with the stderr tail.
    """
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_PERSONA_LOAD_PLUGINS")}
        env.update({"HF_HOME": os.path.join(tmp, "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"})
        proc = subprocess.run(
            [sys.executable, "-c", _BLOCKER + "\n" + textwrap.dedent(code)],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout,
        )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def assert_names_moved(old_module: str, moved: dict) -> None:
    """Check the deprecated import path of names that moved out of ``old_module``.

    ``moved`` maps each old name to its new module. Every such name still reads from ``old_module``,
    with a ``DeprecationWarning`` naming the new home, and is the very object found there; a name
    that never lived there raises ``AttributeError``.
    """
    import importlib
    import re

    import pytest

    old = importlib.import_module(old_module)
    for name, home in moved.items():
        with pytest.warns(DeprecationWarning, match=re.escape(f"moved to {home}.{name}")):
            assert getattr(old, name) is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError):
        old.no_such_name
