"""Issue 28 item 5: faulty plugins are caught, named and listed, and never end a command.

One faulty plugin per case: ``sys.exit()`` at import (entry point and model module), a factory that
raises or exits, bogus registrations (wrong types, missing modules and classes), and the errors in
``hf-persona plugins --json`` (in-process and through a real entry point in a fresh interpreter).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import hf_persona
from hf_persona import hookimpl, plugins
from hf_persona.errors import HFPersonaError
from hf_persona.plugins import PluginCallError


@pytest.fixture
def fresh_plugins(monkeypatch):
    plugins.reset_plugins()
    yield monkeypatch
    plugins.reset_plugins()


def _errors():
    return [e.to_dict() for e in hf_persona.plugin_errors()]


class _Dist:
    def __init__(self, name):
        self.name = name


class _EntryPoint:
    def __init__(self, dist, name, load):
        self.name, self.dist, self._load = name, _Dist(dist), load

    def load(self):
        return self._load()


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules written by the test; they are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("hfp_fault_"):
            del sys.modules[name]


# ---------------------------------------------------------------- sys.exit() and BaseException at import
def test_sys_exit_at_import_is_recorded_with_the_plugin_name(fresh_plugins, module_dir):
    (module_dir / "hfp_fault_exit.py").write_text("import sys\nsys.exit('bye from the plugin')\n")
    (module_dir / "hfp_fault_base.py").write_text("class Odd(BaseException):\n    pass\nraise Odd('odd')\n")

    import importlib

    eps = [_EntryPoint("hf-persona-exit", "exit", lambda: importlib.import_module("hfp_fault_exit")),
           _EntryPoint("hf-persona-base", "base", lambda: importlib.import_module("hfp_fault_base"))]
    fresh_plugins.setattr(plugins, "installed_entry_points", lambda: eps)
    fresh_plugins.delenv("HF_PERSONA_LOAD_PLUGINS")
    listing = hf_persona.list_plugins()  # before: SystemExit ended the process here, silently
    assert "personachat" in listing["datasets"]  # the other plugins keep working
    assert not any(p.startswith(("hf-persona-exit", "hf-persona-base")) for p in listing["plugins"])
    assert {"plugin": "hf-persona-exit:exit", "stage": "import",
            "message": "SystemExit: the plugin called sys.exit('bye from the plugin')"} in _errors()
    assert {"plugin": "hf-persona-base:base", "stage": "import", "message": "Odd: odd"} in _errors()


def test_keyboard_interrupt_at_import_is_not_swallowed(fresh_plugins):
    def interrupted():
        raise KeyboardInterrupt

    fresh_plugins.setattr(plugins, "installed_entry_points", lambda: [_EntryPoint("hf-persona-ki", "ki", interrupted)])
    fresh_plugins.delenv("HF_PERSONA_LOAD_PLUGINS")
    with pytest.raises(KeyboardInterrupt):
        hf_persona.list_plugins()


def test_sys_exit_in_a_hook_is_recorded(fresh_plugins):
    class Exits:
        @hookimpl
        def register_rewards(self, register):
            register("never_listed", lambda **kw: None)
            sys.exit(3)

        @hookimpl
        def register_commands(self, cli):
            raise SystemExit(4)

    plugins.load_plugins()
    plugins.pm.register(Exits(), name="exit-dist:hooks")
    assert "never_listed" not in hf_persona.list_plugins()["rewards"]
    import click

    plugins.register_commands(click.Group())
    assert {"plugin": "exit-dist:hooks", "stage": "register_rewards",
            "message": "SystemExit: the plugin called sys.exit(3)"} in _errors()
    assert {"plugin": "exit-dist:hooks", "stage": "register_commands",
            "message": "SystemExit: the plugin called sys.exit(4)"} in _errors()


# ---------------------------------------------------------------- factories that raise
def test_a_factory_that_raises_names_the_plugin(fresh_plugins, monkeypatch):
    def loader(path=None, **options):
        raise RuntimeError("disk on fire")

    def exiting_reward(**options):
        sys.exit(5)

    class Broken:
        @hookimpl
        def register_datasets(self, register):
            register("broken_ds", loader)

        @hookimpl
        def register_rewards(self, register):
            register("exiting_reward", exiting_reward)

        @hookimpl
        def register_logits_processors(self, register):
            register("picky", lambda **options: (_ for _ in ()).throw(HFPersonaError("needs alpha=")))

    plugins.load_plugins()
    plugins.pm.register(Broken(), name="hf-persona-broken:broken")
    with pytest.raises(PluginCallError) as info:  # before: a bare RuntimeError("disk on fire")
        hf_persona.get_dataset("broken_ds", path="x.txt")
    assert str(info.value) == ("dataset 'broken_ds' from plugin hf-persona-broken:broken failed: "
                               "RuntimeError: disk on fire")
    assert isinstance(info.value, HFPersonaError) and isinstance(info.value.__cause__, RuntimeError)
    assert (info.value.plugin, info.value.kind, info.value.name) == ("hf-persona-broken:broken", "dataset", "broken_ds")
    with pytest.raises(PluginCallError, match=r"reward 'exiting_reward' from plugin hf-persona-broken:broken failed: "
                                              r"SystemExit: the plugin called sys.exit\(5\)"):
        hf_persona.get_reward("exiting_reward")
    with pytest.raises(PluginCallError, match="logits processor 'picky' from plugin .* HFPersonaError: needs alpha="):
        hf_persona.get_logits_processor("picky")
    # the built-in loaders keep their own, documented errors
    monkeypatch.delenv("HF_PERSONA_DATA", raising=False)
    with pytest.raises(HFPersonaError, match="pesconv has no embedded sample") as builtin:
        hf_persona.get_dataset("pesconv")
    assert not isinstance(builtin.value, PluginCallError)


# ---------------------------------------------------------------- bogus registrations
def test_bogus_model_registrations_are_rejected_recorded_and_not_listed(fresh_plugins, module_dir):
    from transformers import PretrainedConfig, PreTrainedModel

    class GoodConfig(PretrainedConfig):
        model_type = "hfp_fault_good"

    class GoodModel(PreTrainedModel):
        config_class = GoodConfig

    class NoTypeConfig(PretrainedConfig):
        pass

    class OtherConfig(PretrainedConfig):
        model_type = "hfp_fault_other"

    cobert = "hf_persona.models.cobert"

    class Bogus:
        @hookimpl
        def register_models(self, register):
            register("ok", GoodConfig, GoodModel)
            register("ok_by_reference", f"{cobert}:CoBERTConfig", f"{cobert}:CoBERTForResponseSelection")
            register("none_classes", None, None)
            register("wrong_types", 42, "not a reference")
            register("plain_classes", dict, list)
            register("swapped", GoodModel, GoodConfig)
            register("no_model_type", NoTypeConfig, GoodModel)
            register("mismatched", OtherConfig, GoodModel)
            register("bad_auto_class", GoodConfig, GoodModel, auto_class=5)
            register("unknown_auto_class", GoodConfig, GoodModel, auto_class="AutoNoSuchThing")
            register("missing_module", "hfp_fault_nowhere.models:Config", "hfp_fault_nowhere.models:Model")
            register("missing_class", f"{cobert}:NoSuchConfig", f"{cobert}:CoBERTForResponseSelection")
            register("too_few_arguments", GoodConfig)
            register("", GoodConfig, GoodModel)

        @hookimpl
        def register_rewards(self, register):
            register("not_callable", "a string")
            register("fine_reward", lambda **kw: (lambda prompts, completions, **c: [0.0] * len(completions)))

    plugins.load_plugins()
    plugins.pm.register(Bogus(), name="bogus-dist:bogus")
    listing = hf_persona.list_plugins()
    assert {"ok", "ok_by_reference", "cobert", "receiver"} <= set(listing["models"])
    assert set(listing["models"]) & {"none_classes", "wrong_types", "plain_classes", "swapped", "no_model_type",
                                     "mismatched", "bad_auto_class", "unknown_auto_class", "missing_module",
                                     "missing_class", "too_few_arguments", ""} == set()
    assert "fine_reward" in listing["rewards"] and "not_callable" not in listing["rewards"]
    messages = {e["message"] for e in _errors() if e["plugin"] == "bogus-dist:bogus"}
    expected = [
        "model 'none_classes': config_class must be a class or a reference 'package.module:ClassName', got NoneType None",
        "model 'wrong_types': model_class must be a class or a reference 'package.module:ClassName', got "
        "'not a reference'",
        "model 'plain_classes': config_class must be a transformers PretrainedConfig subclass, got builtins:dict",
        "model 'swapped': config_class must be a transformers PretrainedConfig subclass",
        "model 'no_model_type': config_class ",  # ... needs a unique non-empty model_type
        "model 'mismatched': model_class ",  # ... has config_class GoodConfig, not OtherConfig
        "model 'bad_auto_class': auto_class must name a transformers auto class such as 'AutoModel', got 5",
        "model 'unknown_auto_class': transformers has no auto class 'AutoNoSuchThing'",
        "model 'missing_module': config_class 'hfp_fault_nowhere.models:Config': module 'hfp_fault_nowhere.models' "
        "cannot be found (ModuleNotFoundError: No module named 'hfp_fault_nowhere')",
        "model 'missing_class': config_class 'hf_persona.models.cobert:NoSuchConfig': ",
        "model 'too_few_arguments': register(name, config_class, model_class, auto_class='AutoModel'): ",
        "model names must be non-empty strings, got ''",
        "register('not_callable', factory) takes one callable for rewards, got 'a string'",
    ]
    for text in expected:
        assert any(text in m for m in messages), (text, sorted(messages))
    assert all(e["stage"] in ("register_models", "register_rewards") for e in _errors()
               if e["plugin"] == "bogus-dist:bogus")
    assert len(messages) == len(expected)  # one record per bogus registration, none for the good ones
    assert hf_persona.get_model_spec("ok").model_class is GoodModel


def test_missing_class_in_an_unimported_module_is_found_without_importing_it(fresh_plugins, module_dir):
    pkg = module_dir / "hfp_fault_pkg"
    pkg.mkdir()
    marker = module_dir / "imported"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom .config import Config\n")
    (pkg / "config.py").write_text("")

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register("no_model_class", "hfp_fault_pkg:Config", "hfp_fault_pkg:Model")

    plugins.load_plugins()
    plugins.pm.register(Plugin(), name="pkg-dist:pkg")
    assert "no_model_class" not in hf_persona.list_plugins()["models"]
    assert not marker.exists()  # the module was read, never imported
    assert {"plugin": "pkg-dist:pkg", "stage": "register_models",
            "message": "ValueError: model 'no_model_class': model_class 'hfp_fault_pkg:Model': module hfp_fault_pkg "
                       "defines no 'Model'"} in _errors()
    # what the source can and cannot tell
    import importlib.util

    spec = importlib.util.find_spec("hfp_fault_pkg")
    assert plugins.source_defines(spec, "Config") is True and plugins.source_defines(spec, "Model") is False
    assert plugins.source_defines(spec, "config") is None  # a submodule: an attribute once imported
    (module_dir / "hfp_fault_lazy.py").write_text("def __getattr__(name):\n    raise AttributeError(name)\n")
    assert plugins.source_defines(importlib.util.find_spec("hfp_fault_lazy"), "Model") is None
    assert not marker.exists()


def test_a_model_that_fails_when_imported_is_dropped_and_named(fresh_plugins, module_dir):
    (module_dir / "hfp_fault_exit_model.py").write_text(textwrap.dedent("""
        import sys
        from transformers import PretrainedConfig, PreTrainedModel
        sys.exit(7)

        class Config(PretrainedConfig):
            model_type = "hfp_fault_exit_model"

        class Model(PreTrainedModel):
            config_class = Config
    """))
    (module_dir / "hfp_fault_lazy2.py").write_text("def __getattr__(name):\n    raise AttributeError(name)\n")

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register("exits", "hfp_fault_exit_model:Config", "hfp_fault_exit_model:Model")
            register("lazy", "hfp_fault_lazy2:Config", "hfp_fault_lazy2:Model")

    plugins.load_plugins()
    plugins.pm.register(Plugin(), name="late-dist:late")
    # transformers is imported in this process, so listing registers the models with the Auto classes,
    # which imports their code: both fail there, are recorded and dropped
    assert {"exits", "lazy"}.isdisjoint(hf_persona.list_plugins()["models"])
    assert {"plugin": "late-dist:late", "stage": "import of model 'exits'",
            "message": "SystemExit: the plugin called sys.exit(7)"} in _errors()
    with pytest.raises(PluginCallError, match=r"model 'exits' from plugin late-dist:late failed: "
                                              r"SystemExit: the plugin called sys.exit\(7\)"):
        hf_persona.get_model_spec("exits")
    with pytest.raises(PluginCallError, match="model 'lazy' from plugin late-dist:late failed: AttributeError: Config"):
        hf_persona.get_model_spec("lazy")
    assert hf_persona.get_model_spec("receiver").name == "receiver"  # the others still work


# ---------------------------------------------------------------- plugins --json
def test_plugins_json_lists_the_errors(fresh_plugins):
    from click.testing import CliRunner

    from hf_persona.cli import cli

    class Broken:
        @hookimpl
        def register_datasets(self, register):
            register("half", lambda path=None: [])
            raise RuntimeError("boom")

    plugins.load_plugins()
    plugins.pm.register(Broken(), name="broken-dist:broken")
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert "half" not in listing["datasets"] and "personachat" in listing["datasets"]
    assert listing["errors"] == [{"plugin": "broken-dist:broken", "stage": "register_datasets",
                                  "message": "RuntimeError: boom"}]


def test_entry_points_that_exit_or_register_bogus_models_in_a_fresh_cli(tmp_path):
    """As a user meets it: installed distributions (dist-info on the path), ``hf-persona plugins --json``.
    Before: the sys.exit() plugin ended the command with status 0 and no output."""
    (tmp_path / "hfp_fault_ep_exit.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "hfp_fault_ep_bogus.py").write_text(textwrap.dedent("""
        from hf_persona import hookimpl

        @hookimpl
        def register_models(register):
            register("bogus", "hfp_fault_ep_bogus:NoConfig", 42)

        @hookimpl
        def register_datasets(register):
            def load(path=None, **options):
                raise OSError("no such shard")
            register("bogus_ds", load)
    """))
    for dist, module in (("hfp-fault-ep-exit", "hfp_fault_ep_exit"), ("hfp-fault-ep-bogus", "hfp_fault_ep_bogus")):
        info = tmp_path / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[hf_persona]\nmain = {module}\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), HF_PERSONA_LOAD_PLUGINS="hfp-fault-ep-exit,hfp-fault-ep-bogus")
    proc = subprocess.run([sys.executable, "-m", "hf_persona.cli", "plugins", "--json"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert "bogus" not in listing["models"] and "receiver" in listing["models"]
    assert "bogus_ds" in listing["datasets"]
    errors = {(e["plugin"], e["stage"]): e["message"] for e in listing["errors"]}
    assert errors[("hfp-fault-ep-exit:main", "import")] == "SystemExit: the plugin called sys.exit(0)"
    assert errors[("hfp-fault-ep-bogus:main", "register_models")] == (
        "ValueError: model 'bogus': config_class 'hfp_fault_ep_bogus:NoConfig': hfp_fault_ep_bogus has no 'NoConfig'")
    assert len(errors) == 2

    code = "import hf_persona\ntry:\n    hf_persona.get_dataset('bogus_ds')\nexcept Exception as e:\n    print(e)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip() == ("dataset 'bogus_ds' from plugin hfp-fault-ep-bogus:main failed: "
                                   "OSError: no such shard"), proc.stderr
