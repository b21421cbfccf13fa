"""Trained checkpoints that ship inside the package, loadable offline by name.

Each shipped checkpoint is a folder ``hf_persona/pretrained/<name>/`` holding only what differs
from its packaged base model (PEFT LoRA adapters, plus the small modules a model adds to its
backbone), a model card (``README.md``) rendered from the benchmark JSON that measured it, and
``manifest.json``::

    {"name": "pal", "model": "pal_causal", "base": "smollm2", "command": "...", "benchmark": "...",
     "figures": {...}}

Names resolve in this order (:func:`resolve`):

1. ``"pal"`` or ``"hf-persona/pal"`` -> the packaged folder, offline;
2. ``"hf-persona/<name>"`` not packaged -> ``huggingface_hub.snapshot_download`` (online);
3. anything else that is a local folder -> that folder.

:func:`from_pretrained` loads a shipped checkpoint onto its base model, ready for inference.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HFPersonaError, UnknownNameError

HERE = Path(__file__).resolve().parent
#: The Hub namespace the shipped checkpoints are pushed to (``hf-persona/<name>``).
HUB_NAMESPACE = "hf-persona"
#: Shipped checkpoint name -> the function (``module:function``, relative to this package) that
#: loads its folder. Each loader takes ``(folder, base=None, **kwargs)``; ``base`` is an already
#: loaded base model to attach the adapter to (one SmolLM2 or one MiniLM in memory for several).
LOADERS = {
    "pal": "causal:load_pal",
    "persona-extractor": "causal:load_persona_extractor",
    "cobert": "encoders:load_cobert",
    "receiver": "encoders:load_receiver",
}


def available() -> list[str]:
    """Names of the checkpoints packaged in this installation (each folder with a manifest)."""
    return sorted(name for name in LOADERS if (HERE / name.replace("-", "_") / "manifest.json").is_file())


def _short_name(name: str) -> str:
    name = str(name)
    if name.startswith(HUB_NAMESPACE + "/"):
        name = name[len(HUB_NAMESPACE) + 1:]
    return name.replace("_", "-")


def resolve(name: str) -> Path:
    """The local folder of a shipped checkpoint name, a ``hf-persona/<name>`` Hub id or a folder.

    Raises :class:`UnknownNameError` naming the packaged checkpoints when ``name`` is none of these."""
    short = _short_name(name)
    if short in LOADERS:
        folder = HERE / short.replace("-", "_")
        if (folder / "manifest.json").is_file():
            return folder
    if Path(str(name)).is_dir():
        return Path(str(name))
    if str(name).startswith(HUB_NAMESPACE + "/"):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(name)))
        except Exception as exc:  # offline, or no such repo
            raise HFPersonaError(
                f"{name!r} is not packaged in this installation and could not be downloaded from the Hub "
                f"({type(exc).__name__}: {exc}); packaged: {', '.join(available()) or 'none'}"
            ) from exc
    raise UnknownNameError("shipped checkpoint (or folder, or hf-persona/<name> Hub id)", name, available())


def manifest(name_or_folder) -> dict:
    """The ``manifest.json`` of a shipped checkpoint (name or folder)."""
    folder = resolve(name_or_folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise HFPersonaError(f"{folder}: not a shipped hf_persona checkpoint (no manifest.json)")
    return json.loads(path.read_text())


def from_pretrained(name: str, base=None, **kwargs):
    """Load a shipped checkpoint by name (``"pal"``, ``"persona-extractor"``, ``"cobert"``,
    ``"receiver"``, a ``hf-persona/<name>`` id or a folder) onto its base model.

    ``base``: an already loaded base model to attach the adapter to, so several checkpoints share
    one copy of SmolLM2 or MiniLM (see each loader)."""
    import importlib

    info = manifest(name)
    kind = _short_name(info.get("name", ""))
    if kind not in LOADERS:
        raise HFPersonaError(f"{resolve(name)}: manifest names an unknown checkpoint {info.get('name')!r}; "
                             f"expected one of {', '.join(LOADERS)}")
    module, function = LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return loader(resolve(name), base=base, **kwargs)
