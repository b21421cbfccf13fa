"""Deprecated: moved to :mod:`hf_persona.data.pesconv` (data preparation lives in :mod:`hf_persona.data`).

The old names still import from here, with a ``DeprecationWarning``.
"""

from hf_persona.utils import moved_names

__getattr__ = moved_names(__name__, dict.fromkeys((
    "logger", "PROGRESS_NAME", "JSONL_NAME", "DATASET_DIR", "SHARD_DIR", "PESCONV_COLUMNS", "_extract_fn",
    "_extractor_fingerprint", "_file_digest", "seeker_queries", "personas_per_turn", "annotate_dialogues",
    "_read_rows", "annotate", "_finalise", "_summary", "load_pesconv_rows", "load_pesconv",
), "hf_persona.data.pesconv"))
