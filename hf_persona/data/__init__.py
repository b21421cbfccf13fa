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

#: embedded samples: personachat and esconv written for this project; msc the first 7 episodes of
#: Multi-Session Chat session 2 (validation), copied unmodified from ParlAI's public release
_SAMPLES = {"personachat": "personachat_sample.txt", "esconv": "esconv_sample.json", "msc": "msc_sample.txt"}


def sample_path(name: str) -> Path:
    """Path of the embedded sample in ``name``'s format (see ``_SAMPLES``)."""
    if name not in _SAMPLES:
        raise HFPersonaError(f"no embedded sample {name!r}; valid names: {', '.join(sorted(_SAMPLES))}")
    return Path(__file__).with_name("sample") / _SAMPLES[name]


__all__ = [
    "ESCONV_STRATEGIES", "FORMATS", "detect_format", "read_dialogues", "read_esconv", "read_msc",
    "read_personachat", "sample_candidates", "sample_path", "shared_data_dir", "shared_data_file", "split_by_dialogue",
    "dialogue_statistics",
]
