"""Dialogue data: readers for the research formats and the embedded sample.

See :mod:`hf_persona.data.readers` for the columns each reader returns.
"""

from pathlib import Path

from ..errors import HFPersonaError
from .readers import (
    ESCONV_STRATEGIES,
    FORMATS,
    detect_format,
    read_dialogues,
    read_esconv,
    read_msc,
    read_personachat,
    sample_candidates,
    shared_data_dir,
    shared_data_file,
    split_by_dialogue,
)
from .stats import dialogue_statistics

_SAMPLES = {"personachat": "personachat_sample.txt", "esconv": "esconv_sample.json"}


def sample_path(name: str) -> Path:
    """Path of the embedded sample (written by this project) in ``name``'s format."""
    if name not in _SAMPLES:
        raise HFPersonaError(f"no embedded sample {name!r}; valid names: {', '.join(sorted(_SAMPLES))}")
    return Path(__file__).with_name("sample") / _SAMPLES[name]


__all__ = [
    "ESCONV_STRATEGIES", "FORMATS", "detect_format", "read_dialogues", "read_esconv", "read_msc",
    "read_personachat", "sample_candidates", "sample_path", "shared_data_dir", "shared_data_file", "split_by_dialogue",
    "dialogue_statistics",
]
