"""Push hf_persona checkpoints to the Hugging Face Hub with a model card, and pull them back.

``push`` uploads exactly what a user needs to run a checkpoint with only ``transformers``
installed: safetensors weights, ``config.json`` (with ``auto_map`` for custom models), the
model's code files, the tokenizer, the generation config, and a ``README.md`` model card
rendered from the template the model's registration names (``card=``; the packaged templates live in
the repository's ``model_cards/`` folder, shipped as the package ``hf_persona.model_cards`` and read
through :mod:`importlib.resources`). The card's ``{metrics_table}`` is filled from an evaluation JSON
(``hf-persona eval ... --json OUT``), never typed by hand.

``pull`` downloads a repository (or finds it in the local cache under ``HF_HUB_OFFLINE=1``)
and returns the loaded model. Pickle weights (``.bin``, ``.pt``, ...) are refused both ways.

Every failure a user can cause or meet (no token, unknown repository, no network, offline
mode, pickle weights, a broken card template) raises :class:`~hf_persona.errors.HFPersonaError`
with a one-line message; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import HFPersonaError
from .utils import get_logger

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

logger = get_logger(__name__)

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _model_cards_dir() -> Traversable:
    try:
        return files("hf_persona.model_cards")
    except ModuleNotFoundError:
        # a source checkout imported without an install (or an editable install made before the templates
        # moved out of hf_persona/; `pip install -e .` refreshes it): the folder beside the package
        return Path(__file__).resolve().parent.parent / "model_cards"


#: Folder holding the packaged model-card templates (``<card>.md``): the repository's ``model_cards/``
#: folder, installed as the package ``hf_persona.model_cards`` (pyproject.toml maps it), found through
#: :mod:`importlib.resources`, so it works from a wheel as well as an editable install.
#: A :class:`~importlib.resources.abc.Traversable` (a :class:`~pathlib.Path` for a normal install);
#: only the Traversable API (``/``, ``is_file``, ``is_dir``, ``iterdir``, ``read_text``) is used on it.
MODEL_CARDS_DIR: Traversable = _model_cards_dir()

#: Files (by exact name) uploaded besides weights and code.
CONFIG_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json",
                "adapter_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json")
#: Written next to a model by save_pretrained for models with a processor (AutoProcessor's file).
PROCESSOR_CONFIG = "processor_config.json"
#: First line of the usage README that save_pretrained writes; a README.md without it is the user's
#: and is never overwritten.
USAGE_MARKER = "<!-- usage written by hf_persona's save_pretrained; push replaces it with the model card -->"
#: Pickle-based weight formats: refused on push, never downloaded on pull.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Trainer bookkeeping that may sit next to a saved model; skipped (not weights, not needed).
SKIPPED_PICKLES = ("training_args.bin",)
#: JSON files next to a saved model that are not uploaded (Trainer bookkeeping).
SKIPPED_JSON = ("trainer_state.json",)
#: Keys of sidecar JSON files that name the base checkpoint.
SIDECAR_BASE_KEYS = ("base_model", "backbone", "base")
#: Auto classes tried in this order when a config declares several in ``auto_map``.
AUTO_CLASS_ORDER = ("AutoModelForSeq2SeqLM", "AutoModelForCausalLM",
                    "AutoModelForSequenceClassification", "AutoModelForMultipleChoice",
                    "AutoModelForTokenClassification", "AutoModel")


@dataclass
class PushResult:
    """What :func:`push` uploaded: the repository URL, the commit URL and the file names."""

    repo_id: str
    repo_url: str
    commit_url: str
    files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- validation helpers

def check_repo_id(repo_id) -> str:
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id):
        raise HFPersonaError(f"repo id must look like ORG/NAME (letters, digits, '.', '_', '-'), got {repo_id!r}")
    return repo_id


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise HFPersonaError(f"{model_dir}: no config.json; expected a folder written by save_pretrained")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HFPersonaError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise HFPersonaError(f"{path}: expected a JSON object with a 'model_type' string")
    return config


def _is_native_model_type(model_type: str) -> bool:
    """True when transformers itself ships this model type (no custom code needed)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def _code_modules(auto_map: dict) -> set[str]:
    """Module names (``modeling_cobert``) referenced by an ``auto_map``."""
    modules = set()
    for ref in auto_map.values():
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        for item in refs:
            if not item:
                continue
            item = item.split("--", 1)[-1]  # "repo--module.Class" form
            modules.add(item.rsplit(".", 1)[0])
    return modules


_REL_IMPORT_RE = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", re.MULTILINE)


def _processor_auto_map(model_dir: Path) -> dict:
    """The ``auto_map`` of ``processor_config.json`` (``{}`` when there is none or it is unreadable)."""
    path = model_dir / PROCESSOR_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    return auto_map if isinstance(auto_map, dict) else {}


def _check_code_files(model_dir: Path, config: dict) -> list[Path]:
    """The ``.py`` files a custom model needs, checking that every referenced module is there."""
    auto_map = config.get("auto_map")
    if not auto_map:
        if _is_native_model_type(config["model_type"]):
            return sorted(model_dir.glob("*.py"))
        raise HFPersonaError(
            f"{model_dir}/config.json has no auto_map for custom model_type {config['model_type']!r}; "
            "call Config.register_for_auto_class() and Model.register_for_auto_class(...) before save_pretrained"
        )
    if not isinstance(auto_map, dict):
        raise HFPersonaError(f"{model_dir}/config.json: auto_map must be an object, got {type(auto_map).__name__}")
    needed = set(_code_modules(auto_map))
    processor = _processor_auto_map(model_dir)
    needed |= _code_modules(processor)
    todo = list(needed)
    while todo:  # follow single-dot sibling imports
        module = todo.pop()
        path = model_dir / f"{module}.py"
        if not path.is_file():
            raise HFPersonaError(
                f"{model_dir}: auto_map refers to {module}.py, which is missing; save_pretrained copies it "
                "when the model class was registered with register_for_auto_class"
            )
        for sibling in _REL_IMPORT_RE.findall(path.read_text(encoding="utf-8")):
            if sibling not in needed:
                needed.add(sibling)
                todo.append(sibling)
    return sorted(model_dir / f"{m}.py" for m in needed)


def collect_files(model_dir) -> list[Path]:
    """The files of ``model_dir`` that :func:`push` uploads (README.md excluded: it is rendered).

    Raises :class:`HFPersonaError` for pickle weights, a missing ``config.json``/``auto_map``/code
    file, no safetensors weights, or no tokenizer.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise HFPersonaError(f"model folder {model_dir} does not exist; expected a folder written by save_pretrained")
    pickles = sorted(p.name for p in model_dir.iterdir()
                     if p.is_file() and p.name.endswith(PICKLE_SUFFIXES) and p.name not in SKIPPED_PICKLES)
    if pickles:
        raise HFPersonaError(
            f"{model_dir}: refusing to push pickle weights {', '.join(pickles)}; "
            "save with safetensors (model.save_pretrained(dir), the default) and delete them"
        )
    config = _read_config(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise HFPersonaError(f"{model_dir}: no *.safetensors weights; expected model.safetensors from save_pretrained")
    tokenizer = [model_dir / n for n in TOKENIZER_FILES if (model_dir / n).is_file()]
    if not tokenizer:
        raise HFPersonaError(
            f"{model_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...); "
            "save the tokenizer into the same folder (tokenizer.save_pretrained(dir))"
        )
    code = _check_code_files(model_dir, config)
    configs = [model_dir / n for n in CONFIG_FILES if (model_dir / n).is_file()]
    # other top-level JSON: sidecar settings a loader needs (persona_extractor.json, pal_training.json)
    # and evaluation results; the Trainer's bookkeeping stays home
    extra = [p for p in model_dir.glob("*.json") if p.is_file() and p.name not in SKIPPED_JSON]
    files = {p.name: p for p in [*weights, *configs, *extra, *code, *tokenizer]}
    return [files[name] for name in sorted(files)]


# ---------------------------------------------------------------- model card

def load_metrics(path) -> dict[str, float]:
    """Read an evaluation JSON into a flat ``{metric: number}`` dict.

    Nested objects are flattened with dots (``{"cobert": {"mrr": 0.6}}`` -> ``cobert.mrr``).
    Strings and other non-numbers are skipped; a file without any number is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise HFPersonaError(f"metrics file {path} does not exist; write it with `hf-persona eval ... --json {path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HFPersonaError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise HFPersonaError(f"{path}: expected a JSON object of metric -> number, got {type(data).__name__}")
    flat: dict[str, float] = {}

    def walk(prefix, obj):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(name, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[name] = value

    walk("", data)
    if not flat:
        raise HFPersonaError(f"{path}: no numeric metric found; expected e.g. {{\"hits@1\": 0.61}}")
    return flat


def format_number(value) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.2f}"


def metrics_table(metrics: dict | None, source: str | None = None) -> str:
    """A markdown table of ``metrics`` (rows sorted by name), or a sentence saying none were given."""
    if not metrics:
        return "_No evaluation results were supplied when this model was pushed._"
    lines = ["| Metric | Value |", "|---|---|"]
    for name in sorted(metrics):
        lines.append(f"| {name} | {format_number(metrics[name])} |")
    if source:
        lines.append("")
        lines.append(f"_Source: `{source}`._")
    return "\n".join(lines)


def _registries() -> tuple[dict, dict]:
    """``(model specs, recipe model specs)`` of the plugins; empty when the plugins cannot be listed
    (a broken plugin must not stop a push: the card lookup then just finds less)."""
    try:
        from .plugins import model_specs, recipe_model_specs

        return model_specs(), recipe_model_specs()
    except Exception:
        return {}, {}


def _specs_for(model_type: str) -> list:
    """Registered model specs whose config class has ``model_type`` (one whose classes fail to import is skipped)."""
    out = []
    for spec in _registries()[0].values():
        try:
            if getattr(spec.config_class, "model_type", None) == model_type:
                out.append(spec)
        except Exception:  # noqa: BLE001 - that plugin's import failure is recorded by the plugin manager
            continue
    return out


def registered_names(model_type: str) -> list[str]:
    """Names under which plugins registered a model whose config has ``model_type``."""
    return sorted(spec.name for spec in _specs_for(model_type))


def sidecar_files() -> list[str]:
    """The sidecar JSON file names registrations declare (``sidecars=`` of a model, ``sidecar`` of a
    recipe model), in registration order."""
    models, recipes = _registries()
    names = [name for spec in models.values() for name in spec.sidecars]
    names += [spec.sidecar for spec in recipes.values()]
    return list(dict.fromkeys(names))


def sidecar_cards(sidecars: dict[str, dict]) -> list[str]:
    """Card templates named through the sidecar files of a folder (file name -> its JSON object): the
    card (else the name) of each registered model declaring one of those files in ``sidecars=``, then of
    each recipe model whose ``sidecar`` is there with the values of its ``match``."""
    models, recipes = _registries()
    cards = [spec.card or spec.name for spec in models.values() if any(n in sidecars for n in spec.sidecars)]
    cards += [spec.card_name for spec in recipes.values() if spec.holds(sidecars)]
    return list(dict.fromkeys(cards))


def card_template_path(name: str):
    """The template file a card name stands for: an absolute path as is, else ``MODEL_CARDS_DIR/<name>.md``."""
    if os.path.isabs(name):
        return Path(name)
    return MODEL_CARDS_DIR / f"{name}.md"


def find_card_template(model_type: str, card_template=None, markers=()) -> Path | Traversable:
    """``card_template`` as a path or a name in the packaged templates (:data:`MODEL_CARDS_DIR`);
    else the first existing of: the ``card`` of a registered model with this ``model_type``,
    ``<model_type>.md``, ``<registered model name>.md`` and the cards named by sidecar ``markers``
    (see :func:`sidecar_cards`). A packaged template is returned as an :mod:`importlib.resources`
    Traversable (a Path unless the package is imported from a zip)."""
    if card_template is not None:
        path = Path(card_template)
        if path.is_file():
            return path
        named = MODEL_CARDS_DIR / f"{card_template}.md"
        if named.is_file():
            return named
        raise HFPersonaError(
            f"model card template {card_template!r} not found (neither a file nor {named}); "
            f"available: {', '.join(available_card_templates()) or '(none)'}"
        )
    specs = _specs_for(model_type)
    candidates = [*(spec.card for spec in specs if spec.card),
                  model_type, model_type.replace("_", "-"), model_type.replace("-", "_"),
                  *(spec.name for spec in specs if not spec.card), *markers]
    for name in candidates:
        path = card_template_path(name)
        if path.is_file():
            return path
    raise HFPersonaError(
        f"no model card template for model_type {model_type!r} (looked in {MODEL_CARDS_DIR} for "
        f"{', '.join(dict.fromkeys(c if os.path.isabs(c) else c + '.md' for c in candidates))}); "
        f"pass card_template= (--card) one of: {', '.join(available_card_templates()) or '(none)'}, "
        "or name the card in the model's registration (register(..., card=NAME))"
    )


def available_card_templates() -> list[str]:
    """Names (without ``.md``) of the packaged model-card templates."""
    if not MODEL_CARDS_DIR.is_dir():
        return []
    return sorted(p.name[:-3] for p in MODEL_CARDS_DIR.iterdir() if p.name.endswith(".md") and p.is_file())


_BASE_MODEL_KEYS = ("base_model", "base_model_name_or_path", "backbone", "backbone_name_or_path",
                    "encoder_name_or_path", "pretrained_model_name_or_path")


def _public_name(value: str) -> str:
    """A Hub id for a base model; the packaged MiniLM folder maps to its Hub id."""
    try:
        from .backbones import minilm_path

        if Path(value).exists() and Path(value).resolve() == Path(minilm_path()).resolve():
            return "sentence-transformers/all-MiniLM-L6-v2"
    except Exception:  # no packaged MiniLM: keep the value
        pass
    if value.lower() in ("minilm", "all-minilm-l6-v2"):
        return "sentence-transformers/all-MiniLM-L6-v2"
    return value


def base_model_of(config: dict) -> str:
    """The base checkpoint recorded in a config (first of the usual keys, nested configs too)."""
    stack = [config]
    while stack:
        cfg = stack.pop(0)
        for key in _BASE_MODEL_KEYS:
            value = cfg.get(key)
            if isinstance(value, str) and value.strip():
                return _public_name(value.strip())
        stack.extend(v for v in cfg.values() if isinstance(v, dict))
    return "unknown"


def render_card(template_path, *, repo_id: str, base_model: str, metrics: dict | None,
                metrics_source: str | None = None) -> str:
    """Fill a ``str.format`` template with ``{metrics_table}``, ``{base_model}`` and ``{repo_id}``.

    Literal braces in a template are written ``{{`` and ``}}``; any other placeholder is an error.
    """
    if isinstance(template_path, (str, os.PathLike)):
        template_path = Path(template_path)
    text = template_path.read_text(encoding="utf-8")  # a Path or an importlib.resources Traversable
    try:
        return text.format(metrics_table=metrics_table(metrics, metrics_source),
                           base_model=base_model, repo_id=repo_id)
    except KeyError as exc:
        raise HFPersonaError(
            f"{template_path}: unknown placeholder {{{exc.args[0]}}}; only {{metrics_table}}, {{base_model}} "
            "and {repo_id} are filled (write literal braces as {{ and }})"
        ) from exc
    except (ValueError, IndexError) as exc:
        raise HFPersonaError(
            f"{template_path}: not a valid str.format template ({exc}); write literal braces as {{{{ and }}}}"
        ) from exc


def read_sidecars(model_dir: Path) -> dict[str, dict]:
    """The JSON objects of the registered sidecar files in ``model_dir`` (see :func:`sidecar_files`)."""
    out = {}
    for name in sidecar_files():
        path = model_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                out[name] = data
    return out


def build_card(model_dir, repo_id: str, card_template=None, metrics_json=None, base_model=None) -> str:
    """Render the model card :func:`push` would upload for ``model_dir``."""
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    sidecars = read_sidecars(model_dir)
    template = find_card_template(config["model_type"], card_template, sidecar_cards(sidecars))
    source = None
    if metrics_json is None:
        for name in ("metrics.json", "eval_results.json"):
            if (model_dir / name).is_file():
                metrics_json = model_dir / name
                break
    metrics = None
    if metrics_json is not None:
        metrics = load_metrics(metrics_json)
        source = Path(metrics_json).name
    if base_model is None:
        base_model = base_model_of(config)
        for data in sidecars.values():  # the config does not say: a sidecar may record it
            value = next((data[k] for k in SIDECAR_BASE_KEYS if isinstance(data.get(k), str) and data[k].strip()), None)
            if base_model == "unknown" and value:
                base_model = _public_name(value.strip())
    return render_card(template, repo_id=repo_id, base_model=base_model,
                       metrics=metrics, metrics_source=source)


# ---------------------------------------------------------------- error translation

_NETWORK_ERROR_NAMES = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ReadTimeout",
                        "ConnectionError", "ProxyError", "Timeout"}


def _is_network_error(exc: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(exc).__mro__) and not _is_offline_error(exc)


def _is_offline_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "OfflineModeIsEnabled"


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextmanager
def _hub_errors(action: str, repo_id: str):
    """Turn huggingface_hub / network exceptions into one-line :class:`HFPersonaError` messages."""
    from huggingface_hub import errors as hub_errors

    try:
        yield
    except HFPersonaError:
        raise
    except hub_errors.GatedRepoError as exc:
        raise HFPersonaError(f"cannot {action} {repo_id}: the repository is gated; accept its terms on the Hub "
                             "and log in (hf auth login)") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise HFPersonaError(f"cannot {action} {repo_id}: repository not found on {_endpoint()} "
                             "(check the id; private repositories need a token with access)") from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise HFPersonaError(f"cannot {action} {repo_id}: revision not found ({_first_line(exc)})") from exc
    except hub_errors.LocalEntryNotFoundError as exc:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise HFPersonaError(f"cannot {action} {repo_id}: offline mode is on (HF_HUB_OFFLINE=1) and it is not in "
                                 f"the local cache {constants.HF_HUB_CACHE}; unset HF_HUB_OFFLINE to download it") from exc
        raise HFPersonaError(f"cannot {action} {repo_id}: the Hub at {_endpoint()} cannot be reached and it is not "
                             "in the local cache (no network?)") from exc
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise HFPersonaError(f"cannot {action} {repo_id}: the Hub rejected the token (401); "
                                 "log in again with hf auth login or set HF_TOKEN") from exc
        if status == 403:
            raise HFPersonaError(f"cannot {action} {repo_id}: the token has no write access to this namespace (403); "
                                 "use a write token") from exc
        raise HFPersonaError(f"cannot {action} {repo_id}: the Hub answered {status}: {_first_line(exc)}") from exc
    except Exception as exc:
        if _is_offline_error(exc):
            raise HFPersonaError(f"cannot {action} {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); "
                                 "unset it to reach the Hub") from exc
        if _is_network_error(exc):
            raise HFPersonaError(f"cannot {action} {repo_id}: the Hub at {_endpoint()} cannot be reached "
                                 f"(no network? {type(exc).__name__})") from exc
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------- push

def push(model_dir, repo_id: str, private: bool = False, token: str | None = None, card_template=None,
         metrics_json=None, *, base_model: str | None = None,
         commit_message: str | None = None) -> PushResult:
    """Upload ``model_dir`` to ``repo_id`` (created when missing) with a rendered model card.

    ``token`` defaults to the usual huggingface_hub places (``HF_TOKEN``, ``hf auth login``).
    ``card_template`` is a path or a name in the packaged ``model_cards/`` (default: the card the model's
    registration names, else one named after its model_type, see :func:`find_card_template`);
    ``metrics_json`` is the evaluation JSON that fills the card's metrics table (default:
    ``metrics.json`` or ``eval_results.json`` inside ``model_dir`` when present).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token

    check_repo_id(repo_id)
    model_dir = Path(model_dir)
    files = collect_files(model_dir)
    card = build_card(model_dir, repo_id, card_template=card_template, metrics_json=metrics_json,
                      base_model=base_model)
    if constants.HF_HUB_OFFLINE:
        raise HFPersonaError(f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); unset it to upload")
    token = token or get_token()
    if not token:
        raise HFPersonaError(f"cannot push to {repo_id}: no Hugging Face token found; run `hf auth login` "
                             "or set HF_TOKEN to a write token")
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    with _hub_errors("push to", repo_id):
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations, repo_type="model",
                                 commit_message=commit_message or f"Upload {model_dir.name} with hf_persona")
    names = sorted([p.name for p in files] + ["README.md"])
    logger.info("pushed %d files to %s", len(names), repo_url)
    return PushResult(repo_id=repo_id, repo_url=str(repo_url), commit_url=info.commit_url, files=names)


# ---------------------------------------------------------------- pull

def _auto_class_name(config: dict) -> str:
    auto_map = config.get("auto_map") or {}
    for name in AUTO_CLASS_ORDER:
        if name in auto_map:
            return name
    if auto_map:
        others = [k for k in auto_map if k.startswith("AutoModel")]
        if others:
            return sorted(others)[0]
    return ""


def load_model(path, trust_remote_code: bool = False):
    """Load the model saved in ``path`` with the auto class its config names (safetensors only)."""
    import transformers

    path = Path(path)
    config = _read_config(path)
    if not any(path.glob("*.safetensors")):
        raise HFPersonaError(f"{path}: no safetensors weights; hf_persona loads safetensors only")
    auto_name = _auto_class_name(config)
    if auto_name:
        cls = getattr(transformers, auto_name)
    else:
        archs = config.get("architectures") or []
        cls = getattr(transformers, archs[0], None) if archs else None
        if cls is None:
            cls = transformers.AutoModel
    try:
        return cls.from_pretrained(str(path), trust_remote_code=trust_remote_code, use_safetensors=True)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise HFPersonaError(
                f"{path}: model_type {config['model_type']!r} is not registered by hf_persona or its plugins; "
                "pass trust_remote_code=True (--trust-remote-code) to run the repository's code"
            ) from exc
        raise


def pull(repo_id: str, out_dir=None, revision: str | None = None, *, trust_remote_code: bool = False,
         token: str | None = None):
    """Download ``repo_id`` (or use the cache when offline) and return the loaded model.

    With ``out_dir`` the snapshot's files are also copied there (plain files, no symlinks).
    Pickle weight files in the repository are never downloaded. Models whose ``model_type``
    hf_persona registers load with hf_persona's own code; others need ``trust_remote_code=True``.
    """
    from huggingface_hub import snapshot_download

    check_repo_id(repo_id)
    ignore = [f"*{s}" for s in PICKLE_SUFFIXES] + ["*.h5", "*.msgpack", "*.onnx"]
    with _hub_errors("pull", repo_id):
        snapshot = snapshot_download(repo_id, revision=revision, ignore_patterns=ignore, token=token)
    path = Path(snapshot)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for src in path.rglob("*"):
            if src.is_file() and ".cache" not in src.relative_to(path).parts:
                dst = out / src.relative_to(path)
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{dst.name}.tmp")
                shutil.copyfile(src, tmp)  # follows the cache's symlinks to the blobs
                os.replace(tmp, dst)
        path = out
    return load_model(path, trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------- usage files written at save time

_LOAD_NOTE = """Loading needs only `transformers` (and `torch`); the model's code is in this folder. Pass
`trust_remote_code=True` to **every** `from_pretrained` call on this folder, the tokenizer's included:
`AutoTokenizer` reads `config.json` first, which names custom code, and without the flag it stops on a
`[y/N]` trust prompt (15 s) before falling back to the plain tokenizer."""

_USAGE = {
    "cobert": ("CoBERT persona-aware response selection", """\
```python
import torch
from transformers import AutoModel, AutoTokenizer

model = AutoModel.from_pretrained("{path}", trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained("{path}", trust_remote_code=True)

context = ["hi , how are you today ?", "great , i just got back from walking my dogs . you ?"]
persona = ["i have three sisters .", "i like to go fishing ."]
candidates = ["i love fishing on weekends .", "my favorite food is pizza ."]

# raw text -> the tensors forward() takes (one context, persona and response per row)
inputs = model.build_inputs([context] * 2, [persona] * 2, candidates, tokenizer=tokenizer)
with torch.no_grad():
    out = model(**inputs)
# or rank candidates directly: one score per candidate
scores = model.rank(context, persona, candidates, tokenizer=tokenizer)
print(candidates[int(scores.argmax())])
```"""),
    "p2bot_receiver": ("P2Bot Receiver (persona perception scorer)", """\
```python
from transformers import AutoModel, AutoTokenizer

model = AutoModel.from_pretrained("{path}", trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained("{path}", trust_remote_code=True)

utterances = ["i play guitar in a band", "i caught a big fish yesterday"]
persona = ["i play the guitar .", "i like to go fishing ."]
print(model.score(utterances, persona, tokenizer=tokenizer))      # how well the utterances reveal the persona
print(model.relevance(utterances, persona, tokenizer=tokenizer))  # [utterances, persona sentences] grid
```"""),
    "pal": ("PAL: persona-augmented emotional-support generation (seq2seq)", """\
```python
from transformers import AutoModelForSeq2SeqLM, AutoProcessor, LogitsProcessorList

model = AutoModelForSeq2SeqLM.from_pretrained("{path}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{path}", trust_remote_code=True)   # PALProcessor, tokenizer inside

inputs = processor(["hi", "hello, what is on your mind today?", "i lost my job last week"],
                   ["usr", "sys", "usr"], ["", "Question", ""],
                   persona=["i lost my job ."])
# strategy-based contrastive decoding (paper section 3.4); leave logits_processor out for plain decoding
out = model.generate(**inputs, max_new_tokens=40, do_sample=False,
                     logits_processor=LogitsProcessorList([model.strategy_contrast_processor()]))
print(processor.decode_responses(out))    # [(strategy, response text)]
```"""),
    "pal_causal": ("PAL over a causal LM: persona-augmented emotional-support generation", """\
```python
from transformers import AutoModelForCausalLM, AutoProcessor, LogitsProcessorList

model = AutoModelForCausalLM.from_pretrained("{path}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{path}", trust_remote_code=True)   # PALProcessor (chat prompt)

inputs = processor(["hi", "hello, what is on your mind today?", "i lost my job last week"],
                   ["usr", "sys", "usr"], ["", "Question", ""],
                   persona=["i lost my job ."])
out = model.generate(**inputs, max_new_tokens=40, do_sample=False,
                     logits_processor=LogitsProcessorList([model.strategy_contrast_processor()]))
print(processor.decode_responses(out, inputs))    # [(strategy, response text)]
```"""),
    "p2bot_transmitter": ("P2Bot Transmitter: persona-conditioned response generation", """\
```python
from transformers import AutoModelForCausalLM, AutoProcessor

model = AutoModelForCausalLM.from_pretrained("{path}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{path}", trust_remote_code=True)   # TransmitterProcessor

persona = ["i like cats .", "i work as a nurse ."]
history = ["hi , do you have pets ?"]
inputs = processor(persona, history)
out = model.generate(**inputs, max_new_tokens=20, eos_token_id=processor.eos_token_id,
                     pad_token_id=processor.pad_token_id)
print(processor.decode_responses(out, inputs))
# or with the paper's re-ranked beam search:
print(model.respond(processor.tokenizer, persona, history))
```"""),
}
_USAGE["persona_biencoder"] = ("Bi-encoder persona-aware response selection", _USAGE["cobert"][1])


def usage_readme(model_type: str, path: str = ".") -> str:
    """The usage README that ``save_pretrained`` writes into a folder holding ``model_type``."""
    title, code = _USAGE.get(model_type, (model_type, """\
```python
from transformers import AutoConfig, AutoModel, AutoTokenizer

config = AutoConfig.from_pretrained("{path}", trust_remote_code=True)
model = AutoModel.from_pretrained("{path}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{path}", trust_remote_code=True)
```"""))
    return "\n".join([
        USAGE_MARKER, f"# {title}", "",
        f"Saved by hf_persona (model type `{model_type}`). {_LOAD_NOTE}", "",
        "## Usage", "", code.replace("{path}", path), "",
        "`\"" + path + "\"` is this folder (or the Hub id it was pushed to). `hf-persona push` replaces this file",
        "with the full model card.", "",
    ])


def _copy_code(module, save_directory: Path) -> list[Path]:
    """Copy ``module``'s file and the sibling modules it imports relatively into ``save_directory``."""
    src = Path(module.__file__)
    todo, done = [src], []
    while todo:
        path = todo.pop()
        if path in done:
            continue
        done.append(path)
        for sibling in _REL_IMPORT_RE.findall(path.read_text(encoding="utf-8")):
            todo.append(path.with_name(f"{sibling}.py"))
    for path in done:
        target = save_directory / path.name
        if not target.is_file() or target.read_bytes() != path.read_bytes():
            shutil.copyfile(path, target)
    return [save_directory / p.name for p in done]


def write_usage_files(model, save_directory, processor_class=None) -> list[Path]:
    """Write what a user of plain transformers needs next to a saved model: ``README.md`` (usage;
    a README.md that this function did not write is left alone) and, for a model with a processor,
    ``processor_config.json`` with ``auto_map`` ``AutoProcessor`` plus the processor's code, exactly as
    ``processor.save_pretrained`` writes them (without re-saving the tokenizer). Returns the paths written.
    """
    import sys

    save_directory = Path(save_directory)
    written = []
    model_type = getattr(model.config, "model_type", "")
    if processor_class is not None:
        module = sys.modules[processor_class.__module__]
        written += _copy_code(module, save_directory)
        settings = processor_class.settings_from_config(model.config)
        data = {"processor_class": processor_class.__name__,
                "auto_map": {"AutoProcessor": f"{module.__name__.rsplit('.', 1)[-1]}.{processor_class.__name__}"},
                **settings}
        path = save_directory / PROCESSOR_CONFIG
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    readme = save_directory / "README.md"
    if not readme.is_file() or readme.read_text(encoding="utf-8", errors="replace").startswith(USAGE_MARKER):
        readme.write_text(usage_readme(model_type, save_directory.name or "."), encoding="utf-8")
        written.append(readme)
    return written


def add_usage_files_on_save(model_class, processor_class=None) -> None:
    """Make ``model_class.save_pretrained`` also call :func:`write_usage_files` (on the main process).

    Used by the model packages of hf_persona at import; idempotent. A failure to write the extra
    files is logged and never fails the save."""
    if getattr(model_class.__dict__.get("save_pretrained"), "_hf_persona_wrapped", False):
        return
    inner = model_class.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        result = inner(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            try:
                write_usage_files(self, save_directory, processor_class)
            except OSError as exc:  # the weights are saved; the README is a convenience
                logger.warning("could not write the usage files into %s: %s", save_directory, exc)
        return result

    save_pretrained.__wrapped__ = inner
    save_pretrained.__doc__ = inner.__doc__
    save_pretrained.__name__ = "save_pretrained"
    save_pretrained._hf_persona_wrapped = True
    model_class.save_pretrained = save_pretrained
