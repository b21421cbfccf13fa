"""The plugin manager: loads built-in and installed plugins and answers lookups by name.

Built-in features live in :mod:`hf_persona.default_plugins`, one module per feature, and are
registered exactly like third-party plugins. Third-party distributions (``hf-persona-foo``,
module ``hf_persona_foo``) expose a module through the ``hf_persona`` entry-point group.

``HF_PERSONA_LOAD_PLUGINS`` restricts which entry points load: a comma-separated list of
distribution or entry-point names; set but empty, no entry point loads. Tests switch entry-point
loading off this way (or call ``load_plugins(entry_points=False)``).

A plugin whose import or hook raises is reported by name (distribution and entry point) in
:func:`plugin_errors` and a logged warning; the other plugins keep working.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points as _entry_points

import pluggy

from . import hookspecs
from .errors import UnknownNameError

GROUP = "hf_persona"
ENV_VAR = "HF_PERSONA_LOAD_PLUGINS"
KINDS = ("models", "rewards", "logits_processors", "datasets")

logger = logging.getLogger(__name__)

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_lock = threading.RLock()
_loaded = False
_errors: list["PluginError"] = []
_registries: dict[str, dict] = {}
_sources: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class PluginError:
    """A plugin that failed: where it came from, at which stage, and the error message."""

    plugin: str
    stage: str
    message: str

    def __str__(self):
        return f"plugin {self.plugin} failed during {self.stage}: {self.message}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_class: type
    model_class: type
    auto_class: str = "AutoModel"


def _record(plugin: str, stage: str, exc: BaseException) -> None:
    err = PluginError(plugin, stage, f"{type(exc).__name__}: {exc}")
    _errors.append(err)
    logger.warning("%s", err)


def _wanted(allow: set[str] | None, dist_name: str | None, ep_name: str) -> bool:
    if allow is None:
        return True
    names = {ep_name.lower()}
    if dist_name:
        names |= {dist_name.lower(), dist_name.lower().replace("_", "-")}
    return bool(names & allow)


def load_plugins(entry_points: bool | None = None) -> None:
    """Register the built-in plugins and (unless switched off) the installed entry points.

    Runs once per process; :func:`reset_plugins` undoes it (for tests).
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        from . import default_plugins

        for info in sorted(pkgutil.iter_modules(default_plugins.__path__), key=lambda m: m.name):
            modname = f"{default_plugins.__name__}.{info.name}"
            try:
                module = importlib.import_module(modname)
                pm.register(module, name=f"hf_persona.default_plugins.{info.name}")
            except Exception as exc:  # a broken built-in must not take the others down
                _record(modname, "import", exc)

        env = os.environ.get(ENV_VAR)
        if entry_points is False:
            return
        allow = None if env is None else {n.strip().lower() for n in env.split(",") if n.strip()}
        if allow is not None and not allow:
            return
        for ep in _entry_points(group=GROUP):
            dist_name = ep.dist.name if ep.dist is not None else None
            if not _wanted(allow, dist_name, ep.name):
                continue
            label = f"{dist_name or '?'}:{ep.name}"
            try:
                module = ep.load()
                if pm.is_registered(module):
                    continue
                pm.register(module, name=label)
            except Exception as exc:
                _record(label, "import", exc)


def reset_plugins() -> None:
    """Unregister every plugin and forget cached registries (used by tests)."""
    global _loaded
    with _lock:
        for name, plugin in list(pm.list_name_plugin()):
            pm.unregister(plugin=plugin, name=name)
        _loaded = False
        _errors.clear()
        _registries.clear()
        _sources.clear()


def _collect(kind: str) -> dict:
    """Call ``register_<kind>`` on every plugin, each isolated from the others' failures."""
    load_plugins()
    with _lock:
        if kind in _registries:
            return _registries[kind]
        registry: dict = {}
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in reversed(hook.get_hookimpls()):  # registration order
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(name, *args, _plugin=plugin_name, **kwargs):
                if not isinstance(name, str) or not name:
                    raise TypeError(f"{kind} names must be non-empty strings, got {name!r}")
                if name in registry:
                    logger.warning("%s %r from %s replaces the one from %s", kind, name, _plugin,
                                   _sources.get((kind, name)))
                if kind == "models":
                    registry[name] = ModelSpec(name, *args, **kwargs)
                else:
                    if len(args) != 1 or kwargs or not callable(args[0]):
                        raise TypeError(f"register({name!r}, factory) takes one callable for {kind}")
                    registry[name] = args[0]
                _sources[(kind, name)] = _plugin

            staged = dict(registry)
            try:
                impl.function(register=register)
            except Exception as exc:
                registry.clear()
                registry.update(staged)  # drop partial registrations of the failed plugin
                _record(plugin_name, f"register_{kind}", exc)
        if kind == "models":
            for spec in registry.values():
                try:
                    _register_auto(spec)
                except Exception as exc:
                    _record(_sources[(kind, spec.name)], "auto-class registration", exc)
        _registries[kind] = registry
        return registry


def _register_auto(spec: ModelSpec) -> None:
    import transformers

    transformers.AutoConfig.register(spec.config_class.model_type, spec.config_class, exist_ok=True)
    auto = getattr(transformers, spec.auto_class, None)
    if auto is None:
        raise ValueError(f"model {spec.name!r}: transformers has no auto class {spec.auto_class!r}")
    auto.register(spec.config_class, spec.model_class, exist_ok=True)


def register_commands(cli) -> None:
    """Let every plugin add its CLI commands to ``cli``."""
    load_plugins()
    for impl in reversed(pm.hook.register_commands.get_hookimpls()):
        try:
            impl.function(cli=cli)
        except Exception as exc:
            _record(pm.get_name(impl.plugin) or repr(impl.plugin), "register_commands", exc)


def _lookup(kind: str, singular: str, name: str):
    registry = _collect(kind)
    if name not in registry:
        raise UnknownNameError(singular, name, registry)
    return registry[name]


def get_model_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` called ``name``."""
    return _lookup("models", "model", name)


def get_reward(name: str, **options):
    """Build the reward function registered as ``name`` (``factory(**options)``)."""
    return _lookup("rewards", "reward", name)(**options)


def get_logits_processor(name: str, **options):
    """Build the logits processor registered as ``name``."""
    return _lookup("logits_processors", "logits processor", name)(**options)


def get_dataset(name: str, path=None, **options):
    """Load the dataset registered as ``name`` (``loader(path, **options)``)."""
    return _lookup("datasets", "dataset", name)(path=path, **options)


def list_plugins() -> dict[str, list[str]]:
    """Names registered for each kind, plus the plugin modules/distributions loaded."""
    out = {kind: sorted(_collect(kind)) for kind in KINDS}
    out["plugins"] = sorted(name for name, _ in pm.list_name_plugin())
    return out


def plugin_errors() -> list[PluginError]:
    """Failures seen so far while loading plugins or calling their hooks."""
    return list(_errors)


def register_models_with_transformers() -> None:
    """Register every plugin model with the transformers Auto classes in this process."""
    _collect("models")
