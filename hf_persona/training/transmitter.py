"""Supervised training of the P2Bot Transmitter (paper section 3.1) on ``transformers.Trainer``.

Each responder turn of a PERSONA-CHAT dialogue gives one example (persona, history, response) and
one sampled distractor response from another dialogue; the batch holds both sequences, the LM loss
reads the real response only and the NUP head learns real (1) versus distractor (0).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from ..errors import HFPersonaError
from ..utils import get_logger
from .configs import P2BOT_LEARNING_RATE as PAPER_LEARNING_RATE  # noqa: F401 (its older home)
from .configs import TransmitterTrainingConfig
from .recipe import RecipeResult, run_size, trainer_arguments, write_summary

logger = get_logger(__name__)


def _check_personachat(dataset) -> None:
    needed = {"your_persona", "partner_persona", "utterances", "speakers"}
    missing = needed - set(dataset.column_names)
    if missing:
        raise HFPersonaError(
            f"the Transmitter trains on PERSONA-CHAT rows; the dataset lacks columns {sorted(missing)} "
            f"(has {dataset.column_names}); read it with hf_persona.data.read_personachat"
        )


def dialogue_examples(dataset, both_sides: bool = True, max_history: int | None = None) -> list:
    """(persona, history, response) for every turn of every dialogue.

    ``both_sides`` also uses the partner's turns (answered with the partner's persona), which
    self-play needs since both interlocutors are Transmitters. ``history`` ends with the utterance
    being answered; ``max_history`` keeps only the last turns.
    """
    _check_personachat(dataset)
    out = []
    for row in dataset:
        personas = {"you": list(row["your_persona"]), "partner": list(row["partner_persona"])}
        utts, speakers = list(row["utterances"]), list(row["speakers"])
        for i, (utt, spk) in enumerate(zip(utts, speakers)):
            if spk not in personas:
                raise HFPersonaError(f"dialogue {row.get('dialogue_id')}: unknown speaker {spk!r}")
            if spk == "partner" and not both_sides:
                continue
            if not utt.strip():
                continue
            history = utts[:i]
            if max_history is not None:
                history = history[-max_history:] if max_history > 0 else []
            out.append({"persona": personas[spk], "history": history, "response": utt,
                        "dialogue_id": row.get("dialogue_id", -1), "side": spk})
    return out


def add_distractors(examples: list, seed: int = 0) -> list:
    """Give each example one ``distractor``: a response drawn from a different dialogue."""
    rng = random.Random(seed)
    n = len(examples)
    if len({e["dialogue_id"] for e in examples}) < 2:
        raise HFPersonaError("sampling distractors needs at least two dialogues")
    out = []
    for ex in examples:
        while True:
            other = examples[rng.randrange(n)]
            if other["dialogue_id"] != ex["dialogue_id"] and other["response"] != ex["response"]:
                break
        out.append({**ex, "distractor": other["response"]})
    return out


class TransmitterCollator:
    """Turns examples with a ``distractor`` into one padded batch of 2·B sequences.

    Row 2i is the real response (LM labels, ``nup_labels`` 1), row 2i+1 the distractor (no LM
    labels, ``nup_labels`` 0).
    """

    def __init__(self, tokenizer, max_context_tokens: int = 256, max_response_tokens: int = 32):
        from hf_persona.models.transmitter import special_token_ids

        self.tokenizer = tokenizer
        self.ids = special_token_ids(tokenizer)
        self.max_context_tokens = max_context_tokens
        self.max_response_tokens = max_response_tokens

    def __call__(self, features):
        from hf_persona.models.transmitter import build_example, pad_batch

        examples = []
        for f in features:
            gold = build_example(self.tokenizer, f["persona"], f["history"], f["response"],
                                 self.max_context_tokens, self.max_response_tokens)
            gold["nup_label"] = 1
            examples.append(gold)
            if f.get("distractor") is not None:
                neg = build_example(self.tokenizer, f["persona"], f["history"], f["distractor"],
                                    self.max_context_tokens, self.max_response_tokens, with_labels=False)
                neg["nup_label"] = 0
                examples.append(neg)
        batch = pad_batch(examples, self.ids["pad"])
        batch["return_logits"] = False  # the LM head runs on labelled positions only
        return batch


def register_transmitter_auto_classes() -> None:
    """Register the Transmitter with AutoConfig / AutoModelForCausalLM in this process."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from hf_persona.models.transmitter import TransmitterConfig, TransmitterForDialogue

    AutoConfig.register(TransmitterConfig.model_type, TransmitterConfig, exist_ok=True)
    AutoModelForCausalLM.register(TransmitterConfig, TransmitterForDialogue, exist_ok=True)


def load_transmitter(name_or_path, **config_kwargs):
    """(model, tokenizer) from a trained Transmitter folder, or warm-started from a backbone.

    A folder whose ``config.json`` says ``model_type: p2bot_transmitter`` loads as is; anything
    else (``minilm``, ``gpt2``, ``microsoft/DialoGPT-small``, a BERT folder) is a backbone to
    warm-start, with ``config_kwargs`` passed to ``TransmitterConfig``.
    """
    from transformers import AutoTokenizer

    from hf_persona.backbones import resolve
    from hf_persona.models.transmitter import TransmitterForDialogue, prepare_tokenizer

    register_transmitter_auto_classes()
    path = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tokenizer)
    if _is_transmitter_dir(path):
        if config_kwargs:
            raise HFPersonaError(f"{path} is a trained Transmitter; options {sorted(config_kwargs)} "
                                 "only apply when warm-starting from a backbone")
        model = TransmitterForDialogue.from_pretrained(path)
        model.adapt_to_tokenizer(tokenizer)
    else:
        model = TransmitterForDialogue.from_backbone(path, tokenizer=tokenizer, **config_kwargs)
    return model, tokenizer


def training_dialogues(train_data=None, dev_from: int | None = None):
    """PERSONA-CHAT dialogues to train on: a dataset as given, or read from a path (the embedded
    sample when None), keeping only the dialogues before ``dev_from``."""
    from hf_persona.data import read_personachat, sample_path

    if train_data is None:
        train_data = sample_path("personachat")
    if not isinstance(train_data, (str, Path)):
        return train_data
    dataset = read_personachat(train_data)
    if dev_from is not None and len(dataset) > dev_from:
        dataset = dataset.select(range(dev_from))
    return dataset


def train_transmitter(config=None, /, train_data=None, **kwargs) -> RecipeResult:
    """Supervised Transmitter training; returns a :class:`~hf_persona.training.recipe.RecipeResult`
    (the summary, also saved to ``json_out``; the model is in ``output_dir``).

    ``config``: a :class:`~hf_persona.training.configs.TransmitterTrainingConfig`, or the output folder
    (then ``kwargs`` are its fields). ``train_data``: a PERSONA-CHAT file path or a ``datasets.Dataset``
    of ``read_personachat`` rows; with a path, only its first ``dev_from`` dialogues train (the rest stay
    for evaluation). ``lora`` > 0 trains LoRA adapters of that rank on every linear layer of the backbone
    (alpha 2·rank) with the NUP head fully trained, and saves the merged model: a plain Transmitter
    checkpoint that loads like a fully fine-tuned one. The adapter is also kept, in
    ``output_dir/adapter`` (it applies to the warm start of this run; the new special-token rows and
    the NUP head live outside the backbone, so the merged folder is the one to load).
    Resumes from the newest intact checkpoint in ``output_dir`` unless ``resume`` is false
    (:func:`hf_persona.training.common.train_resumable`: SIGTERM/SIGINT save a checkpoint first);
    after a resume ``train_loss`` is the mean over the whole run, not only the last segment.
    """
    cfg = TransmitterTrainingConfig.build(config, **kwargs)  # a bad setting fails before anything loads
    import torch
    from transformers import Trainer, TrainingArguments

    from hf_persona.training.common import last_checkpoint, time_budget_callback, train_resumable
    from hf_persona.utils import set_seed

    seed, lora, backbone = cfg.seed, cfg.lora, cfg.backbone
    set_seed(seed)
    dataset = training_dialogues(train_data, cfg.dev_from)
    examples = add_distractors(dialogue_examples(dataset, both_sides=cfg.both_sides), seed=seed)
    if not examples:
        raise HFPersonaError("no training examples: the dataset holds no non-empty turns")
    output_dir = Path(cfg.output_dir)
    resume_from = last_checkpoint(output_dir) if cfg.resume else None
    if resume_from:
        logger.info("resuming from %s", resume_from)
    if _is_transmitter_dir(backbone):  # continue from a trained Transmitter
        model, tokenizer = load_transmitter(backbone)
    else:
        model, tokenizer = load_transmitter(
            backbone, lm_weight=cfg.lm_weight, label_smoothing=cfg.label_smoothing,
            max_context_tokens=cfg.max_context_tokens, max_response_tokens=cfg.max_response_tokens,
        )

    class _ListDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            return examples[i]

    args = trainer_arguments(
        TrainingArguments, output_dir, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=cfg.max_steps, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, save_steps=cfg.save_steps,
        logging_steps=cfg.logging_steps, progress=cfg.progress,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        remove_unused_columns=False,
    )
    callbacks = [time_budget_callback(cfg.budget_minutes)] if cfg.budget_minutes else []
    if lora:
        model = add_transmitter_lora(model, lora)
    trainer = Trainer(model=model, args=args, train_dataset=_ListDataset(),
                      data_collator=TransmitterCollator(tokenizer, cfg.max_context_tokens, cfg.max_response_tokens),
                      callbacks=callbacks)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    start = time.monotonic()
    result = train_resumable(trainer, resume=cfg.resume)  # SIGTERM/SIGINT: checkpoint, then stop
    seconds = time.monotonic() - start
    if not lora:
        trainer.save_model(str(output_dir))  # the main process only
    elif args.should_save:
        trainer.model.save_pretrained(str(output_dir / "adapter"))
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(output_dir))
    if args.should_save:
        tokenizer.save_pretrained(str(output_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "output_dir": str(output_dir),
        "backbone": str(backbone),
        "examples": len(examples),
        "global_step": trainer.state.global_step,
        **run_size(args, trainer.state),
        "epochs_done": float(trainer.state.epoch or 0.0),
        "train_loss": float(result.training_loss) if result.training_loss is not None else math.nan,
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "seconds": seconds,
        "resumed_from": resume_from,
        **{key: getattr(cfg, key) for key in ("learning_rate", "warmup_steps", "batch_size",
                                              "gradient_accumulation_steps", "budget_minutes", "lora")},
        "trainable_parameters": trainable,
    }
    return RecipeResult(write_summary(summary, cfg.json_out, args), output_dir)


def add_transmitter_lora(model, rank: int):
    """``model`` wrapped by PEFT: LoRA of ``rank`` (alpha 2·rank, dropout 0.05) on every linear layer
    of the backbone, the NUP head fully trainable; the LM head and the embeddings stay frozen."""
    from peft import LoraConfig, get_peft_model
    from torch import nn
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    if rank < 1:
        raise HFPersonaError(f"LoRA rank must be at least 1, got {rank}")
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.transformer.named_modules() if isinstance(m, (nn.Linear, Conv1D))})
    if not names:
        raise HFPersonaError(f"the {model.config.backbone_config.model_type} backbone has no linear layer for LoRA")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                        target_modules=r"transformer\..*\.(" + "|".join(names) + ")",  # fullmatch
                        modules_to_save=["nup_head"])
    return get_peft_model(model, config)


def _is_transmitter_dir(name_or_path) -> bool:
    cfg = Path(str(name_or_path)) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "p2bot_transmitter"
    except json.JSONDecodeError:
        return False
