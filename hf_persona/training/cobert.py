"""Training of CoBERT and the Bi-encoder baseline on PERSONA-CHAT-style data.

Examples: for every responder turn with a non-empty context, ``context`` = the utterances before
it (oldest first), ``persona`` = the responder's persona, ``response`` = the turn. Persona sentences
that occur verbatim in the response are removed (the leakage filter of the paper's code).

Training runs on :class:`transformers.Trainer` with a cross-entropy over in-batch negatives plus
optionally ``num_negatives`` sampled responses per row (paper: 1 positive to 15 negatives, which
batch size 16 gives with in-batch negatives alone). Each evaluation ranks held-back examples among
sampled distractors and reports Hits@1/20; the best checkpoint by that number is kept and loaded
at the end. Ranking evaluation is :mod:`hf_persona.evaluation.cobert`.

Public entry points: :func:`ranking_examples`, :func:`train_cobert`, :func:`load_selector`.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from ..errors import HFPersonaError
from ..utils import get_logger, moved_names, set_seed
from .configs import COBERT_MODEL_KINDS as MODEL_KINDS
from .configs import CoBERTTrainingConfig
from .recipe import RecipeResult, run_size, trainer_arguments, write_summary

logger = get_logger(__name__)


# ----------------------------------------------------------------------------------------------
# examples
# ----------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def ranking_examples(dataset, both_sides: bool = False, remove_persona_leakage: bool = True) -> list[dict]:
    """Turn PERSONA-CHAT dialogues (``read_personachat`` rows) into ranking examples.

    Each example is ``{"dialogue_id", "context": list[str], "persona": list[str], "response": str}``.
    With ``both_sides`` the partner's turns are added too (with ``partner_persona``), which doubles
    the training data. Turns without any preceding utterance are skipped and counted in the log.
    """
    required = {"utterances", "speakers", "your_persona"}
    columns = set(dataset.column_names) if hasattr(dataset, "column_names") else set(dataset[0]) if len(dataset) else set()
    if not required <= columns:
        raise HFPersonaError(f"ranking examples need PERSONA-CHAT rows with columns {sorted(required)}; "
                             f"got {sorted(columns)}")
    examples, skipped, leaked = [], 0, 0
    for row in dataset:
        utts, speakers = row["utterances"], row["speakers"]
        personas = {"you": row["your_persona"], "partner": row.get("partner_persona") or []}
        for i, (utt, who) in enumerate(zip(utts, speakers)):
            if who != "you" and not (both_sides and who == "partner"):
                continue
            context = [u for u in utts[:i] if u.strip()]
            if not context or not utt.strip():
                skipped += 1
                continue
            persona = list(personas[who])
            if remove_persona_leakage:
                kept = [p for p in persona if _norm(p) not in _norm(utt)]
                leaked += len(persona) - len(kept)
                persona = kept
            examples.append({"dialogue_id": row.get("dialogue_id", -1), "context": context, "persona": persona,
                             "response": utt})
    if skipped:
        logger.info("ranking_examples: skipped %d turns with no preceding context", skipped)
    if leaked:
        logger.info("ranking_examples: removed %d persona sentences that appear verbatim in the response", leaked)
    if not examples:
        raise HFPersonaError("no ranking examples: the data has no responder turn with a preceding context")
    return examples


def candidate_sets(examples: list[dict], num_candidates: int = 100, seed: int = 0, queries=None):
    """For each example: the gold response first, then ``num_candidates - 1`` distinct distractors
    sampled (seeded) from the responses of *other* dialogues in ``examples``.

    Returns ``(pool, indices)``: ``pool`` the unique response texts, ``indices[i]`` the pool indices
    of example ``i``'s candidates (gold at position 0). ``queries`` (positions in ``examples``)
    restricts the rows to those examples while still drawing distractors from all of them.
    """
    from ..data import sample_candidates

    if num_candidates < 2:
        raise HFPersonaError(f"num_candidates must be >= 2, got {num_candidates}")
    pool = list(dict.fromkeys(e["response"] for e in examples))
    position = {t: i for i, t in enumerate(pool)}
    by_dialogue: dict = {}
    for e in examples:
        by_dialogue.setdefault(e["dialogue_id"], set()).add(e["response"])
    indices = []
    for i in (range(len(examples)) if queries is None else queries):
        e = examples[i]
        exclude = by_dialogue[e["dialogue_id"]] | {e["response"]}
        try:
            distractors = sample_candidates(pool, num_candidates - 1, exclude=exclude, seed=seed * 1_000_003 + i)
        except HFPersonaError as err:
            raise HFPersonaError(f"cannot build {num_candidates} candidates per example: {err}; "
                                 f"use fewer candidates or more dialogues") from err
        indices.append([position[e["response"]]] + [position[t] for t in distractors])
    return pool, indices


def _max_candidates(examples) -> int:
    """Largest candidate count :func:`candidate_sets` can serve for every example."""
    pool = set(e["response"] for e in examples)
    by_dialogue: dict = {}
    for e in examples:
        by_dialogue.setdefault(e["dialogue_id"], set()).add(e["response"])
    return 1 + min(len(pool - responses) for responses in by_dialogue.values())


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------


def _classes(kind: str):
    from ..models.cobert import BiEncoderConfig, BiEncoderForResponseSelection, CoBERTConfig, CoBERTForResponseSelection

    if kind == "cobert":
        return CoBERTConfig, CoBERTForResponseSelection
    if kind == "biencoder":
        return BiEncoderConfig, BiEncoderForResponseSelection
    raise HFPersonaError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")


def build_model(kind: str = "cobert", backbone: str = "minilm", **config_kwargs):
    """A fresh CoBERT / Bi-encoder around the encoder ``backbone`` ("minilm", Hub id or path),
    with the backbone's tokenizer attached as ``model.tokenizer``."""
    from transformers import AutoTokenizer

    from ..backbones import resolve

    _, model_cls = _classes(kind)
    path = resolve(backbone)
    model = model_cls.from_encoder(path, **config_kwargs)
    model.tokenizer = AutoTokenizer.from_pretrained(path)
    return model


def load_selector(path):
    """Load a saved CoBERT or Bi-encoder (folder or Hub id) with its tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from ..models.cobert import BiEncoderConfig, CoBERTConfig

    text = str(path)
    if (text.startswith((".", "~")) or Path(text).is_absolute() or text.count("/") > 1) and not Path(text).expanduser().is_dir():
        raise HFPersonaError(f"model folder {text!r} does not exist; expected a folder saved by train cobert or a Hub id")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise HFPersonaError(f"cannot load a CoBERT/Bi-encoder config from {path!r}: {err}") from err
    kinds = {CoBERTConfig.model_type: "cobert", BiEncoderConfig.model_type: "biencoder"}
    if config.model_type not in kinds:
        raise HFPersonaError(f"{path!r} holds a {config.model_type!r} model; expected one of {sorted(kinds)}")
    _, model_cls = _classes(kinds[config.model_type])
    model = model_cls.from_pretrained(path)
    model.tokenizer = AutoTokenizer.from_pretrained(path)
    return model


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


class _ExampleDataset:
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


class RankingCollator:
    """Tokenizes a list of examples into model inputs and samples ``num_negatives`` extra responses
    per row from ``pool`` (never the row's own response)."""

    def __init__(self, model, tokenizer, pool=(), num_negatives: int = 0, seed: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.pool = list(dict.fromkeys(pool))
        self.num_negatives = num_negatives
        self.rng = random.Random(seed)
        if num_negatives and len(self.pool) <= num_negatives:
            raise HFPersonaError(f"num_negatives={num_negatives} needs more than that many distinct responses")

    def __call__(self, rows):
        from ..models.cobert import build_response_inputs

        batch = self.model.build_inputs([r["context"] for r in rows], [r["persona"] for r in rows],
                                        [r["response"] for r in rows], tokenizer=self.tokenizer)
        if self.num_negatives:
            negs = []
            for r in rows:
                picked = []
                while len(picked) < self.num_negatives:
                    t = self.pool[self.rng.randrange(len(self.pool))]
                    if t != r["response"] and t not in picked:
                        picked.append(t)
                negs.extend(picked)
            res = build_response_inputs(self.tokenizer, negs, self.model._limit(self.model.config.max_response_length))
            k = self.num_negatives
            batch["negative_input_ids"] = res["input_ids"].view(len(rows), k, -1)
            batch["negative_attention_mask"] = res["attention_mask"].view(len(rows), k, -1)
        return batch


def _make_trainer_class():
    from transformers import Trainer

    class RankingTrainer(Trainer):
        """Trainer whose evaluation ranks held-back examples among sampled distractors."""

        ranking_eval = None  # (examples, pool, indices)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if self.ranking_eval is None:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            start = time.time()
            from ..evaluation.cobert import score_candidate_sets

            examples, pool, indices = self.ranking_eval
            metrics = score_candidate_sets(self.model, examples, pool, indices, with_persona=True,
                                           batch_size=self.args.per_device_eval_batch_size)
            out = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
            out[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 3)
            self.log(out)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, out)
            return out

    return RankingTrainer


def _budget_callback(minutes):
    from .common import time_budget_callback

    return time_budget_callback(minutes)


def train_cobert(train_ds, config=None, /, eval_ds=None, **kwargs) -> RecipeResult:
    """Train CoBERT (``model="cobert"``) or the Bi-encoder (``model="biencoder"``) and return it.

    Args:
        train_ds: PERSONA-CHAT dialogues (``read_personachat``) or a list of ranking examples.
        config: a :class:`CoBERTTrainingConfig`, or the output folder (then ``kwargs`` are its fields;
            keywords that are not fields, such as ``num_hops``, are CoBERTConfig / BiEncoderConfig fields).
            Checkpoints go to ``output_dir/checkpoint-*``; the best model (by eval Hits@1) and its
            tokenizer to ``output_dir`` itself.
        eval_ds: held-back dialogues for the per-epoch (or per ``eval_steps``) evaluation; when None,
            the last 10% of the training dialogues are held back for it.

    With ``peft_config`` (explicit ``target_modules``, e.g. ``["query", "key", "value", "dense"]`` for
    BERT encoders) only the adapters train; ``merge_adapter=False`` keeps them: ``output_dir`` then holds
    the PEFT adapter plus ``config.json`` and the tokenizer, and the result's model is the ``PeftModel``
    (see :func:`hf_persona.pretrained.encoders.save_encoder_adapter`).

    Returns a :class:`~hf_persona.training.recipe.RecipeResult`: the run's summary (steps, losses,
    ``world_size``...; also written to ``output_dir/train_summary.json`` and ``json_out`` by the saving
    process, rank 0), its ``output_dir`` and the trained ``model`` (with its ``tokenizer``).
    """
    from transformers import TrainingArguments

    from .common import last_checkpoint, train_resumable

    fields = set(CoBERTTrainingConfig.field_names()) | set(CoBERTTrainingConfig.renamed)
    model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k not in fields}
    cfg = CoBERTTrainingConfig.build(config, **kwargs)
    if model_kwargs:
        cfg = CoBERTTrainingConfig.build(cfg, model_kwargs={**cfg.model_kwargs, **model_kwargs})
    output_dir, seed, batch_size, max_steps = cfg.output_dir, cfg.seed, cfg.batch_size, cfg.max_steps
    num_negatives, grad_accum, peft_config = cfg.num_negatives, cfg.gradient_accumulation_steps, cfg.peft_config
    set_seed(seed)
    if isinstance(train_ds, list):
        train_examples = train_ds
    else:
        if eval_ds is None and len(train_ds) >= 10:
            n_dev = max(1, len(train_ds) // 10)
            eval_ds = train_ds.select(range(len(train_ds) - n_dev, len(train_ds)))
            train_ds = train_ds.select(range(len(train_ds) - n_dev))
        train_examples = ranking_examples(train_ds, both_sides=cfg.both_sides)
    dev_examples = None
    if eval_ds is not None:
        dev_examples = eval_ds if isinstance(eval_ds, list) else ranking_examples(eval_ds)
        if cfg.eval_examples and len(dev_examples) > cfg.eval_examples:
            dev_examples = random.Random(seed).sample(dev_examples, cfg.eval_examples)
    if batch_size < 2 and not num_negatives:
        raise HFPersonaError("batch_size 1 without num_negatives leaves no negative candidates")

    net = build_model(cfg.model, cfg.backbone, **cfg.model_config())
    tokenizer = net.tokenizer
    train_net = net
    if peft_config is not None:
        from peft import get_peft_model

        train_net = get_peft_model(net, peft_config)
    collator = RankingCollator(net, tokenizer, pool=[e["response"] for e in train_examples],
                               num_negatives=num_negatives, seed=seed)
    steps_per_epoch = max(1, math.ceil(len(train_examples) / (batch_size * grad_accum)))
    eval_steps, epochs = cfg.eval_steps, cfg.epochs
    strategy = "steps" if eval_steps else "epoch"
    warmup_steps = cfg.warmup_steps
    if warmup_steps is None:
        warmup_steps = int(cfg.warmup_ratio * (max_steps if max_steps > 0 else steps_per_epoch * epochs))
    has_eval = dev_examples is not None and _max_candidates(dev_examples) >= 2
    args = trainer_arguments(
        TrainingArguments, output_dir, batch_size=batch_size, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=max_steps, epochs=epochs, warmup_steps=warmup_steps,
        logging_steps=max(1, min(50, steps_per_epoch // 5)), progress=cfg.progress,
        per_device_eval_batch_size=32,
        gradient_accumulation_steps=grad_accum,
        max_grad_norm=1.0,
        eval_strategy=strategy if has_eval else "no",
        save_strategy=strategy,
        eval_steps=eval_steps,
        save_steps=eval_steps,
        load_best_model_at_end=has_eval,
        metric_for_best_model="hits@1" if has_eval else None,
        greater_is_better=True,
        save_total_limit=cfg.save_total_limit,
        remove_unused_columns=False,
    )
    trainer_cls = _make_trainer_class()
    budget = _budget_callback(cfg.budget_minutes)
    trainer = trainer_cls(model=train_net, args=args, train_dataset=_ExampleDataset(train_examples),
                          eval_dataset=_ExampleDataset(dev_examples) if has_eval else None,
                          data_collator=collator, processing_class=tokenizer, callbacks=[budget])
    if has_eval:
        n_cand = min(cfg.eval_candidates, _max_candidates(dev_examples))
        if n_cand < cfg.eval_candidates:
            logger.warning("held-back set too small for %d candidates; evaluating with %d", cfg.eval_candidates,
                           n_cand)
        pool, indices = candidate_sets(dev_examples, n_cand, seed=seed)
        trainer.ranking_eval = (dev_examples, pool, indices)
    ckpt = last_checkpoint(output_dir) if cfg.resume else None
    if ckpt:
        logger.info("resuming from %s", ckpt)
    started = time.time()
    result = train_resumable(trainer, resume=cfg.resume)  # SIGTERM/SIGINT: checkpoint, then stop
    merge_adapter = cfg.merge_adapter
    if peft_config is not None and merge_adapter:
        trainer.model = trainer.model.merge_and_unload()
        trainer.model_wrapped = trainer.model
    trainer.save_model(str(output_dir))
    if peft_config is not None and not merge_adapter:
        # the adapter alone does not say how to rebuild the model around the encoder
        trainer.model.get_base_model().config.save_pretrained(str(output_dir))
    summary = {
        "model": cfg.model, "backbone": cfg.backbone, "train_examples": len(train_examples),
        "global_step": trainer.state.global_step, **run_size(args, trainer.state), "train_loss": result.training_loss,
        "train_seconds": round(time.time() - started, 1), "resumed_from": ckpt,
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_eval_hits@1": trainer.state.best_metric,
        "stopped_by_budget": budget.stopped_at is not None,
        "peft": None if peft_config is None else {"r": peft_config.r, "lora_alpha": peft_config.lora_alpha,
                                                  "target_modules": sorted(peft_config.target_modules or []),
                                                  "merged": bool(merge_adapter)},
    }
    write_summary(summary, Path(output_dir) / "train_summary.json", args)
    write_summary(summary, cfg.json_out, args)
    trained = trainer.model
    trained.tokenizer = tokenizer
    trained.train_summary = summary
    return RecipeResult(summary, output_dir, trained)



#: moved to hf_persona.evaluation.cobert (the old names still import, with a DeprecationWarning)
__getattr__ = moved_names(__name__, dict.fromkeys((
    "evaluate_ranking", "evaluate_cobert_file",
), "hf_persona.evaluation.cobert"))
