"""Training of PAL and its two baselines on PESConv (evaluation: :mod:`hf_persona.evaluation.pal`).

The backbone decides the model: a causal LM (``--backbone smollm2``, Llama, Qwen...) gives
:class:`hf_persona.models.pal.PALForCausalLM` with chat-template examples
(``build_pal_causal_example``); a seq2seq checkpoint or an encoder (``minilm``) gives
:class:`hf_persona.models.pal.PALForConditionalGeneration`. Variants (the same backbone,
tokenizer, special tokens, target format and training recipe, so the only thing that differs is
how the persona reaches the model):

* ``pal``: the dialogue and the persona are encoded separately and fused (co-attention, eq. 2-4).
* ``no_persona``: the persona is never given; ``PAL.forward(persona_input_ids=None)`` runs the
  plain backbone encoder-decoder over the dialogue (the Blenderbot-Joint analogue: PAL
  trained without persona). The fusion module stays unused.
* ``hard_prompt``: no fusion either; the persona text is put in front of the dialogue in the
  encoder input (``[CLS] persona : p1 [SEP] p2 [SEP] dialogue : [Seeker] ... [Supporter] [SEP]``),
  the paper's "Persona: {persona} \\n Dialogue history: {context} \\n Response:" prompt; on a
  causal LM, the persona sentences close the chat's system prompt (:func:`hard_prompt_system`).

Examples: every supporter turn of a PESConv dialogue that has at least one seeker turn before it
(the model answers a seeker) and a non-empty text gives one example, built with
``processing_pal.build_pal_example`` from the turns before it and ``personas[i]`` (the persona
known before that turn; a placeholder while there is none).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Sequence

from ..errors import HFPersonaError
from ..utils import atomic_write_json, get_logger, moved_names, set_seed
from .configs import PAL_VARIANTS as VARIANTS
from .configs import PALTrainingConfig
from .recipe import RecipeResult, run_size, trainer_arguments, write_summary

logger = get_logger(__name__)

TRAINING_CONFIG_NAME = "pal_training.json"
#: decoding settings of the paper (section 4.3, and the authors' code for the length limits)
PAPER_DECODING = {
    "do_sample": True,
    "top_k": 10,
    "top_p": 0.9,
    "temperature": 0.5,
    "repetition_penalty": 1.03,
    "max_new_tokens": 50,
    "min_new_tokens": 10,
}
METRIC_KEYS = ("acc", "ppl", "bleu2", "bleu4", "dist1", "dist2", "ead1", "ead2", "rougeL", "cos_sim")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise HFPersonaError(f"unknown PAL variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def load_pesconv_splits(path, valid_fraction: float = 0.1, seed: int = 0):
    """(train_rows, valid_rows) from a PESConv folder.

    ``path`` holds either ``train/`` and ``valid/`` (each an ``annotate-persona`` output) or is
    itself one annotation output, which is then split by dialogue (``valid_fraction``).
    """
    from ..data.pesconv import load_pesconv_rows

    p = Path(path)
    if (p / "train").is_dir():
        train = load_pesconv_rows(p / "train")
        valid = load_pesconv_rows(p / "valid") if (p / "valid").is_dir() else []
        return train, valid
    rows = load_pesconv_rows(p)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, int(round(valid_fraction * len(rows)))) if len(rows) > 1 else 0
    valid_ids = set(order[:n_valid])
    return [r for i, r in enumerate(rows) if i not in valid_ids], [r for i, r in enumerate(rows) if i in valid_ids]


def hard_prompt_input(example: dict, tokenizer, max_source_length: int) -> list[int]:
    """Encoder input of the Hard Prompt baseline: persona text in front of the dialogue.

    ``[prefix] persona : <persona body> [SEP] dialogue : <dialogue body> [suffix]``, where the
    bodies are those of ``example["persona_input_ids"]`` / ``example["input_ids"]`` (special
    tokens stripped). When too long, the oldest dialogue tokens are dropped first (the cue at the
    end is kept); a persona that alone exceeds half the limit keeps its newest tokens.
    """
    from ..models.pal.processing_pal import special_frame

    n_pre, n_suf = map(len, special_frame(tokenizer))
    ids, pids = example["input_ids"], example["persona_input_ids"]
    prefix, suffix = ids[:n_pre], ids[len(ids) - n_suf :] if n_suf else []
    dialogue = ids[n_pre : len(ids) - n_suf]
    persona = pids[n_pre : len(pids) - n_suf]
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    head = tokenizer("persona :", add_special_tokens=False)["input_ids"]
    mid = tokenizer("dialogue :", add_special_tokens=False)["input_ids"]
    room = max_source_length - len(prefix) - len(suffix) - len(head) - len(mid) - 1
    if room < 2:
        raise HFPersonaError(f"max_source_length={max_source_length} leaves no room for a hard prompt")
    if len(persona) > room // 2 and len(persona) + len(dialogue) > room:
        persona = persona[len(persona) - max(room // 2, room - len(dialogue)) :]
    keep_dialogue = room - len(persona)
    if len(dialogue) > keep_dialogue:
        dialogue = dialogue[len(dialogue) - keep_dialogue :]
    return prefix + head + persona + [sep] + mid + dialogue + suffix


class _VocabCachingTokenizer:
    """Forwards to a tokenizer but answers ``get_vocab()`` from a copy taken once.

    ``build_pal_example`` looks the PAL tokens up in ``get_vocab()`` several times per example,
    and a fast tokenizer rebuilds that 30k-entry dict on every call (~80 ms), which made building
    ESConv examples take hours. The vocabulary does not change while examples are built.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._vocab = tokenizer.get_vocab()

    def get_vocab(self):
        return self._vocab

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def hard_prompt_system(persona: Sequence[str], system_prompt: str | None = None) -> str:
    """The system turn of the causal Hard Prompt baseline: the PAL system prompt, then the persona."""
    from ..models.pal import DEFAULT_CAUSAL_SYSTEM_PROMPT

    base = system_prompt or DEFAULT_CAUSAL_SYSTEM_PROMPT
    sentences = " ".join(" ".join(p.split()) for p in persona if p and p.strip())
    return f"{base} What you know about the person: {sentences}" if sentences else base


def pesconv_examples(rows: Sequence[dict], tokenizer, variant: str = "pal", max_source_length: int = 256,
                     max_persona_length: int = 96, max_target_length: int = 50, with_text: bool = False,
                     causal: bool = False, system_prompt: str | None = None):
    """Build PAL training/evaluation examples from PESConv rows. Returns (examples, skipped counts).

    One example per supporter turn with a seeker turn before it and a non-empty response.
    ``with_text`` keeps ``response``, ``persona``, ``strategy``, ``dialogue_id`` and ``turn`` for
    evaluation. Unknown strategy labels raise ``ValueError`` naming the dialogue and turn.
    ``causal``: chat-template examples for :class:`PALForCausalLM` (``build_pal_causal_example``
    with ``system_prompt``, default the model's), which also carry ``prompt_length``.
    """
    from ..models.pal import DEFAULT_CAUSAL_SYSTEM_PROMPT, build_pal_causal_example, build_pal_example

    _check_variant(variant)
    tokenizer = _VocabCachingTokenizer(tokenizer)
    examples = []
    skipped = {"no_seeker_turn_before": 0, "empty_response": 0}
    for r, row in enumerate(rows):
        utts, spk, strat, personas = row["utterances"], row["speakers"], row["strategies"], row["personas"]
        if not (len(utts) == len(spk) == len(strat) == len(personas)):
            raise HFPersonaError(
                f"PESConv dialogue {row.get('dialogue_id', r)}: utterances, speakers, strategies and personas "
                "must have one entry per turn"
            )
        seeker_seen = False
        for i, who in enumerate(spk):
            if who == "usr":
                seeker_seen = True
                continue
            if not seeker_seen:
                skipped["no_seeker_turn_before"] += 1
                continue
            if not utts[i] or not utts[i].strip():
                skipped["empty_response"] += 1
                continue
            lengths = dict(tokenizer=tokenizer, max_source_length=max_source_length,
                           max_persona_length=max_persona_length, max_target_length=max_target_length)
            try:
                if causal:
                    system = system_prompt or DEFAULT_CAUSAL_SYSTEM_PROMPT
                    if variant == "hard_prompt":
                        system = hard_prompt_system(personas[i], system)
                    ex = build_pal_causal_example(utts[:i], spk[:i], strat[:i], personas[i], response=utts[i],
                                                  strategy=strat[i], system_prompt=system, **lengths)
                else:
                    ex = build_pal_example(utts[:i], spk[:i], strat[:i], personas[i], response=utts[i],
                                           strategy=strat[i], **lengths)
            except ValueError as exc:
                raise HFPersonaError(f"PESConv dialogue {row.get('dialogue_id', r)}, turn {i}: {exc}") from exc
            if variant == "hard_prompt" and not causal:
                ex["input_ids"] = hard_prompt_input(ex, tokenizer, max_source_length)
            ex.pop("persona_truncated", None)
            if with_text:
                ex.update(response=utts[i], persona=list(personas[i]), strategy=strat[i],
                          dialogue_id=row.get("dialogue_id", r), turn=i)
            examples.append(ex)
    return examples, skipped


class VariantCollator:
    """``PALCollator`` that drops the persona tensors for the variants that do not fuse a persona.
    ``padding_side="left"``: causal-LM prompts for generation."""

    def __init__(self, tokenizer, variant: str, padding_side: str = "right"):
        from ..models.pal import PALCollator

        self.inner = PALCollator(tokenizer, padding_side=padding_side)
        self.variant = _check_variant(variant)

    def __call__(self, features):
        batch = self.inner([{k: f[k] for k in ("input_ids", "persona_input_ids", "labels", "strategy_id") if k in f}
                            for f in features])
        batch.pop("strategy_id", None)
        if self.variant != "pal":
            batch.pop("persona_input_ids")
            batch.pop("persona_attention_mask")
        return batch


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


MIXTURE_PARAMETER = "mixture_logits"
#: parameters trained at ``mixture_learning_rate``: eq. 4's three logits and, in PAL over a causal
#: LM, the per-channel fusion gate (it starts at 0, and at a fine-tuning rate it would barely open)
FUSION_SCALARS = (MIXTURE_PARAMETER, "fusion_gate")


def _mixture_lr_trainer_class():
    """``Trainer`` whose optimiser gives PAL's eq. 4 mixture logits their own learning rate."""
    from transformers import Trainer

    class MixtureLRTrainer(Trainer):
        def __init__(self, *args, mixture_learning_rate: float | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.mixture_learning_rate = mixture_learning_rate

        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            if not self.mixture_learning_rate or any(g.get("name") == MIXTURE_PARAMETER for g in optimizer.param_groups):
                return optimizer
            mixture = [p for n, p in (model or self.model).named_parameters()
                       if n.endswith(FUSION_SCALARS) and p.requires_grad]
            if not mixture:
                return optimizer
            taken = {id(p) for p in mixture}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in taken]
            optimizer.add_param_group({"params": mixture, "lr": self.mixture_learning_rate, "weight_decay": 0.0,
                                       "name": MIXTURE_PARAMETER})
            return optimizer

    return MixtureLRTrainer


def train_pal(data, config=None, /, **kwargs) -> RecipeResult:
    """Train PAL (or a baseline, ``variant``) on a PESConv folder ``data`` with ``transformers.Trainer``.

    ``config``: a :class:`~hf_persona.training.configs.PALTrainingConfig`, or the output folder (then
    ``kwargs`` are its fields: ``variant``, ``backbone``, ``max_steps``, ...; keyword arguments also
    replace fields of a given config).

    Progress bar and loss logging, evaluation on up to ``max_eval_examples`` validation examples
    every ``eval_steps`` steps, the checkpoint with the lowest validation loss is saved as the
    final model (with its tokenizer and ``pal_training.json``), a rerun with the same
    ``output_dir`` resumes from the last complete checkpoint, SIGTERM saves a checkpoint first.
    ``budget_minutes`` stops after that much wall time (evaluating and saving first).
    ``warm_start``: for a BERT2BERT backbone built from an encoder checkpoint, start each decoder
    cross-attention as a copy of its self-attention and a missing LM-head transform as the
    identity (:func:`hf_persona.training.persona_extractor.warm_start_cross_attention`), the same
    for every variant; a seq2seq backbone is left as it is.
    ``mixture_learning_rate``: learning rate of the three eq. 4 mixture logits (the rest uses
    ``learning_rate``; ``None`` = the same for all). At a fine-tuning rate such as 1e-4 three
    scalars move by about 1e-4 per Adam step, so in a run of a few hundred steps the weights stay
    at their initial 1/3 each (measured: 0.332 / 0.332 / 0.336 after 160 steps) and PAL cannot
    learn how much persona to mix in; the paper trains for many epochs, where this matters less.
    ``mixture_init``: initial eq. 4 logits (``PALConfig.mixture_init``; None = equal, the paper).
    ``fusion_norm_init``: ``PALConfig.fusion_norm_init`` (None = "fresh", the paper's code).
    ``persona_alignment``: ``PALConfig.persona_alignment`` (None = "coattention"; "concat" appends
    the refined persona states as extra decoder keys).
    ``fusion_layer`` (causal backbones): the decoder layer whose output PAL fuses
    (``PALCausalConfig.fusion_layer``; negative counts from the last, -1 = the last layer; None = the config's default, the last).

    Returns a :class:`~hf_persona.training.recipe.RecipeResult`: the run's summary (also written to
    ``json_out``), its ``output_dir`` and the trained ``model`` (the best checkpoint's weights).
    """
    from transformers import AutoTokenizer, TrainingArguments

    from ..backbones import is_causal_lm, resolve
    from ..models.pal import PALForCausalLM, PALForConditionalGeneration, add_pal_tokens
    from .common import last_checkpoint, time_budget_callback, train_resumable
    from .persona_extractor import warm_start_cross_attention

    cfg = PALTrainingConfig.build(config, **kwargs)
    variant, backbone, seed, lora, fusion_layer = cfg.variant, cfg.backbone, cfg.seed, cfg.lora, cfg.fusion_layer
    train_rows, valid_rows = load_pesconv_splits(data, seed=seed)
    if not train_rows:
        raise HFPersonaError(f"{data}: no training dialogues")
    if not valid_rows:
        raise HFPersonaError(f"{data}: no validation dialogues (expected a valid/ folder or enough dialogues to split)")
    path = resolve(backbone)
    causal = is_causal_lm(path)
    if causal and (cfg.fusion_norm_init is not None or cfg.persona_alignment is not None):
        raise HFPersonaError("fusion_norm_init and persona_alignment apply to seq2seq backbones; "
                             f"{backbone!r} is a causal LM (PAL fuses one decoder layer, see PALCausalConfig)")
    if fusion_layer is not None:
        if not causal:
            raise HFPersonaError(f"fusion_layer applies to causal LM backbones; {backbone!r} is not one")
        from transformers import AutoConfig

        layers = AutoConfig.from_pretrained(path).get_text_config().num_hidden_layers
        if not -layers <= fusion_layer < layers:
            raise HFPersonaError(f"fusion_layer must be a layer index in [-{layers}, {layers}) for {backbone!r} "
                                 f"({layers} layers), got {fusion_layer}")
        fusion_layer %= layers
    tokenizer = AutoTokenizer.from_pretrained(path)
    if causal and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_pal_tokens(tokenizer)
    lengths = dict(max_source_length=cfg.max_source_length, max_persona_length=cfg.max_persona_length,
                   max_target_length=cfg.max_target_length)
    train_ex, train_skipped = pesconv_examples(train_rows, tokenizer, variant, causal=causal, **lengths)
    valid_ex, _ = pesconv_examples(valid_rows, tokenizer, variant, causal=causal, **lengths)
    if not train_ex or not valid_ex:
        raise HFPersonaError(f"{data}: no supporter turn with a seeker turn before it (train or valid)")
    rng = random.Random(seed)
    rng.shuffle(train_ex)
    if cfg.max_train_examples:
        train_ex = train_ex[:cfg.max_train_examples]
    valid_ex = valid_ex[:cfg.max_eval_examples]

    set_seed(seed)  # the same initialisation (co-attention, cross-attention) for every variant
    init_kwargs = {"mixture_init": None if cfg.mixture_init is None else list(cfg.mixture_init),
                   "fusion_norm_init": cfg.fusion_norm_init, "persona_alignment": cfg.persona_alignment,
                   "fusion_layer": fusion_layer}
    init_kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
    try:
        model_class = PALForCausalLM if causal else PALForConditionalGeneration
        model = model_class.from_backbone(path, tokenizer=tokenizer, **init_kwargs)
    except ValueError as err:
        raise HFPersonaError(str(err)) from None
    warm_started = warm_start_cross_attention(model.backbone) if cfg.warm_start and not causal else 0
    peft_backbone = None
    if lora:
        if not causal:
            raise HFPersonaError(f"LoRA for PAL needs a pretrained causal LM backbone; {backbone!r} is not one")
        peft_backbone = add_pal_lora(model, tokenizer, lora)
    args = trainer_arguments(
        TrainingArguments, cfg.output_dir, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=cfg.max_steps, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps,
        progress=cfg.progress,
        per_device_eval_batch_size=max(cfg.batch_size, 16),
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        # LoRA: no Trainer checkpoints. transformers cannot serialise an LM whose tied embedding and
        # LM head share PEFT's trainable-token rows (it rejects the shared tensors), so a LoRA run
        # keeps its last step, saved by save_pal_adapter, and starts afresh when rerun
        save_strategy="no" if lora else "steps",
        save_steps=cfg.eval_steps,
        load_best_model_at_end=not lora,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        remove_unused_columns=False,
    )
    budget_cb = time_budget_callback(cfg.budget_minutes)
    trainer = _mixture_lr_trainer_class()(
        model=model, args=args, train_dataset=train_ex, eval_dataset=valid_ex,
        data_collator=VariantCollator(tokenizer, variant), processing_class=tokenizer, callbacks=[budget_cb],
        mixture_learning_rate=cfg.mixture_learning_rate)
    resumed_from = last_checkpoint(cfg.output_dir) if cfg.resume else None
    t0 = time.monotonic()
    result = train_resumable(trainer, resume=cfg.resume)
    seconds = time.monotonic() - t0
    eval_history = [{"step": e["step"], "eval_loss": e["eval_loss"]}
                    for e in trainer.state.log_history if "eval_loss" in e]
    valid_metrics = trainer.evaluate()
    out = Path(cfg.output_dir)
    kind = "causal" if causal else "seq2seq"
    if peft_backbone is None:
        trainer.save_model(str(out))  # the main process only
    elif args.should_save:
        save_pal_adapter(model, peft_backbone, out)
    if args.should_save:
        tokenizer.save_pretrained(str(out))
        atomic_write_json(out / TRAINING_CONFIG_NAME, {"variant": variant, "backbone": backbone, "kind": kind,
                                                       "lora_rank": lora or None, **lengths})
    summary = {
        "variant": variant,
        "backbone": backbone,
        "kind": kind,
        "train_dialogues": len(train_rows),
        "valid_dialogues": len(valid_rows),
        "train_examples": len(train_ex),
        "train_skipped": train_skipped,
        "valid_loss_examples": len(valid_ex),
        "global_step": trainer.state.global_step,
        **run_size(args, trainer.state),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_loss": result.training_loss,
        "valid_loss": valid_metrics.get("eval_loss"),
        "eval_history": eval_history,
        "train_seconds": round(seconds, 1),
        "budget_minutes": cfg.budget_minutes,
        "stopped_by_budget": budget_cb.stopped_at is not None,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "mixture_learning_rate": cfg.mixture_learning_rate,
        "mixture_init": list(model.config.mixture_init),
        "fusion_norm_init": getattr(model.config, "fusion_norm_init", None),
        "persona_alignment": getattr(model.config, "persona_alignment", None),
        "fusion_layer": getattr(model.config, "fusion_layer", None),
        "fusion_gate_mean_abs": round(model.fusion_gate.abs().mean().item(), 5) if causal else None,
        "mixture_weights": [round(w, 4) for w in model.mixture_weights().detach().tolist()],
        "lora_rank": lora or None,
        "seed": seed,
        "resumed_from": resumed_from,
        "warm_started_cross_attention_layers": warm_started,
        **lengths,
    }
    return RecipeResult(write_summary(summary, cfg.json_out, args), out, model)


# ----------------------------------------------------------------------------------------------
# LoRA: PAL over a causal LM as an adapter
# ----------------------------------------------------------------------------------------------

#: Files of a PAL adapter folder besides PEFT's ``adapter_config.json`` / ``adapter_model.safetensors``.
PAL_ADAPTER_CONFIG = "pal_config.json"
PAL_FUSION_WEIGHTS = "pal_fusion.safetensors"
#: The adapter name PAL's LoRA gets in a PEFT model (a shared backbone holds others beside it).
PAL_ADAPTER_NAME = "pal"


def add_pal_lora(model, tokenizer, rank: int, adapter_name: str = PAL_ADAPTER_NAME):
    """Put LoRA adapters on ``model.backbone`` (a :class:`PALForCausalLM`): rank ``rank`` on every
    linear layer of the LM (the generators' recipe, :func:`hf_persona.training.persona_extractor.lora_config`)
    and the PAL special tokens' rows of the input embedding as PEFT trainable tokens (of the output
    embedding too when the LM does not tie them). PEFT replaces the layers in place, so
    ``model.backbone`` stays the LM (PAL's fusion hook keeps working) and the fusion module stays
    trainable beside the adapters. Returns the ``PeftModel`` over the backbone (to save the adapter)."""
    from peft import get_peft_model

    from ..models.pal import PAL_SPECIAL_TOKENS
    from .persona_extractor import lora_config

    lm = model.backbone
    ids = tokenizer.convert_tokens_to_ids(list(PAL_SPECIAL_TOKENS))
    names = {module: name for name, module in lm.named_modules()}
    rows = {names[lm.get_input_embeddings()]: ids}
    output = lm.get_output_embeddings()
    if output is not None and output.weight is not lm.get_input_embeddings().weight:
        rows[names[output]] = ids
    config = lora_config(rank)
    config.trainable_token_indices = rows
    peft_backbone = get_peft_model(lm, config, adapter_name=adapter_name)
    for name, param in model.named_parameters():
        if name.startswith("fusion"):
            param.requires_grad_(True)
    return peft_backbone


def save_pal_adapter(model, peft_backbone, folder) -> None:
    """Save what a LoRA-trained :class:`PALForCausalLM` adds to its backbone: the PEFT adapter
    (``adapter_config.json``, ``adapter_model.safetensors``), the fusion weights
    (``pal_fusion.safetensors``) and the PAL config (``pal_config.json``). The tokenizer is saved
    by the caller."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the PAL rows of the resized embedding are in the adapter as trainable tokens: not the whole matrix
    peft_backbone.save_pretrained(str(folder), selected_adapters=[peft_backbone.active_adapter],
                                  save_embedding_layers=False)
    adapter_dir = folder / peft_backbone.active_adapter
    if peft_backbone.active_adapter != "default" and adapter_dir.is_dir():  # PEFT nests named adapters
        for item in adapter_dir.iterdir():
            item.replace(folder / item.name)
        adapter_dir.rmdir()
    fusion = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.startswith("fusion")}
    tmp = folder / (PAL_FUSION_WEIGHTS + ".tmp")
    save_file(fusion, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / PAL_FUSION_WEIGHTS)
    model.config.to_json_file(str(folder / PAL_ADAPTER_CONFIG))


def is_pal_adapter(folder) -> bool:
    folder = Path(folder)
    return (folder / PAL_ADAPTER_CONFIG).is_file() and (folder / "adapter_config.json").is_file()


def load_pal_adapter(folder, backbone=None, adapter_name: str = PAL_ADAPTER_NAME, extra_adapters=None):
    """``(model, tokenizer, peft_backbone)``: a :class:`PALForCausalLM` from an adapter folder
    (:func:`save_pal_adapter`) over its backbone, in eval mode.

    ``backbone``: the folder or name of the causal LM (default: the ``backbone`` recorded in
    ``pal_training.json``). ``peft_backbone`` is the ``PeftModel`` over that LM, holding the PAL
    adapter as ``adapter_name`` (active) and the PEFT adapters of ``extra_adapters``
    (``{name: folder}``, e.g. the persona extractor's LoRA trained on the same LM), so one copy of
    the LM serves them all: ``peft_backbone.set_adapter(name)`` switches. The extra adapters are
    loaded before PAL's (PEFT cannot add a LoRA-only adapter next to one with trainable tokens)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..backbones import resolve
    from ..models.pal import PALCausalConfig, PALForCausalLM

    folder = Path(folder)
    if not is_pal_adapter(folder):
        raise HFPersonaError(f"{folder}: not a PAL adapter folder (expected {PAL_ADAPTER_CONFIG}, adapter_config.json "
                             f"and {PAL_FUSION_WEIGHTS}, written by `train pal --lora`)")
    config = PALCausalConfig.from_json_file(str(folder / PAL_ADAPTER_CONFIG))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if backbone is None:
        training = folder / TRAINING_CONFIG_NAME
        backbone = json.loads(training.read_text()).get("backbone") if training.is_file() else None
        if not backbone:
            raise HFPersonaError(f"{folder}: no backbone given and none recorded in {TRAINING_CONFIG_NAME}")
    lm = AutoModelForCausalLM.from_pretrained(resolve(backbone))
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    # PAL first: building it initialises what the LM lacks, which must not touch adapters loaded later
    model = PALForCausalLM(config, backbone=lm)
    peft_backbone = None
    for name, path in (extra_adapters or {}).items():
        if name == adapter_name:
            raise HFPersonaError(f"extra adapter name {name!r} is PAL's own adapter name")
        if peft_backbone is None:
            peft_backbone = PeftModel.from_pretrained(lm, str(path), adapter_name=name)
        else:
            peft_backbone.load_adapter(str(path), adapter_name=name)
    if peft_backbone is None:
        peft_backbone = PeftModel.from_pretrained(lm, str(folder), adapter_name=adapter_name)
    else:
        peft_backbone.load_adapter(str(folder), adapter_name=adapter_name)
    peft_backbone.set_adapter(adapter_name)
    fusion = load_file(str(folder / PAL_FUSION_WEIGHTS))
    expected = {k for k in model.state_dict() if k.startswith("fusion")}
    if set(fusion) != expected:
        raise HFPersonaError(f"{folder / PAL_FUSION_WEIGHTS}: fusion weights do not match the PAL config "
                             f"(missing {sorted(expected - set(fusion))}, unexpected {sorted(set(fusion) - expected)})")
    model.load_state_dict(fusion, strict=False)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer, peft_backbone



#: moved to hf_persona.evaluation.pal (the old names still import, with a DeprecationWarning)
__getattr__ = moved_names(__name__, dict.fromkeys((
    "SentenceEmbedder", "load_pal_for_eval", "PERSONA_INPUTS", "placeholder_persona_ids",
    "teacher_forced_metrics", "generate_responses", "generation_metrics", "persona_information", "evaluate_pal",
), "hf_persona.evaluation.pal"))
