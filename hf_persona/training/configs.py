"""The settings of every training recipe, one dataclass each, in one place.

Each extends :class:`hf_persona.training.recipe.RecipeConfig` (the fields all recipes share) with the
recipe's own fields and defaults. A field's default is written here and nowhere else: the ``train_*``
functions take these configs (or build them from keyword arguments), and the options of
``hf-persona train <recipe>`` are generated from the fields' metadata
(:func:`hf_persona.commands.options.recipe_options`). This module imports only the standard library, so
the command line can build its options without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .recipe import (NONNEGATIVE_INT, POSITIVE_INT, UNIT_OPEN, RecipeConfig, Range, option)

COBERT_MODEL_KINDS = ("cobert", "biencoder")


@dataclass(kw_only=True)
class CoBERTTrainingConfig(RecipeConfig):
    """The settings of :func:`train_cobert` (and of ``hf-persona train cobert``, whose options are
    these fields): :class:`~hf_persona.training.recipe.RecipeConfig`'s plus CoBERT's own."""

    backbone: str = field(default="minilm", metadata=option(
        "'minilm' (offline), a Hub id or a local encoder folder.", kind="backbone"))
    model: str = field(default="cobert", metadata=option(
        "cobert (multi-hop co-attention) or biencoder (the baseline).", choices=COBERT_MODEL_KINDS))
    batch_size: int = field(default=16, metadata=option(
        "Rows per step; the other rows are in-batch negatives.", range=POSITIVE_INT))
    gradient_accumulation_steps: int = field(default=1, metadata=option(
        "Gradient accumulation steps.", flag="--grad-accum", range=POSITIVE_INT))
    warmup_steps: int | None = field(default=None, metadata=option(
        "Linear warm-up steps (default: --warmup-ratio of the training steps).", range=NONNEGATIVE_INT))
    warmup_ratio: float = field(default=0.1, metadata=option(
        "Share of the training steps to warm up over, when --warmup-steps is not given.", range=UNIT_OPEN))
    num_negatives: int = field(default=0, metadata=option(
        "Sampled negatives per row on top of the in-batch ones.", range=NONNEGATIVE_INT))
    num_hops: int | None = field(default=None, metadata=option(
        "CoBERT co-attention hops (default: the model's, 2).", range=Range(int, min=1, max=3)))
    hop1_pooling: str | None = field(default=None, metadata=option(
        "CoBERT hop-1 pooling (default: the model's, max).", flag="--pooling", choices=("max", "mean", "max+mean")))
    global_match: bool = field(default=False, metadata=option(
        "CoBERT: also match the mean-pooled states (adds the Bi-encoder's score; not in the paper)."))
    both_sides: bool = field(default=False, metadata=option(
        "Also train on the partner's turns with the partner persona."))
    eval_steps: int | None = field(default=None, metadata=option(
        "Evaluate/checkpoint every N steps (default: each epoch).", range=POSITIVE_INT))
    eval_examples: int = field(default=200, metadata=option(
        "Held-back examples ranked at each evaluation (0: all).", range=NONNEGATIVE_INT, cli=False))
    eval_candidates: int = field(default=20, metadata=option(
        "Candidates per held-back example (Hits@1/N).", range=Range(int, min=2), cli=False))
    save_total_limit: int = field(default=2, metadata=option("Checkpoints kept.", range=POSITIVE_INT, cli=False))
    peft_config: Any = field(default=None, metadata=option(
        "A peft.LoraConfig: only the adapters train.", cli=False))
    merge_adapter: bool = field(default=True, metadata=option(
        "With peft_config: merge the adapters into the encoder before the final save.", cli=False))
    model_kwargs: dict = field(default_factory=dict, metadata=option(
        "Further CoBERTConfig / BiEncoderConfig fields.", cli=False))

    def model_config(self) -> dict:
        """The CoBERTConfig / BiEncoderConfig fields this run sets."""
        chosen = {"num_hops": self.num_hops, "hop1_pooling": self.hop1_pooling,
                  "global_match": self.global_match or None} if self.model == "cobert" else {}
        return {**{k: v for k, v in chosen.items() if v is not None}, **self.model_kwargs}
