"""The plugin manager: loads built-in and installed plugins and answers lookups by name.

Built-in features live in :mod:`hf_persona.default_plugins`, one module per feature, and are
registered exactly like third-party plugins. Third-party distributions (``hf-persona-foo``,
module ``hf_persona_foo``) expose a module through the ``hf_persona`` entry-point group.

``HF_PERSONA_LOAD_PLUGINS`` restricts which entry points load: a comma-separated list of
distribution or entry-point names; set but empty, no entry point loads. Tests switch entry-point
loading off this way (or call ``load_plugins(entry_points=False)``).

A plugin whose import or hook raises is reported by name (distribution and entry point) in
:func:`plugin_errors` and a logged warning; the other plugins keep working. That holds for every
exception, ``SystemExit`` (a plugin calling ``sys.exit()``) and other ``BaseException`` subclasses
included; only ``KeyboardInterrupt`` goes through. Registrations are validated as they are made: a
registration with wrong types (a model whose classes are not a ``PretrainedConfig`` / ``PreTrainedModel``
subclass or a ``"package.module:ClassName"`` reference, a factory that is not callable) or naming a
module or class that does not exist is rejected, recorded and not listed; the plugin's other
registrations stand. A model reference is checked without being imported (the module is found and its
source read for the name); a class that is still missing when the model is first imported is recorded
then and the model dropped. A third-party factory (reward, logits processor, dataset loader) that raises
when called gives a :class:`PluginCallError` naming the plugin, the kind and the name.

Lookups stay light until they need model code: a plugin may register a model by reference
(``"package.module:ClassName"``) and a reward or logits processor through a factory that imports
inside, so listing the plugins (``hf-persona plugins``) imports neither torch nor transformers.
Plugin models are registered with the transformers Auto classes as soon as both hf_persona and
transformers are imported (whichever comes first): :func:`register_models_when_transformers_loads`,
called when hf_persona is imported, watches for the import of transformers.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.util
import logging
import os
import pkgutil
import sys
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points as _entry_points

import pluggy

from . import hookspecs
from .errors import HFPersonaError, UnknownNameError

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

    def to_dict(self) -> dict:
        """``{"plugin", "stage", "message"}`` (what ``hf-persona plugins --json`` lists under ``errors``)."""
        return {"plugin": self.plugin, "stage": self.stage, "message": self.message}


class PluginCallError(HFPersonaError):
    """A plugin's factory (reward, logits processor, dataset loader) raised when called.

    The message names the plugin, the kind and the registered name, then the original error, which is
    also the ``__cause__``.
    """

    def __init__(self, plugin: str, kind: str, name: str, error):
        self.plugin, self.kind, self.name = plugin, kind, name
        detail = error if isinstance(error, str) else _describe(error)
        super().__init__(f"{kind} {name!r} from plugin {plugin} failed: {detail}")


BUILTIN_PREFIX = "hf_persona.default_plugins."


def _describe(exc: BaseException) -> str:
    """``"Type: message"``; a ``SystemExit`` says that the plugin called ``sys.exit``."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fatal(exc: BaseException) -> bool:
    """Failures a plugin must not swallow: the user's Ctrl-C. Everything else is recorded."""
    return isinstance(exc, KeyboardInterrupt)


def _is_reference(ref: str) -> bool:
    module_name, sep, attr_path = ref.partition(":")
    return bool(sep and module_name and attr_path
                and all(part.isidentifier() for part in module_name.split("."))
                and all(part.isidentifier() for part in attr_path.split(".")))


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

    ``card``: the model-card template :func:`hf_persona.hub.push` renders for this model, the name of a
    packaged template (``model_cards/<card>.md``) or an absolute path to a template file (a third-party
    plugin ships its own); None: ``<model_type>.md`` or ``<name>.md`` among the packaged templates.
    ``sidecars``: JSON file names a recipe writes next to this model's weights; a folder holding one of
    them gets this model's card even when its ``config.json`` names another ``model_type`` (an adapter
    over a plain language model).
    """

    __slots__ = ("name", "auto_class", "card", "sidecars", "_config_ref", "_model_ref")

    def __init__(self, name: str, config_class, model_class, auto_class: str = "AutoModel", *,
                 card: str | None = None, sidecars=()):
        for what, ref in (("config_class", config_class), ("model_class", model_class)):
            if isinstance(ref, str) and not _is_reference(ref):
                raise ValueError(f"model {name!r}: {what} must be a class or a reference "
                                 f"'package.module:ClassName', got {ref!r}")
        self.name = name
        self.auto_class = auto_class
        self.card = _checked_card(f"model {name!r}", card)
        self.sidecars = _checked_sidecars(f"model {name!r}", sidecars)
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
        return (self.name, self.auto_class, self.card, self.sidecars, self._config_ref, self._model_ref) == \
            (other.name, other.auto_class, other.card, other.sidecars, other._config_ref, other._model_ref)

    def __hash__(self):
        return hash((self.name, self.auto_class))

    def __repr__(self):
        def show(ref):
            return ref if isinstance(ref, str) else f"{ref.__module__}:{ref.__qualname__}"

        return (f"ModelSpec(name={self.name!r}, config_class={show(self._config_ref)!r}, "
                f"model_class={show(self._model_ref)!r}, auto_class={self.auto_class!r}, card={self.card!r}, "
                f"sidecars={self.sidecars!r})")


@dataclass(frozen=True)
class RecipeModelSpec:
    """A model that a recipe saves as a plain transformers architecture (``config.json`` says ``bert`` or
    ``encoder-decoder``, not what the model is) with a sidecar JSON file that tells what it is.

    A folder holds this model when it has the file ``sidecar`` whose JSON object has every key of
    ``match`` with that value. ``card`` is its model-card template, as for :class:`ModelSpec`
    (default: ``name``). Registered through the ``register_recipe_models`` hook.
    """

    name: str
    sidecar: str
    card: str | None = None
    match: tuple | None = ()  # given as a dict (or None); kept as ((key, value), ...) sorted by key

    def __post_init__(self):
        where = f"recipe model {self.name!r}"
        object.__setattr__(self, "card", _checked_card(where, self.card))
        (sidecar,) = _checked_sidecars(where, (self.sidecar,), what="sidecar")
        object.__setattr__(self, "sidecar", sidecar)
        try:
            match = {} if self.match is None else dict(self.match) if isinstance(self.match, (dict, tuple, list)) \
                else None
        except (TypeError, ValueError):  # a sequence that is not of (key, value) pairs
            match = None
        if not isinstance(match, dict) or not all(isinstance(k, str) and k for k in match) \
                or not all(v is None or isinstance(v, (str, int, float, bool)) for v in match.values()):
            raise ValueError(f"{where}: match must map sidecar keys to JSON scalars (e.g. {{'task': 'drg'}}), "
                             f"got {self.match!r}")
        object.__setattr__(self, "match", tuple(sorted(match.items())))

    @property
    def card_name(self) -> str:
        """The card template this model gets: ``card``, else ``name``."""
        return self.card or self.name

    def holds(self, sidecars: dict) -> bool:
        """True when ``sidecars`` (file name -> parsed JSON object) marks a folder holding this model."""
        data = sidecars.get(self.sidecar)
        return isinstance(data, dict) and all(key in data and data[key] == value for key, value in self.match)


def _checked_card(where: str, card):
    if card is None:
        return None
    if not isinstance(card, str) or not card.strip():
        raise ValueError(f"{where}: card must be the name of a model-card template (e.g. 'pal') or a path to "
                         f"one, got {card!r}")
    return card


def _checked_sidecars(where: str, sidecars, what: str = "sidecars") -> tuple:
    if isinstance(sidecars, str):
        raise ValueError(f"{where}: {what} must be a tuple of JSON file names, got the string {sidecars!r} "
                         f"(write ({sidecars!r},))")
    try:
        names = tuple(sidecars)
    except TypeError:
        raise ValueError(f"{where}: {what} must be a tuple of JSON file names, got {sidecars!r}") from None
    for item in names:
        if not isinstance(item, str) or not item.endswith(".json") or item != os.path.basename(item) \
                or item in (".json", "config.json"):
            raise ValueError(f"{where}: {what} must be plain JSON file names such as 'pal_training.json' "
                             f"(no folders, not config.json), got {item!r}")
    return names


def _record(plugin: str, stage: str, exc: BaseException) -> None:
    err = PluginError(plugin, stage, _describe(exc))
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


def installed_entry_points():
    """The installed entry points of the ``hf_persona`` group (:func:`importlib.metadata.entry_points`),
    the plugins :func:`load_plugins` loads after the built-in ones (tests stand in for it)."""
    return _entry_points(group=GROUP)


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
            except BaseException as exc:  # a broken built-in must not take the others down
                if _fatal(exc):
                    raise
                _record(modname, "import", exc)

        env = os.environ.get(ENV_VAR)
        if entry_points is False:
            return
        allow = None if env is None else {n.strip().lower() for n in env.split(",") if n.strip()}
        if allow is not None and not allow:
            return
        for ep in installed_entry_points():
            dist_name = ep.dist.name if ep.dist is not None else None
            if not _wanted(allow, dist_name, ep.name):
                continue
            label = f"{dist_name or '?'}:{ep.name}"
            try:
                module = ep.load()
                if pm.is_registered(module):
                    continue
                pm.register(module, name=label)
            except BaseException as exc:  # sys.exit() at import included: it must not end the command
                if _fatal(exc):
                    raise
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
                try:
                    entry = _validated(kind, name, args, kwargs)
                except (TypeError, ValueError) as exc:  # a bogus registration: recorded, not listed
                    _record(_plugin, f"register_{kind}", exc)
                    return
                if name in registry:
                    logger.warning("%s %r from %s replaces the one from %s", kind, name, _plugin,
                                   _sources.get((kind, name)))
                registry[name] = entry
                _sources[(kind, name)] = _plugin

            staged = dict(registry)
            try:
                impl.function(register=register)
            except BaseException as exc:  # sys.exit() in a hook included
                if _fatal(exc):
                    raise
                registry.clear()
                registry.update(staged)  # drop partial registrations of the failed plugin
                _record(plugin_name, f"register_{kind}", exc)
        _registries[kind] = registry
        return registry


_CONFIG_BASES = ("PretrainedConfig", "PreTrainedConfig")
_MODEL_BASES = ("PreTrainedModel",)


def _validated(kind: str, name, args: tuple, kwargs: dict):
    """The registry entry for ``register(name, *args, **kwargs)``, or TypeError / ValueError saying what is wrong."""
    if not isinstance(name, str) or not name.strip():
        singular = {"models": "model", "rewards": "reward", "logits_processors": "logits processor",
                    "datasets": "dataset", "recipe_models": "recipe model"}.get(kind, kind)
        raise TypeError(f"{singular} names must be non-empty strings, got {name!r}")
    if kind == "recipe_models":
        try:
            return RecipeModelSpec(name, *args, **kwargs)
        except TypeError as exc:  # missing or unexpected arguments
            raise TypeError(f"recipe model {name!r}: register(name, sidecar, card=None, match=None): {exc}") from None
    if kind != "models":
        if len(args) != 1 or kwargs or not callable(args[0]):
            got = ", ".join([repr(a)[:60] for a in args] + [f"{k}=..." for k in kwargs]) or "nothing"
            raise TypeError(f"register({name!r}, factory) takes one callable for {kind}, got {got}")
        return args[0]
    try:
        spec = ModelSpec(name, *args, **kwargs)
    except TypeError as exc:  # missing or unexpected arguments
        raise TypeError(f"model {name!r}: register(name, config_class, model_class, auto_class='AutoModel'): "
                        f"{exc}") from None
    if not isinstance(spec.auto_class, str) or not spec.auto_class.isidentifier() \
            or not spec.auto_class.startswith("Auto"):
        raise TypeError(f"model {name!r}: auto_class must name a transformers auto class such as 'AutoModel', "
                        f"got {spec.auto_class!r}")
    transformers = sys.modules.get("transformers")
    if transformers is not None and not hasattr(transformers, spec.auto_class):
        raise ValueError(f"model {name!r}: transformers has no auto class {spec.auto_class!r}")
    for what, ref in (("config_class", spec._config_ref), ("model_class", spec._model_ref)):
        if isinstance(ref, str):
            _check_reference(name, what, ref)
        else:
            _check_class(name, what, ref)
    if not isinstance(spec._config_ref, str) and not isinstance(spec._model_ref, str):
        _check_pair(name, spec._config_ref, spec._model_ref)
    return spec


def _qualname(obj) -> str:
    if isinstance(obj, type):
        return f"{obj.__module__}:{obj.__qualname__}"
    shown = repr(obj)
    return f"{type(obj).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _derives_from(cls: type, names: tuple) -> bool:
    """``cls`` has a transformers base class called one of ``names`` (checked without importing transformers)."""
    return any(base.__name__ in names and str(getattr(base, "__module__", "")).split(".")[0] == "transformers"
               for base in cls.__mro__)


def _check_class(name: str, what: str, cls) -> None:
    """A model's config or model class, given or imported: the right kind of transformers class."""
    if not isinstance(cls, type):
        raise TypeError(f"model {name!r}: {what} must be a class or a reference 'package.module:ClassName', "
                        f"got {_qualname(cls)}")
    if what == "config_class":
        if not _derives_from(cls, _CONFIG_BASES):
            raise TypeError(f"model {name!r}: config_class must be a transformers PretrainedConfig subclass, "
                            f"got {_qualname(cls)}")
        model_type = getattr(cls, "model_type", None)
        if not isinstance(model_type, str) or not model_type:
            raise ValueError(f"model {name!r}: config_class {_qualname(cls)} needs a unique non-empty model_type, "
                             f"got {model_type!r}")
    elif not _derives_from(cls, _MODEL_BASES):
        raise TypeError(f"model {name!r}: model_class must be a transformers PreTrainedModel subclass, "
                        f"got {_qualname(cls)}")


def _check_pair(name: str, config_class: type, model_class: type) -> None:
    own = getattr(model_class, "config_class", None)
    if isinstance(own, type) and own.__name__ != config_class.__name__:
        raise ValueError(f"model {name!r}: model_class {_qualname(model_class)} has config_class {_qualname(own)}, "
                         f"not {_qualname(config_class)}")


def _check_reference(name: str, what: str, ref: str) -> None:
    """A ``"package.module:ClassName"`` reference names a module that exists and a name it defines.

    Nothing is imported: an imported module is looked into; otherwise the module is found on the path
    and its source is read for a top-level definition or import of the name. When the source cannot
    tell (compiled module, star import, module ``__getattr__``), the check waits for the import.
    """
    if not _is_reference(ref):
        raise ValueError(f"model {name!r}: {what} must be a class or a reference 'package.module:ClassName', "
                         f"got {ref!r}")
    module_name, _, attr_path = ref.partition(":")
    module = sys.modules.get(module_name)
    if module is not None:
        obj = module
        for attr in attr_path.split("."):
            if not hasattr(obj, attr):
                raise ValueError(f"model {name!r}: {what} {ref!r}: {module_name} has no {attr_path!r}")
            obj = getattr(obj, attr)
        return
    try:
        spec = importlib.util.find_spec(module_name)
    except BaseException as exc:  # a parent package that fails to import
        if _fatal(exc):
            raise
        raise ValueError(f"model {name!r}: {what} {ref!r}: module {module_name!r} cannot be found "
                         f"({_describe(exc)})") from None
    if spec is None:
        raise ValueError(f"model {name!r}: {what} {ref!r}: no module named {module_name!r}")
    top = attr_path.split(".")[0]
    if source_defines(spec, top) is False:
        raise ValueError(f"model {name!r}: {what} {ref!r}: module {module_name} defines no {top!r}")


def source_defines(spec, attr: str):
    """True / False when the module's source does / does not bind ``attr`` at top level; None when it cannot tell."""
    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py"):
        return None
    try:
        with open(origin, encoding="utf-8") as fh:
            source = fh.read()
        tree = ast.parse(source)
    except (OSError, ValueError, SyntaxError):
        return None  # the import will say what is wrong
    if "globals()" in source or "sys.modules[" in source or "setattr(" in source:
        return None
    names: set[str] = set()

    def targets(node):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(stmts) -> bool:
        for node in stmts:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name == "__getattr__":
                    return False
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target)
                if "__getattr__" in names:
                    return False
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets(node.target)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                targets(node.target)
                if not visit(node.body) or not visit(node.orelse):
                    return False
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
                if not visit(node.body):
                    return False
            elif isinstance(node, (ast.If, ast.While)):
                if not visit(node.body) or not visit(node.orelse):
                    return False
            elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
                blocks = [node.body, node.orelse, node.finalbody] + [h.body for h in node.handlers]
                if not all(visit(block) for block in blocks):
                    return False
            elif not isinstance(node, (ast.Expr, ast.Pass, ast.Assert, ast.Delete, ast.Raise)):
                return False  # match statements, walrus, ...: let the import decide
        return True

    if not visit(tree.body):
        return None
    if attr in names:
        return True
    for folder in getattr(spec, "submodule_search_locations", None) or ():  # a package: maybe a submodule
        if os.path.exists(os.path.join(folder, attr + ".py")) or os.path.isdir(os.path.join(folder, attr)):
            return None
    return False


def _register_auto_all() -> None:
    """Register every collected model with the transformers Auto classes (imports the model code).

    A model whose classes fail to import or are not what the registration promised is recorded under
    its plugin and dropped from the registry."""
    global _auto_registered
    with _lock:
        registry = _build("models")
        if _auto_registered:
            return
        _auto_registered = True
        for spec in list(registry.values()):
            try:
                _register_auto(spec)
            except BaseException as exc:  # a model module that calls sys.exit() at import included
                if _fatal(exc):
                    raise
                registry.pop(spec.name, None)
                _record(_sources.get(("models", spec.name), spec.name), f"import of model {spec.name!r}", exc)


def _register_auto(spec: ModelSpec) -> None:
    import transformers

    config_class, model_class = spec.config_class, spec.model_class
    _check_class(spec.name, "config_class", config_class)
    _check_class(spec.name, "model_class", model_class)
    _check_pair(spec.name, config_class, model_class)
    auto = getattr(transformers, spec.auto_class, None)
    if auto is None:
        raise ValueError(f"model {spec.name!r}: transformers has no auto class {spec.auto_class!r}")
    transformers.AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    auto.register(config_class, model_class, exist_ok=True)


def register_commands(cli) -> None:
    """Let every plugin add its CLI commands to ``cli``."""
    load_plugins()
    for impl in reversed(pm.hook.register_commands.get_hookimpls()):
        try:
            impl.function(cli=cli)
        except BaseException as exc:
            if _fatal(exc):
                raise
            _record(pm.get_name(impl.plugin) or repr(impl.plugin), "register_commands", exc)


def _lookup(kind: str, singular: str, name: str):
    registry = _collect(kind)
    if name not in registry:
        raise UnknownNameError(singular, name, registry)
    return registry[name]


def get_model_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` called ``name`` (this lookup imports transformers and registers
    the plugin models with its Auto classes). A model whose classes failed to import or to check gives
    a :class:`PluginCallError` naming its plugin."""
    registry = _collect("models")
    if name in registry:
        register_models_with_transformers()
        registry = _collect("models")
    if name not in registry:
        stage = f"import of model {name!r}"
        failure = next((e for e in reversed(_errors) if e.stage == stage), None)
        if failure is not None:  # registered, then dropped when its classes were imported
            raise PluginCallError(failure.plugin, "model", name, failure.message)
        raise UnknownNameError("model", name, registry)
    return registry[name]


def _call(kind: str, singular: str, name: str, **kwargs):
    """Call the factory registered as ``name``; a third-party factory's failure names its plugin."""
    factory = _lookup(kind, singular, name)
    plugin = _sources.get((kind, name), "?")
    if plugin.startswith(BUILTIN_PREFIX):  # hf_persona's own factories raise their documented errors
        return factory(**kwargs)
    try:
        return factory(**kwargs)
    except BaseException as exc:  # sys.exit() in a factory included
        if _fatal(exc):
            raise
        raise PluginCallError(plugin, singular, name, exc) from exc


def get_reward(name: str, **options):
    """Build the reward function registered as ``name`` (``factory(**options)``)."""
    return _call("rewards", "reward", name, **options)


def get_logits_processor(name: str, **options):
    """Build the logits processor registered as ``name``."""
    return _call("logits_processors", "logits processor", name, **options)


def get_dataset(name: str, path=None, **options):
    """Load the dataset registered as ``name`` (``loader(path, **options)``)."""
    return _call("datasets", "dataset", name, path=path, **options)


def list_plugins() -> dict[str, list[str]]:
    """Names registered for each kind, plus the plugin modules/distributions loaded."""
    out = {kind: sorted(_collect(kind)) for kind in KINDS}
    out["plugins"] = sorted(name for name, _ in pm.list_name_plugin())
    return out


def model_specs() -> dict[str, ModelSpec]:
    """Every registered :class:`ModelSpec` by name, in registration order (the classes are not imported
    unless transformers is, as for any lookup)."""
    return dict(_collect("models"))


def recipe_model_specs() -> dict[str, RecipeModelSpec]:
    """Every :class:`RecipeModelSpec` registered through ``register_recipe_models``, by name."""
    return dict(_build("recipe_models"))


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
        except BaseException as exc:  # never break the import that triggered registration
            if _fatal(exc):
                raise
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
