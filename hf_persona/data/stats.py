"""Summary statistics of a dialogue dataset (used by ``hf-persona data inspect`` and the demo)."""

from __future__ import annotations

PERSONA_COLUMNS = ("your_persona", "partner_persona", "speaker1_persona", "speaker2_persona")


def dialogue_statistics(dataset, fmt: str) -> dict:
    """Dialogues, turns (utterances) and persona sentences of a dataset from the readers."""
    turns = sum(len(u) for u in dataset["utterances"]) if len(dataset) else 0
    persona = 0
    for column in PERSONA_COLUMNS:
        if column in dataset.column_names:
            persona += sum(len(p) for p in dataset[column])
    return {"format": fmt, "dialogues": len(dataset), "turns": turns, "persona_sentences": persona}
