"""Helpers shared by the training recipes: resuming and finding checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def last_checkpoint(output_dir) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (None when there is none).

    A checkpoint counts as complete when it holds ``trainer_state.json``, which the Trainer writes
    last; a folder left by a run killed mid-save is ignored, so resuming never starts from a
    half-written checkpoint.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    best = None
    for child in root.iterdir():
        if not child.is_dir() or not child.name.startswith("checkpoint-"):
            continue
        step = child.name.split("-", 1)[1]
        if not step.isdigit() or not (child / "trainer_state.json").is_file():
            continue
        if best is None or int(step) > best[0]:
            best = (int(step), child)
    return os.fspath(best[1]) if best else None
