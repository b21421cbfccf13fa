"""The test suite's layout (issue 24, item 4): tests mirror the package and import no private names.

* Every ``tests/**/test_*.py`` lives in a folder that mirrors a part of ``hf_persona``:
  ``tests/<part>/`` for ``hf_persona/<part>/`` or ``hf_persona/<part>.py`` (``tests/models/pal/`` for
  ``hf_persona/models/pal/``, ``tests/cli/`` for ``hf_persona/cli.py``, ...). Only the tests of the
  documentation and of the suite itself stay at the top (``TOP_LEVEL``).
* No test file reaches a private name of hf_persona: ``from hf_persona... import _x``, an import of a
  private module (``hf_persona.commands._x``), or ``name._x`` where ``name`` was imported from
  hf_persona (a module, a class, a function). Dunder names (``__version__``, ``__name__``) are public.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "hf_persona"
#: the test files that test the documentation or the suite itself, not a part of the package
TOP_LEVEL = {"test_readme.py", "test_layout.py"}
TEST_FILES = sorted(TESTS.rglob("test_*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_names(source: str) -> list[str]:
    """``line: what`` for every private hf_persona name the source imports or reads off an import."""
    tree = ast.parse(source)
    imported: set[str] = set()  # local names bound to something imported from hf_persona
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hf_persona":
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
                    imported.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "hf_persona":
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                imported.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("setattr", "delattr") and len(node.args) >= 2 \
                and isinstance(node.args[0], ast.Name) and node.args[0].id in imported \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and _private(node.args[1].value):  # monkeypatch.setattr(module, "_x", ...)
            found.append(f"{node.lineno}: {ast.unparse(node.func)}({node.args[0].id}, {node.args[1].value!r}, ...)")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def test_the_suite_is_collected_from_here():
    assert len(TEST_FILES) > 40 and (TESTS / "conftest.py").is_file()


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_every_test_file_lives_in_the_folder_of_its_package_part(path):
    folder = path.parent.relative_to(TESTS)
    if folder == Path("."):
        assert path.name in TOP_LEVEL, (f"tests/{path.name} belongs in tests/<part>/ for the hf_persona part it "
                                        f"tests (only {sorted(TOP_LEVEL)} stay at the top)")
        return
    part = PACKAGE / folder
    assert part.is_dir() or part.with_suffix(".py").is_file(), \
        f"tests/{folder}/ mirrors no part of the package (no hf_persona/{folder}/ or hf_persona/{folder}.py)"
    assert all((TESTS / p / "__init__.py").is_file() for p in [folder, *folder.parents] if p != Path(".")), \
        f"tests/{folder}/ needs an __init__.py (the suite imports its helpers as tests.<module>)"


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_imports_a_private_name(path):
    found = private_names(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(TESTS.parent)} uses private hf_persona names:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from hf_persona.cli import _hidden, cli", ["1: from hf_persona.cli import _hidden"]),
    ("from hf_persona.commands import _opts", ["1: from hf_persona.commands import _opts"]),
    ("from hf_persona.commands._opts import x", ["1: from hf_persona.commands._opts import ..."]),
    ("import hf_persona._impl", ["1: import hf_persona._impl"]),
    ("from hf_persona.training import ppg as P\nP._pad([])", ["2: P._pad"]),
    ("import hf_persona.training.ppg\nhf_persona.training.ppg._pad", ["2: hf_persona.training.ppg._pad"]),
    ("from hf_persona import backbones\ndef t(monkeypatch):\n    monkeypatch.setattr(backbones, '_conv', 1)",
     ["3: monkeypatch.setattr(backbones, '_conv', ...)"]),
    ("from hf_persona.models import Thing\nThing._cache", ["2: Thing._cache"]),
    # public: dunders, other packages' privates, private attributes of objects the test made itself
    ("import hf_persona\nhf_persona.__version__, hf_persona.plugins.__name__", []),
    ("from hf_persona import __version__", []),
    ("import os\nos._exit(0)", []),
    ("from tests.helpers import _BLOCKER", []),
    ("from hf_persona.models import Thing\nthing = Thing()\nthing._cache", []),
])
def test_the_private_name_check(source, expected):
    assert private_names(source) == expected


@pytest.mark.parametrize("path", sorted((PACKAGE / "default_plugins").glob("*.py")), ids=lambda p: p.name)
def test_default_plugins_are_hook_glue(path):
    """Each built-in plugin module registers what lives elsewhere (models, rewards, evaluation, commands,
    data): at most 80 lines."""
    lines = path.read_text().count("\n")
    assert lines <= 80, f"{path.name} has {lines} lines; move the implementation out of default_plugins/"
