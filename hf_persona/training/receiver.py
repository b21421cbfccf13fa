"""Training recipe for P2Bot's Receiver on ``transformers.Trainer``.

Each training example is one side of a dialogue: the utterances of one speaker and that speaker's
persona. Every step pairs the true persona with a distractor persona sampled from another dialogue
(the whole persona is replaced, as in the paper) and minimises ``max(0, m + c_Z - c_A) + β·|U|₁``.
The aggregation temperature τ is annealed linearly from ``tau_start`` to ``tau_end`` over the run by
:class:`TauAnnealingCallback`.

Evaluation during training ranks the true persona against ``eval_negatives`` fixed distractors per
dev example and reports ``hits_at_1`` (used to keep the best checkpoint) and the mean margin loss.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..errors import HFPersonaError
from ..evaluation.receiver_probe import shares_sentence
from ..utils import get_logger
from .common import last_checkpoint, time_budget_callback, train_resumable
from .configs import ReceiverTrainingConfig
from .recipe import RecipeResult, run_size, trainer_arguments, write_summary

logger = get_logger(__name__)

SIDES = ("you", "partner")


# ----------------------------------------------------------------------------- data
def dialogue_sides(dataset, sides: Sequence[str] = SIDES, min_utterances: int = 1, group=0) -> list[dict]:
    """Turn dialogues into (utterances of one speaker, that speaker's persona) examples.

    Accepts PERSONA-CHAT rows (``your_persona``, ``partner_persona``, ``utterances``, ``speakers``
    with ``"you"``/``"partner"``), MSC rows (``speaker1_persona``/``speaker2_persona`` with
    ``"Speaker 1"``/``"Speaker 2"``; ``sides`` then names those speakers or stays default to take
    both), or rows that already hold one side (``utterances`` and ``persona``). Empty utterances are
    left out; a side with fewer than ``min_utterances`` utterances or an empty persona is skipped and
    counted in the log. ``group`` is stored in every example: distractor personas are only drawn from
    examples of the same group (use one group per persona file, e.g. original vs revised).
    """
    columns = set(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
    examples, skipped = [], 0
    if {"utterances", "persona"} <= columns:
        mode = "single"
    elif {"your_persona", "partner_persona", "utterances", "speakers"} <= columns:
        mode = "personachat"
        bad = [s for s in sides if s not in SIDES]
        if bad:
            raise HFPersonaError(f"unknown side(s) {bad}; PERSONA-CHAT sides are {list(SIDES)}")
    elif {"speaker1_persona", "speaker2_persona", "utterances", "speakers"} <= columns:
        mode = "msc"
    else:
        raise HFPersonaError(
            "the Receiver needs dialogues with columns (utterances, speakers, your_persona, partner_persona) "
            f"[PERSONA-CHAT], (utterances, speakers, speaker1_persona, speaker2_persona) [MSC] or "
            f"(utterances, persona); got columns {sorted(columns)}"
        )
    for row_index, row in enumerate(dataset):
        if mode == "single":
            pairs = [("", list(row["utterances"]), list(row["persona"]))]
        elif mode == "personachat":
            persona_of = {"you": row["your_persona"], "partner": row["partner_persona"]}
            pairs = [
                (side, [u for u, s in zip(row["utterances"], row["speakers"]) if s == side], list(persona_of[side]))
                for side in sides
            ]
        else:
            persona_of = {"Speaker 1": row["speaker1_persona"], "Speaker 2": row["speaker2_persona"]}
            pairs = [
                (side, [u for u, s in zip(row["utterances"], row["speakers"]) if s == side], list(persona_of[side]))
                for side in ("Speaker 1", "Speaker 2")
            ]
        for side, utts, persona in pairs:
            utts = [u for u in utts if u and u.strip()]
            persona = [p for p in persona if p and p.strip()]
            if len(utts) < min_utterances or not persona:
                skipped += 1
                continue
            examples.append(
                {
                    "dialogue_id": row.get("dialogue_id", row_index),
                    "group": group,
                    "side": side,
                    "utterances": utts,
                    "persona": persona,
                }
            )
    if skipped:
        logger.info("receiver data: skipped %d dialogue side(s) with no utterances or no persona", skipped)
    if not examples:
        raise HFPersonaError("the Receiver data has no usable (utterances, persona) example")
    return examples


def grouped_sides(datasets, sides: Sequence[str] = SIDES) -> list[dict]:
    """:func:`dialogue_sides` of one dataset, or of a list of datasets with one distractor group each."""
    if isinstance(datasets, (list, tuple)):
        if not datasets:
            raise HFPersonaError("an empty list of datasets was given to the Receiver")
        return [e for g, ds in enumerate(datasets) for e in dialogue_sides(ds, sides, group=g)]
    return dialogue_sides(datasets, sides)


class Tokenized:
    """Token ids of every distinct sentence, computed once."""

    def __init__(self, tokenizer, max_utterance_length: int, max_persona_length: int):
        self.tokenizer = tokenizer
        self.max_len = {"utterance": max_utterance_length, "persona": max_persona_length}
        self.cache: dict[tuple[str, str], list[int]] = {}

    def add(self, texts: Iterable[str], kind: str) -> None:
        new = [t for t in dict.fromkeys(texts) if (kind, t) not in self.cache]
        if not new:
            return
        enc = self.tokenizer(new, truncation=True, max_length=self.max_len[kind])
        for text, ids in zip(new, enc["input_ids"]):
            self.cache[(kind, text)] = ids

    def __call__(self, text: str, kind: str) -> list[int]:
        return self.cache[(kind, text)]


def fewest_distractors(examples: Sequence[dict]) -> tuple[int, dict]:
    """(n, example): the example with the fewest possible distractors, and how many it has.

    A possible distractor is another persona of the example's group that shares no sentence with its own.
    """
    first: dict = {}  # (group, persona) -> the first example holding it
    for e in examples:
        first.setdefault((e.get("group", 0), frozenset(e["persona"])), e)
    fewest = (0, {})
    for i, ((group, true), e) in enumerate(first.items()):
        n = sum(1 for g, key in first if g == group and not shares_sentence(key, true))
        if i == 0 or n < fewest[0]:
            fewest = (n, e)
    return fewest


class ReceiverPairDataset(torch.utils.data.Dataset):
    """(utterances, true persona, distractor personas) items.

    ``fixed=False`` (training): a fresh distractor is drawn every time an item is read.
    ``fixed=True`` (evaluation): the distractors of each item are drawn once from ``seed``.
    ``max_utterances`` (training only): read a random subset of at most this many of a side's utterances
    each time, a cheaper stochastic estimate of the mean over utterances.
    Distractors are other personas of the same pool (and the same ``group``, e.g. the original or the
    revised persona file) that differ from the true one as a *set* of sentences: PERSONA-CHAT reuses
    personas across dialogues in shuffled order, and a reordered copy is not a distractor. Unless
    ``allow_shared_sentences``, a distractor also shares no sentence with the true persona: PERSONA-CHAT
    holds several versions of one persona (a 4-sentence and a 5-sentence one sharing four sentences,
    say), and such a version is the same person, not a negative (see :func:`shares_sentence`).
    """

    def __init__(self, examples: list[dict], tokenized: Tokenized, num_negatives: int = 1, seed: int = 0,
                 fixed: bool = False, max_utterances: int | None = None, allow_shared_sentences: bool = False):
        if num_negatives < 0:
            raise HFPersonaError(f"num_negatives must be >= 0 (0: in-batch distractors), got {num_negatives}")
        if max_utterances is not None and max_utterances < 1:
            raise HFPersonaError(f"max_utterances must be >= 1 or None, got {max_utterances}")
        self.examples = examples
        self.tok = tokenized
        self.num_negatives = num_negatives
        self.max_utterances = max_utterances
        self.pools: dict = {}
        for e in examples:
            self.pools.setdefault(e.get("group", 0), {}).setdefault(frozenset(e["persona"]), tuple(e["persona"]))
        self.pools = {g: list(p.items()) for g, p in self.pools.items()}
        self.allow_shared_sentences = allow_shared_sentences
        smallest = min(len(p) for p in self.pools.values())
        if smallest < num_negatives + 1:
            raise HFPersonaError(
                f"need at least {num_negatives + 1} distinct personas to sample {num_negatives} distractor(s), "
                f"the data has {smallest}"
            )
        if num_negatives and not allow_shared_sentences:
            eligible, e = fewest_distractors(examples)
            if eligible < num_negatives:
                raise HFPersonaError(
                    f"a side of dialogue {e.get('dialogue_id')} has only {eligible} distractor persona(s) that "
                    f"share no sentence with its own, {num_negatives} needed; use more dialogues, fewer "
                    "negatives, or allow_shared_sentences=True"
                )
        for e in examples:
            tokenized.add(e["utterances"], "utterance")
            tokenized.add(e["persona"], "persona")
        self.rng = random.Random(seed)
        self.fixed = None
        if fixed:
            self.fixed = [self._draw(e, random.Random(seed * 1_000_003 + i)) for i, e in enumerate(examples)]

    def _draw(self, example, rng) -> list[tuple]:
        if self.num_negatives == 0:
            return []
        true = frozenset(example["persona"])
        pool = self.pools[example.get("group", 0)]
        picked, keys = [], set()
        while len(picked) < self.num_negatives:
            key, persona = pool[rng.randrange(len(pool))]
            if key in keys or key == true or (not self.allow_shared_sentences and shares_sentence(key, true)):
                continue
            picked.append(persona)
            keys.add(key)
        return picked

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        e = self.examples[i]
        negs = self.fixed[i] if self.fixed is not None else self._draw(e, self.rng)
        utterances = e["utterances"]
        if self.max_utterances is not None and len(utterances) > self.max_utterances:
            # a random subset (in dialogue order) of the side's utterances, drawn afresh every read
            keep = sorted(self.rng.sample(range(len(utterances)), self.max_utterances))
            utterances = [utterances[j] for j in keep]
        return {
            "utterances": [self.tok(u, "utterance") for u in utterances],
            "persona": [self.tok(p, "persona") for p in e["persona"]],
            "negatives": [[self.tok(p, "persona") for p in neg] for neg in negs],
            "key": (e.get("group", 0), frozenset(e["persona"])),
        }


@dataclass
class ReceiverCollator:
    """Pads (utterances, persona, negatives) items into the Receiver's [batch, sentences, tokens] tensors.

    In-batch distractors (items without sampled negatives): another item's persona counts when it is
    from the same group, differs as a set and, unless ``allow_shared_sentences``, shares no sentence.
    """

    pad_token_id: int = 0
    allow_shared_sentences: bool = False

    def _pad(self, groups: list[list[list[int]]]):
        n = max([len(g) for g in groups] + [1])
        t = max([len(s) for g in groups for s in g] + [1])
        ids = torch.full((len(groups), n, t), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(groups), n, t), dtype=torch.long)
        for b, g in enumerate(groups):
            for j, s in enumerate(g):
                ids[b, j, : len(s)] = torch.tensor(s, dtype=torch.long)
                mask[b, j, : len(s)] = 1
        return ids, mask

    def __call__(self, items: list[dict]) -> dict:
        u_ids, u_mask = self._pad([it["utterances"] for it in items])
        p_ids, p_mask = self._pad([it["persona"] for it in items])
        batch = {
            "utterance_input_ids": u_ids,
            "utterance_attention_mask": u_mask,
            "persona_input_ids": p_ids,
            "persona_attention_mask": p_mask,
        }
        if items and items[0].get("negatives"):
            k = len(items[0]["negatives"])
            flat = [neg for it in items for neg in it["negatives"]]
            n_ids, n_mask = self._pad(flat)
            batch["negative_persona_input_ids"] = n_ids.reshape(len(items), k, *n_ids.shape[1:])
            batch["negative_persona_attention_mask"] = n_mask.reshape(len(items), k, *n_mask.shape[1:])
        elif items and "key" in items[0]:
            keys = [it["key"] for it in items]
            if self.allow_shared_sentences:
                mask = [[a[0] == b[0] and a[1] != b[1] for b in keys] for a in keys]
            else:
                mask = [[a[0] == b[0] and not shares_sentence(a[1], b[1]) for b in keys] for a in keys]
            batch["in_batch_negative_mask"] = torch.tensor(mask, dtype=torch.bool)
        return batch


def freeze_lower_layers(model, num_layers: int) -> int:
    """Freeze the embeddings and the first ``num_layers`` transformer layers of the Receiver's encoder(s).

    Nothing below them needs gradients, so the backward pass stops at the first trainable layer.
    Works for BERT-style encoders (``embeddings.*``, ``encoder.layer.<i>.*``); returns the number of
    frozen parameter tensors.
    """
    import re

    if num_layers <= 0:
        return 0
    pattern = re.compile(r"(?:^|\.)layer\.(\d+)\.")
    frozen, layers_seen = 0, 0
    for encoder in (model.encoder, model.persona_encoder):
        if encoder is None:
            continue
        for name, param in encoder.named_parameters():
            match = pattern.search(name)
            if match:
                layers_seen += 1
            if name.startswith("embeddings.") or (match and int(match.group(1)) < num_layers):
                param.requires_grad_(False)
                frozen += 1
    if not layers_seen:
        raise HFPersonaError("freeze_layers needs a BERT-style encoder with `encoder.layer.<i>` modules")
    n_layers = getattr(model.config.encoder, "num_hidden_layers", None)
    if n_layers is not None and num_layers >= n_layers:
        raise HFPersonaError(f"freeze_layers={num_layers} would freeze all {n_layers} layers of the encoder")
    return frozen


# ----------------------------------------------------------------------------- τ annealing
def _find_receiver(model):
    for module in model.modules():
        if getattr(module, "_is_p2bot_receiver", False):
            return module
    raise HFPersonaError(f"no Receiver model found inside {type(model).__name__}")


def linear_tau(step: int, total_steps: int, start: float, end: float) -> float:
    """τ for the optimizer step ``step`` (0-based) of ``total_steps``: ``start`` at the first step,
    ``end`` at the last one, linear in between (and ``end`` after it)."""
    if total_steps <= 1:
        return end
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return start + (end - start) * frac


class TauAnnealingCallback(TrainerCallback):
    """Anneal the Receiver's aggregation temperature τ linearly over training (paper: 10 → 0.5).

    τ is set from ``state.global_step`` at the start of training (so a resumed run continues the
    schedule) and before every optimizer step; at the end τ is ``end`` and stored in the config,
    so the saved model scores with it. ``start``/``end`` default to the model config's
    ``tau_start``/``tau_end``. Works through a PEFT wrapper.
    """

    def __init__(self, start: float | None = None, end: float | None = None):
        for name, value in (("start", start), ("end", end)):
            if value is not None and not value > 0:
                raise ValueError(f"TauAnnealingCallback: {name} must be > 0, got {value}")
        self.start, self.end = start, end

    def _bounds(self, receiver):
        start = self.start if self.start is not None else receiver.config.tau_start
        end = self.end if self.end is not None else receiver.config.tau_end
        return start, end

    def _apply(self, state, model):
        if model is None:
            return
        receiver = _find_receiver(model)
        start, end = self._bounds(receiver)
        receiver.set_tau(linear_tau(state.global_step, state.max_steps, start, end))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(state, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._apply(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            receiver = _find_receiver(model)
            receiver.set_tau(self._bounds(receiver)[1])


# ----------------------------------------------------------------------------- trainer
class ReceiverTrainer(Trainer):
    """Trainer whose evaluation ranks the true persona against fixed distractors.

    ``prediction_step`` returns the scores ``[true, distractor_1..K]`` per example, and
    :func:`receiver_metrics` turns them into ``hits_at_1`` (true persona strictly above every
    distractor) and ``mean_margin``. Evaluation always runs at ``eval_tau`` (the final τ the model
    is saved with), so checkpoints from different points of the τ schedule compare fairly.
    """

    def __init__(self, *args, eval_tau: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_tau = eval_tau

    def log(self, logs, *args, **kwargs):
        # Record the τ in force with every log entry (it lands in trainer_state.json's log_history).
        logs = dict(logs)
        logs["tau"] = round(_find_receiver(self.model).tau, 6)
        return super().log(logs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        if self.eval_tau is None:
            return super().evaluate(*args, **kwargs)
        receiver = _find_receiver(self.model)
        current = receiver.tau
        receiver.set_tau(self.eval_tau)
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            receiver.set_tau(current)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            out = model(**inputs, return_dict=True)
        loss = out.loss.detach() if out.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        logits = torch.cat([out.scores.unsqueeze(1), out.negative_scores], dim=1).detach()
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return loss, logits, labels


def receiver_metrics(eval_pred) -> dict:
    scores = torch.as_tensor(eval_pred.predictions)
    pos, neg = scores[:, 0], scores[:, 1:]
    return {
        "hits_at_1": float((pos > neg.max(dim=1).values).float().mean()),
        "mean_margin": float((pos.unsqueeze(1) - neg).mean()),
    }


def _atomic_save(model, tokenizer, output_dir: Path) -> None:
    """Save model + tokenizer to a temporary folder, then move each file into place with os.replace."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / ".final-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        os.replace(f, output_dir / f.name)
    tmp.rmdir()


def train_receiver(train_ds, config=None, /, eval_ds=None, **kwargs) -> RecipeResult:
    """Train a Receiver and save it (safetensors + tokenizer) to the config's ``output_dir``.

    Args:
        train_ds / eval_ds: dialogues (see :func:`dialogue_sides` for accepted columns), or a list of
            such datasets (e.g. original and revised PERSONA-CHAT): distractors are then drawn within
            each dataset, never across, so a revised copy of the true persona is never a "negative".
        config: a :class:`~hf_persona.training.configs.ReceiverTrainingConfig`, or the output folder (then
            ``kwargs`` are its fields; the older ``num_train_epochs``, ``time_budget_minutes`` and
            ``disable_tqdm`` still work, with a ``DeprecationWarning``; keywords that are no field are
            further ``TrainingArguments`` fields).

    The fields, in short: ``backbone`` is ``"minilm"`` (packaged all-MiniLM-L6-v2), a Hub id, a local
    encoder folder, or a folder holding a saved Receiver (training then continues from it);
    ``max_steps > 0`` wins over ``epochs``. ``share_encoders``: one encoder with segment ids (authors'
    code) or two encoders (paper). ``loss_type``: ``"margin"`` (the paper's hinge) or ``"softmax"``
    (cross-entropy of the true persona among the distractors at ``loss_temperature``); see ReceiverConfig.
    ``negatives``: ``"sampled"`` (the paper: one distractor persona drawn per example and step) or
    ``"in_batch"`` (every other persona of the batch is a distractor: ``batch_size - 1`` of them at no
    extra encoding cost; the hinge is averaged over them). ``allow_shared_sentences`` lets a distractor
    persona (sampled, in-batch or for ``eval_ds``) share sentences with the true one; by default such
    personas are versions of the same persona in PERSONA-CHAT, not negatives (:func:`shares_sentence`).
    ``eval_negatives``: distractors per dev example for ``hits_at_1`` during training (fewer, with a
    warning, when a small dev set leaves some side fewer personas that share no sentence with its own).
    ``eval_steps`` / ``save_steps``: evaluate and checkpoint every N steps (default: 4 times per run); the
    best ``hits_at_1`` checkpoint is loaded at the end when ``eval_ds`` is given. ``resume`` continues from
    the newest intact checkpoint (:func:`hf_persona.training.common.train_resumable`: corrupt checkpoints
    are set aside, SIGTERM/SIGINT save a checkpoint first, ``train_loss`` covers the whole run).
    ``peft_config``: an optional ``peft.LoraConfig``; the adapters are merged before the final save unless
    ``merge_adapter`` is False: ``output_dir`` then holds the PEFT adapter plus ``config.json`` and the
    tokenizer, and the result's model is the ``PeftModel`` (see
    :func:`hf_persona.pretrained.encoders.save_encoder_adapter`). ``budget_minutes``: stop early (saving a
    checkpoint) when training has run this long; the τ schedule still spans ``max_steps``, so pick
    ``max_steps`` to fit the budget.

    Returns:
        a :class:`~hf_persona.training.recipe.RecipeResult`: the metrics (training, and with ``eval_ds``
        the final ``eval_*`` ones; also written to ``output_dir/receiver_train_results.json`` and
        ``json_out``), ``output_dir`` and ``model``, the trained :class:`ReceiverModel` (τ = ``tau_end``).
    """
    from transformers import AutoTokenizer

    from ..backbones import resolve
    from ..models.receiver import ReceiverModel
    from ..utils import set_seed

    known = set(ReceiverTrainingConfig.field_names()) | set(ReceiverTrainingConfig.renamed)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in known}  # further TrainingArguments fields
    cfg = ReceiverTrainingConfig.build(config, **kwargs)
    if extra:
        cfg = ReceiverTrainingConfig.build(cfg, training_args={**cfg.training_args, **extra})
    unknown = sorted(set(cfg.training_args) - {f.name for f in dataclasses.fields(TrainingArguments)})
    if unknown:
        raise HFPersonaError(f"unknown training argument(s) {unknown} for the Receiver recipe")
    seed, batch_size, tau_start, tau_end = cfg.seed, cfg.batch_size, cfg.tau_start, cfg.tau_end
    peft_config, shared_ok = cfg.peft_config, cfg.allow_shared_sentences
    set_seed(seed)
    output_dir = Path(cfg.output_dir)
    source = resolve(cfg.backbone)
    is_receiver = (Path(source) / "config.json").is_file() and '"p2bot_receiver"' in (Path(source) / "config.json").read_text()
    loss = {"margin": float(cfg.margin), "l1_weight": float(cfg.l1_weight), "loss_type": cfg.loss_type,
            "loss_temperature": float(cfg.loss_temperature), "tau_start": float(tau_start), "tau_end": float(tau_end)}
    if is_receiver:
        model = ReceiverModel.from_pretrained(source)
        for key, value in loss.items():
            setattr(model.config, key, value)
    else:
        model = ReceiverModel.from_encoder_pretrained(
            source, share_encoders=cfg.share_encoders, tau=tau_end, max_utterance_length=cfg.max_utterance_length,
            max_persona_length=cfg.max_persona_length, **loss)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.tokenizer = tokenizer

    tokenized = Tokenized(tokenizer, model.config.max_utterance_length, model.config.max_persona_length)
    train_set = ReceiverPairDataset(
        grouped_sides(train_ds, cfg.sides), tokenized, num_negatives=1 if cfg.negatives == "sampled" else 0,
        seed=seed, max_utterances=cfg.max_train_utterances, allow_shared_sentences=shared_ok,
    )
    if cfg.freeze_layers:
        freeze_lower_layers(model, cfg.freeze_layers)
    eval_set = None
    if eval_ds is not None:
        eval_examples = grouped_sides(eval_ds, cfg.sides)
        eval_negatives = cfg.eval_negatives
        if not shared_ok:
            available, _ = fewest_distractors(eval_examples)
            if 0 < available < eval_negatives:
                logger.warning("the dev set leaves some sides only %d distractor persona(s) that share no sentence "
                               "with their own: dev hits_at_1 uses %d instead of %d", available, available,
                               eval_negatives)
                eval_negatives = available
        eval_set = ReceiverPairDataset(eval_examples, tokenized, num_negatives=eval_negatives, seed=seed + 1,
                                       fixed=True, allow_shared_sentences=shared_ok)

    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.epochs)
    eval_steps = cfg.eval_steps or max(1, total // 4)
    save_steps = cfg.save_steps or eval_steps

    train_model = model
    if peft_config is not None:
        from peft import get_peft_model

        train_model = get_peft_model(model, peft_config)

    has_eval = eval_set is not None
    specific = dict(
        per_device_eval_batch_size=batch_size, eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None, load_best_model_at_end=has_eval and peft_config is None,
        metric_for_best_model="hits_at_1" if has_eval else None, greater_is_better=True if has_eval else None,
        remove_unused_columns=False,
    )
    args = trainer_arguments(
        TrainingArguments, output_dir, batch_size=batch_size, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=cfg.max_steps, epochs=cfg.epochs, logging_steps=cfg.logging_steps, save_steps=save_steps,
        warmup_steps=cfg.warmup_steps or int(round(cfg.warmup_ratio * total)), progress=cfg.progress,
        **{**specific, **cfg.training_args},
    )
    budget = [time_budget_callback(cfg.budget_minutes)] if cfg.budget_minutes else []
    trainer = ReceiverTrainer(
        model=train_model, args=args, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
        data_collator=ReceiverCollator(pad_token_id=tokenizer.pad_token_id or 0, allow_shared_sentences=shared_ok),
        compute_metrics=receiver_metrics if has_eval else None,
        callbacks=[TauAnnealingCallback(tau_start, tau_end), *budget], eval_tau=tau_end,
    )
    checkpoint = last_checkpoint(output_dir) if cfg.resume else None
    if checkpoint:
        logger.info("resuming Receiver training from %s", checkpoint)
    # SIGTERM/SIGINT save a checkpoint first; after a resume train_loss is the whole run's
    result = train_resumable(trainer, resume=cfg.resume)
    metrics = dict(result.metrics)
    metrics["global_step"] = trainer.state.global_step
    metrics.update(run_size(args, trainer.state))
    metrics["resumed_from"] = checkpoint
    if has_eval:
        if trainer.state.best_metric is not None and args.load_best_model_at_end:
            metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
            metrics["eval_hits_at_1"] = trainer.state.best_metric
        else:
            metrics.update(trainer.evaluate())
    if peft_config is not None and cfg.merge_adapter:
        model = train_model.merge_and_unload()
    model.set_tau(tau_end)
    model.tokenizer = tokenizer
    if peft_config is not None and not cfg.merge_adapter:
        if args.should_save:  # rank 0 of a multi-process run writes the folder
            _atomic_save(train_model, tokenizer, output_dir)  # the adapter only
            model.config.save_pretrained(output_dir)  # with the Receiver config (τ, lengths) to rebuild it
        model = train_model
    elif args.should_save:
        _atomic_save(model, tokenizer, output_dir)
    metrics["train_examples"] = len(train_set)
    metrics["eval_examples"] = len(eval_set) if has_eval else 0
    write_summary(metrics, output_dir / "receiver_train_results.json", args)
    return RecipeResult(write_summary(metrics, cfg.json_out, args), output_dir, model)


__all__ = [
    "ReceiverCollator",
    "ReceiverPairDataset",
    "ReceiverTrainer",
    "TauAnnealingCallback",
    "Tokenized",
    "dialogue_sides",
    "freeze_lower_layers",
    "grouped_sides",
    "linear_tau",
    "receiver_metrics",
    "train_receiver",
]
