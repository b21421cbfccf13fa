"""The plugin manager: loads built-in and installed plugins and answers lookups by name.

Built-in features live in :mod:`hf_persona.default_plugins`, one module per feature, and are
registered exactly like third-party plugins. Third-party distributions (``hf-persona-foo``,
module ``hf_persona_foo``) expose a module through the ``hf_persona`` entry-point group.

``HF_PERSONA_LOAD_PLUGINS`` restricts which entry points load: a comma-separated list of
distribution or entry-point names; set but empty, no entry point loads. Tests switch entry-point
loading off this way (or call ``load_plugins(entry_points=False)``).

A plugin whose import or hook raises is reported by name (distribution and entry point) in
:func:`plugin_errors` and a logged warning; the other plugins keep working.

Lookups stay light until they need model code: a plugin may register a model by reference
(``"package.module:ClassName"``) and a reward or logits processor through a factory that imports
inside, so listing the plugins (``hf-persona plugins``) imports neither torch nor transformers.
Plugin models are registered with the transformers Auto classes as soon as both hf_persona and
transformers are imported (whichever comes first): :func:`register_models_when_transformers_loads`,
called when hf_persona is imported, watches for the import of transformers.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import os
import pkgutil
import sys
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


class _PluginManager(pluggy.PluginManager):
    """A pluggy manager whose registries are rebuilt after a plugin comes or goes, so a plugin
    registered by hand (``pm.register(module)``) is seen by the next lookup."""

    def register(self, plugin, name=None):
        result = super().register(plugin, name)
        _forget_registries()
        return result

    def unregister(self, plugin=None, name=None):
        result = super().unregister(plugin=plugin, name=name)
        _forget_registries()
        return result


pm = _PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_lock = threading.RLock()
_loaded = False
_errors: list["PluginError"] = []
_registries: dict[str, dict] = {}
_sources: dict[tuple[str, str], str] = {}
_auto_registered = False  # the current models registry went to the transformers Auto classes


@dataclass(frozen=True)
class PluginError:
    """A plugin that failed: where it came from, at which stage, and the error message."""

    plugin: str
    stage: str
    message: str

    def __str__(self):
        return f"plugin {self.plugin} failed during {self.stage}: {self.message}"


def _is_reference(ref: str) -> bool:
    module_name, sep, attr_path = ref.partition(":")
    return bool(sep and module_name and attr_path)


def resolve_reference(ref):
    """``"package.module:attr.path"`` -> the object it names (imported now); anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    if not _is_reference(ref):
        raise ValueError(f"expected a class or a reference 'package.module:ClassName', got {ref!r}")
    module_name, _, attr_path = ref.partition(":")
    obj = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


class ModelSpec:
    """A registered model: ``name``, ``config_class``, ``model_class`` and the transformers ``auto_class``.

    The classes may be given as references (``"package.module:ClassName"``); they are imported on first
    access of :attr:`config_class` / :attr:`model_class`, so listing models stays free of torch.
    """

    __slots__ = ("name", "auto_class", "_config_ref", "_model_ref")

    def __init__(self, name: str, config_class, model_class, auto_class: str = "AutoModel"):
        for what, ref in (("config_class", config_class), ("model_class", model_class)):
            if isinstance(ref, str) and not _is_reference(ref):
                raise ValueError(f"model {name!r}: {what} must be a class or a reference "
                                 f"'package.module:ClassName', got {ref!r}")
        self.name = name
        self.auto_class = auto_class
        self._config_ref = config_class
        self._model_ref = model_class

    @property
    def config_class(self) -> type:
        if isinstance(self._config_ref, str):
            self._config_ref = resolve_reference(self._config_ref)
        return self._config_ref

    @property
    def model_class(self) -> type:
        if isinstance(self._model_ref, str):
            self._model_ref = resolve_reference(self._model_ref)
        return self._model_ref

    def __eq__(self, other):
        if not isinstance(other, ModelSpec):
            return NotImplemented
        return (self.name, self.auto_class, self._config_ref, self._model_ref) == \
            (other.name, other.auto_class, other._config_ref, other._model_ref)

    def __hash__(self):
        return hash((self.name, self.auto_class))

    def __repr__(self):
        def show(ref):
            return ref if isinstance(ref, str) else f"{ref.__module__}:{ref.__qualname__}"

        return (f"ModelSpec(name={self.name!r}, config_class={show(self._config_ref)!r}, "
                f"model_class={show(self._model_ref)!r}, auto_class={self.auto_class!r})")


def _record(plugin: str, stage: str, exc: BaseException) -> None:
    err = PluginError(plugin, stage, f"{type(exc).__name__}: {exc}")
    if err in _errors:  # the same failure again, from a rebuilt registry
        return
    _errors.append(err)
    logger.warning("%s", err)


def _forget_registries() -> None:
    """Drop the cached registries; the next lookup calls the hooks again."""
    global _auto_registered
    with _lock:
        _registries.clear()
        _sources.clear()
        _auto_registered = False


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
        _forget_registries()


def _collect(kind: str) -> dict:
    """Call ``register_<kind>`` on every plugin, each isolated from the others' failures.

    Models are registered with the transformers Auto classes here only when transformers is already
    imported (listing models must not import it); otherwise the import watcher does it later.
    """
    registry = _build(kind)
    if kind == "models" and not _auto_registered and _watcher.transformers_ready():
        _register_auto_all()
    return registry


def _build(kind: str) -> dict:
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
        _registries[kind] = registry
        return registry


def _register_auto_all() -> None:
    """Register every collected model with the transformers Auto classes (imports the model code)."""
    global _auto_registered
    with _lock:
        registry = _build("models")
        if _auto_registered:
            return
        _auto_registered = True
        for spec in registry.values():
            try:
                _register_auto(spec)
            except Exception as exc:
                _record(_sources.get(("models", spec.name), spec.name), "auto-class registration", exc)


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
    """The registered :class:`ModelSpec` called ``name`` (this lookup imports transformers and registers
    the plugin models with its Auto classes)."""
    spec = _lookup("models", "model", name)
    register_models_with_transformers()
    return spec


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
    """Register every plugin model with the transformers Auto classes in this process (imports
    transformers and the model code; failures are recorded in :func:`plugin_errors`)."""
    _register_auto_all()


class _WatchedLoader:
    """Runs a module through its real loader and tells the watcher when it starts and ends."""

    def __init__(self, spec, watcher):
        self._spec = spec
        self._loader = spec.loader
        self._watcher = watcher

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # from here on the module and its spec show the real loader (inspect, importlib.resources, ...)
        self._spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        self._watcher.enter()
        try:
            self._loader.exec_module(module)
        finally:
            self._watcher.leave()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _TransformersWatcher(importlib.abc.MetaPathFinder):
    """Registers the plugin models with the transformers Auto classes once transformers is imported.

    Installed on ``sys.meta_path`` when hf_persona is imported before transformers (see
    :func:`register_models_when_transformers_loads`). It watches the import of ``transformers`` and
    of hf_persona's own modules: registration imports the model modules, so when transformers is
    imported from inside an hf_persona module (``from hf_persona.models.pal import ...``) it waits
    until that outermost hf_persona import has finished. It removes itself once done.
    """

    def __init__(self):
        self._depth = 0  # hf_persona modules (and transformers) being imported right now
        self._busy = threading.local()
        self._registering = False
        # its own lock, held only for a few operations and never across an import (unlike _lock)
        self._state = threading.Lock()

    @staticmethod
    def _watched(fullname: str) -> bool:
        return fullname == "transformers" or fullname.startswith("hf_persona.")

    def find_spec(self, fullname, path=None, target=None):
        if not self._watched(fullname):
            return None
        finding = getattr(self._busy, "names", None)
        if finding is None:
            finding = self._busy.names = set()
        if fullname in finding:
            return None
        finding.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _WatchedLoader(spec, self)
        return spec

    def transformers_ready(self) -> bool:
        """transformers is imported and no hf_persona module is half-way through its import."""
        return "transformers" in sys.modules and self._depth == 0

    def install(self) -> None:
        with self._state:
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)

    def enter(self) -> None:
        with self._state:
            self._depth += 1

    def leave(self) -> None:
        with self._state:
            self._depth -= 1
            if self._depth or self._registering or "transformers" not in sys.modules:
                return
            if self not in sys.meta_path:  # registered already (or hf_persona did not ask)
                return
            self._registering = True
            sys.meta_path.remove(self)  # its work is done once registration starts
        try:
            register_models_with_transformers()
        except Exception as exc:  # never break the import that triggered registration
            _record("hf_persona", "auto-class registration", exc)
        finally:
            self._registering = False


_watcher = _TransformersWatcher()


def register_models_when_transformers_loads() -> None:
    """Register the plugin models with the transformers Auto classes now if transformers is imported,
    else as soon as it is (called when hf_persona is imported; importing hf_persona stays light)."""
    if "transformers" in sys.modules and _watcher._depth == 0:
        register_models_with_transformers()
    else:
        _watcher.install()
