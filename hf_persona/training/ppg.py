"""PPG recipes: generators (PPG / DRG) with TRL's SFTTrainer, the critic, scoring and evaluation.

Paper: Lu et al. (2022), "Partner Personas Generation for Dialogue Response Generation". No
public code exists; every choice not fixed by the paper is written down here and in ``docs/ppg.md``.

* Generators are causal LMs. ``"minilm"`` (offline) becomes ``BertLMHeadModel`` with
  ``is_decoder=True`` warm-started from the packaged all-MiniLM-L6-v2 encoder (its MLM
  prediction-head transform is not in that checkpoint and starts random; the output matrix
  is tied to the word embeddings). Any other name goes through ``AutoModelForCausalLM``
  (``microsoft/DialoGPT-small`` is the paper's model; ``"smollm2"`` the packaged
  SmolLM2-135M-Instruct). Saved generators are plain transformers checkpoints:
  ``AutoModelForCausalLM.from_pretrained(dir)`` loads them.
* Prompts: the plain-text format of :mod:`hf_persona.data.ppg`, rendered with the
  tokenizer's chat template (task system message + the text as the user message) when the
  tokenizer has one (:func:`hf_persona.data.ppg.format_example`).
* Supervised training: ``trl.SFTTrainer`` on pre-tokenized examples (``input_ids`` +
  ``completion_mask`` from :mod:`hf_persona.data.ppg`) with completion-only loss.
* The critic: ``AutoModelForSequenceClassification`` (2 labels) on (persona, response)
  pairs, trained with ``transformers.Trainer`` for 1 epoch by default.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

from ..data import ppg as D
from ..errors import HFPersonaError
from ..utils import moved_names
from .common import time_budget_callback
from .configs import PPG_MAX_COMPLETION_TOKENS as DEFAULT_MAX_COMPLETION_TOKENS
from .configs import PPG_MAX_PROMPT_TOKENS as DEFAULT_MAX_PROMPT_TOKENS
from .configs import CriticTrainingConfig, GeneratorTrainingConfig
from .recipe import RecipeResult, run_size, trainer_arguments, write_summary

META_FILE = "ppg_meta.json"


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _log():
    from ..utils import get_logger

    return get_logger("hf_persona.ppg")


def use_omp_threads():
    """torch uses ``$OMP_NUM_THREADS`` threads when it is set (PPG training, RL and evaluation)."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))


def _check_task(task):
    if task not in (D.PPG, D.DRG):
        raise HFPersonaError(f"task must be 'ppg' or 'drg', got {task!r}")


def older_positional(recipe: str, names, values, kwargs: dict) -> dict:
    """``kwargs`` with ``values``, positional arguments of ``recipe``'s earlier signature, under their
    ``names`` (a ``DeprecationWarning`` says to pass them by keyword or in the config)."""
    if len(values) > len(names):
        raise TypeError(f"{recipe}() got {len(values)} extra positional arguments; at most {len(names)} "
                        f"({', '.join(names)}) of the earlier signature")
    given = names[:len(values)]
    if given:
        warnings.warn(f"{recipe}: pass {', '.join(given)} by keyword (positionally is deprecated)",
                      DeprecationWarning, stacklevel=3)
    for name, value in zip(given, values):
        if name in kwargs:
            raise TypeError(f"{recipe}() got {name!r} twice (positionally and as a keyword)")
        kwargs[name] = value
    return kwargs


# ----------------------------------------------------------------------------------------------
# generators
# ----------------------------------------------------------------------------------------------
def load_generator(name_or_path="minilm", tokenizer=None, num_layers=None):
    """``(model, tokenizer)`` for a PPG/DRG generator.

    A BERT checkpoint that is not yet a decoder (the offline MiniLM encoder,
    ``bert-base-uncased``) is loaded as ``BertLMHeadModel(is_decoder=True)``; anything else
    (DialoGPT, a saved generator) with ``AutoModelForCausalLM``. ``num_layers`` keeps only the
    first N transformer layers of a BERT backbone (a cheaper warm start). The tokenizer gets an EOS
    (``[SEP]`` for BERT vocabularies) and a pad token, and the model's generation config uses them.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..backbones import resolve

    path = resolve(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise HFPersonaError(f"cannot load a generator from {name_or_path!r}: {exc}") from exc
    tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
    D.prepare_tokenizer(tok)
    if config.model_type == "bert":
        from transformers import BertLMHeadModel

        config.is_decoder = True
        config.add_cross_attention = False
        if num_layers:
            if not 1 <= num_layers <= config.num_hidden_layers:
                raise HFPersonaError(f"num_layers must be 1..{config.num_hidden_layers}, got {num_layers}")
            config.num_hidden_layers = num_layers
        model = BertLMHeadModel.from_pretrained(path, config=config)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and (tok.model_max_length is None or tok.model_max_length > limit):
        tok.model_max_length = int(limit)
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    return model, tok


def read_meta(path) -> dict:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def task_examples(task, turns, tokenizer, max_prompt_tokens=DEFAULT_MAX_PROMPT_TOKENS, partner_persona="gold",
                  keep_unfit=False):
    """Prompt/completion dicts for ``task`` from turns, each prompt fitted to ``max_prompt_tokens``.

    ``partner_persona`` (DRG only): ``"gold"`` (all gold sentences), ``"bm25"`` (BM25 top-3
    gold), or a list with one persona list per turn (e.g. PPG-generated personas).
    Turns whose prompt cannot fit even without context are dropped (count logged), or kept as
    ``None`` with ``keep_unfit=True``. A DRG partner persona that is too long is cut to its first
    sentences before a turn counts as unfit. Prompts and completions are rendered for ``tokenizer``
    (:func:`hf_persona.data.ppg.format_example`: the chat template when it has one; the
    plain text is kept as ``text_prompt``), so ``max_prompt_tokens`` counts the template's tokens too.
    """
    _check_task(task)
    out, dropped = [], 0
    for i, turn in enumerate(turns):
        if task == D.PPG:
            def builder(t):
                return D.format_example(tokenizer, D.PPG, D.ppg_example(t))
        else:
            if isinstance(partner_persona, (list, tuple)):
                pp = partner_persona[i]
            elif partner_persona == "gold":
                pp = None
            elif partner_persona == "bm25":
                pp = D.bm25_top_k(turn["partner_persona"], turn["context"], 3)
            else:
                raise HFPersonaError(f"partner_persona must be 'gold', 'bm25' or a list, got {partner_persona!r}")

            def builder(t, pp=pp):
                return D.format_example(tokenizer, D.DRG, D.drg_example(t, pp))

        fitted = D.fit_turn(turn, tokenizer, builder, max_prompt_tokens)
        if fitted is None and task == D.DRG:
            # a long partner persona: keep its first sentences (all context already dropped)
            pp_list = list(builder(turn)["partner_persona"])
            while fitted is None and len(pp_list) > 1:
                pp_list = pp_list[:-1]

                def builder(t, pp=pp_list):
                    return D.format_example(tokenizer, D.DRG, D.drg_example(t, pp))

                fitted = D.fit_turn(turn, tokenizer, builder, max_prompt_tokens)
        if fitted is None:
            dropped += 1
            if keep_unfit:
                out.append(None)
            continue
        ex = builder(fitted)
        ex["n_context"] = turn["n_context"]
        ex["self_persona"] = list(fitted["self_persona"])
        ex["context"] = list(fitted["context"])
        ex["context_speakers"] = list(fitted["context_speakers"])
        ex["response"] = turn["response"]
        ex["gold_partner_persona"] = list(turn["partner_persona"])
        out.append(ex)
    if dropped:
        _log().warning("dropped %d of %d %s turns whose prompt exceeds %d tokens", dropped, len(turns), task,
                       max_prompt_tokens)
    return out


def sft_dataset(examples, tokenizer, max_completion_tokens):
    """A ``datasets.Dataset`` with ``input_ids`` and ``completion_mask`` (see :func:`hf_persona.data.ppg.encode_example`)."""
    from datasets import Dataset

    rows = [D.encode_example(tokenizer, e["prompt"], e["completion"], max_completion_tokens) for e in examples]
    if not rows:
        raise HFPersonaError("no training examples: the data gave no turn with enough context")
    return Dataset.from_list(rows)


def lora_config(target_modules=None, r=8, alpha=None, dropout=0.05, task_type="CAUSAL_LM"):
    """A PEFT ``LoraConfig`` with explicit target modules (BERT: query/key/value; GPT-2: c_attn;
    Llama / SmolLM2: q_proj,k_proj,v_proj,o_proj); ``alpha`` defaults to ``2 * r``."""
    from peft import LoraConfig

    if not target_modules:
        raise HFPersonaError("LoRA needs explicit target_modules, e.g. query,value (BERT), c_attn (GPT-2) or "
                             "q_proj,k_proj,v_proj,o_proj (Llama / SmolLM2)")
    if r < 1:
        raise HFPersonaError(f"LoRA rank must be >= 1, got {r}")
    alpha = 2 * r if alpha is None else alpha
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      task_type=task_type)


def train_generator(train_rows, config=None, *older, **kwargs) -> RecipeResult:
    """Supervised PPG (``task="ppg"``) or DRG (``task="drg"``) training with ``trl.SFTTrainer``.

    Args:
        train_rows: PERSONA-CHAT dialogues with both personas (``read_personachat`` rows).
        config: a :class:`~hf_persona.training.configs.GeneratorTrainingConfig`, or the output folder
            (then ``kwargs`` are its fields: ``task``, ``backbone``, ``max_steps``...).

    The earlier order, ``train_generator(task, train_rows, output_dir, base)``, still works (with a
    ``DeprecationWarning``), and so does the keyword ``base`` (now ``backbone``) and ``lora_r`` (``lora``).

    Saves the final generator + tokenizer + ``ppg_meta.json`` in ``output_dir``; checkpoints
    go to ``output_dir/checkpoints`` and a killed run resumes from the newest intact one
    (:func:`hf_persona.training.common.train_resumable`; SIGTERM/SIGINT save a checkpoint first).
    Returns a :class:`~hf_persona.training.recipe.RecipeResult`: the summary written to
    ``ppg_meta.json`` (the step count, the whole run's training loss, seconds...), the output folder
    and the trained generator (LoRA adapters merged).
    """
    from ..utils import set_seed
    from .common import last_checkpoint, train_resumable

    if isinstance(train_rows, str):  # the earlier order: (task, train_rows, output_dir[, base])
        warnings.warn("train_generator(task, train_rows, output_dir, ...) is deprecated: use "
                      "train_generator(train_rows, output_dir, task=...) or a GeneratorTrainingConfig",
                      DeprecationWarning, stacklevel=2)
        kwargs["task"], train_rows = train_rows, config
        config, *older = older or (kwargs.pop("output_dir", None),)
    cfg = GeneratorTrainingConfig.build(config, **older_positional("train_generator", ("backbone",), older, kwargs))
    task, modules = cfg.task, cfg.lora_target_modules
    use_omp_threads()
    set_seed(cfg.seed)
    max_completion_tokens = cfg.completion_tokens()
    model, tok = load_generator(cfg.backbone, num_layers=cfg.num_layers)
    turns = D.build_turns(train_rows, min_context=1, max_context=cfg.max_context)
    examples = task_examples(task, turns, tok, cfg.max_prompt_tokens, cfg.partner_persona)
    ds = sft_dataset(examples, tok, max_completion_tokens)
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    budget = time_budget_callback(cfg.budget_minutes)
    trainer = make_sft_trainer(model, tok, ds, ckpt_dir, cfg, callbacks=[budget],
                               max_length=cfg.max_prompt_tokens + max_completion_tokens + 2)
    resume_from = last_checkpoint(ckpt_dir) if cfg.resume else None
    t0 = time.monotonic()
    result = train_resumable(trainer, resume=cfg.resume)  # SIGTERM/SIGINT: checkpoint, then stop
    seconds = time.monotonic() - t0
    final = trainer.model
    if modules:
        final = final.merge_and_unload()
    if trainer.args.should_save:  # rank 0 of a multi-process run writes the folder
        final.save_pretrained(out)
        tok.save_pretrained(out)
    meta = {
        "task": task,
        "base": str(cfg.backbone),
        "format": "hf_persona.ppg/v2-chat" if D.uses_chat_template(tok) else "hf_persona.ppg/v1",
        "partner_persona": cfg.partner_persona if isinstance(cfg.partner_persona, str) else "given",
        "max_prompt_tokens": cfg.max_prompt_tokens,
        "max_completion_tokens": max_completion_tokens,
        "max_context": cfg.max_context,
        "train_examples": len(ds),
        "steps": trainer.state.global_step,
        **run_size(trainer.args, trainer.state),
        "train_loss": float(result.training_loss),  # the whole run's mean, across resumes
        "seconds": seconds,
        "resumed_from": resume_from,
        "budget_minutes": cfg.budget_minutes,
        "stopped_by_budget": budget.stopped_early,
        "lora": list(modules) if modules else None,
        "lora_r": cfg.lora if modules else None,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "num_layers": model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else None,
    }
    write_summary(meta, out / META_FILE, trainer.args)
    return RecipeResult(write_summary(meta, cfg.json_out, trainer.args), out, final)


def make_sft_trainer(model, tokenizer, dataset, output_dir, config=None, *, max_length=None, callbacks=None,
                     **settings):
    """``trl.SFTTrainer`` on a pre-tokenized ``input_ids`` + ``completion_mask`` dataset, with
    completion-only loss (prompt tokens get label -100), checkpoints in ``output_dir``.

    The settings (steps, batch, learning rate, LoRA, ``gradient_checkpointing``: None keeps TRL's
    default, on in TRL 1.x: less memory, about a third more compute per step) are those of ``config``,
    a :class:`~hf_persona.training.configs.GeneratorTrainingConfig`, or ``settings``, its fields
    (``config`` None: the defaults). ``max_length``: tokens per example (None: TRL's default)."""
    from trl import SFTConfig, SFTTrainer

    cfg = GeneratorTrainingConfig.build(output_dir if config is None else config, **settings)
    checkpointing = cfg.gradient_checkpointing
    args = trainer_arguments(
        SFTConfig, output_dir, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
        max_steps=cfg.max_steps, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, progress=cfg.progress,
        completion_only_loss=True,
        max_length=max_length,
        **({} if checkpointing is None else {"gradient_checkpointing": bool(checkpointing)}),
    )
    modules = cfg.lora_target_modules
    peft_config = lora_config(modules, r=cfg.lora) if modules else None

    class PPGSFTTrainer(SFTTrainer):
        """``SFTTrainer`` whose loss is the model's own causal-LM loss.

        TRL 1.x computes the SFT loss through a fused LM head that multiplies the backbone's last
        hidden state directly by the output matrix. ``BertLMHeadModel`` has a prediction-head
        transform (dense + GELU + LayerNorm) in between, so the fused loss trains a function the
        model never computes at inference (measured: training loss 6.4 while the saved model's own
        NLL on the same data was 11.1). Here the loss comes from ``model(input_ids, attention_mask,
        labels)``: the full head, shifted cross-entropy over the completion labels.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            keep = {k: inputs[k] for k in ("input_ids", "attention_mask", "labels") if k in inputs}
            outputs = model(**keep)
            return (outputs.loss, outputs) if return_outputs else outputs.loss

    return PPGSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)


# ----------------------------------------------------------------------------------------------
# generation and likelihood
# ----------------------------------------------------------------------------------------------
def _device(model):
    return next(model.parameters()).device


def left_pad(ids_list, pad_id):
    """Left-pad token id lists into ``(input_ids, attention_mask)`` tensors (the generation layout)."""
    import torch

    n = max(len(x) for x in ids_list)
    ids = torch.full((len(ids_list), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids_list), n), dtype=torch.long)
    for i, x in enumerate(ids_list):
        ids[i, n - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, n - len(x):] = 1
    return ids, mask


def position_ids_from_mask(mask):
    """Positions counted over real tokens only (0 at the first real token; pads get 0).

    Generation already does this for left-padded prompts; using the same positions when
    scoring keeps absolute-position models (BERT, GPT-2) consistent between the two.
    """
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp(min=0).masked_fill(mask == 0, 0)


def generate(model, tokenizer, prompts, max_new_tokens=32, batch_size=16, do_sample=False, temperature=1.0,
             top_p=1.0, no_repeat_ngram_size=3):
    """Completions (decoded, stripped) for text prompts in the shared input format.

    With a chat-template tokenizer, plain-text PPG/DRG prompts (``ppg_prompt`` / ``drg_prompt``) are
    rendered first (:func:`hf_persona.data.ppg.ensure_rendered`); rendered ones pass as they are.
    """
    import torch

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings")
    prompts = [D.ensure_rendered(tokenizer, p) for p in prompts]
    model.eval()
    dev = _device(model)
    outs = []
    for start in range(0, len(prompts), batch_size):
        chunk = [D.encode_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        ids, mask = left_pad(chunk, tokenizer.pad_token_id)
        limit = getattr(model.config, "max_position_embeddings", None)
        new_tokens = max_new_tokens if limit is None else min(max_new_tokens, limit - ids.shape[1])
        if new_tokens < 1:
            raise HFPersonaError(f"a prompt of {ids.shape[1]} tokens leaves no room to generate within the model's "
                                 f"{limit} positions; shorten it (max_prompt_tokens)")
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=new_tokens,
                do_sample=do_sample, temperature=temperature if do_sample else None,
                top_p=top_p if do_sample else None, top_k=0 if do_sample else None,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                no_repeat_ngram_size=no_repeat_ngram_size or None,
            )
        new = gen[:, ids.shape[1]:]
        outs.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return outs


def completion_nll(model, tokenizer, prompts, completions, max_completion_tokens=32, batch_size=16):
    """Summed negative log-likelihood and token count of ``completions`` (+ EOS) given ``prompts``."""
    s = completion_stats(model, tokenizer, prompts, completions, max_completion_tokens, batch_size)
    return s["nll"], s["tokens"]


def word_perplexity(nll: float, words: int) -> float:
    """``exp(nll / words)``: perplexity per word (NaN without words)."""
    if words < 0:
        raise ValueError(f"words must be >= 0, got {words}")
    return math.exp(nll / words) if words else float("nan")


def completion_stats(model, tokenizer, prompts, completions, max_completion_tokens=32, batch_size=16):
    """``{"nll", "tokens", "words"}`` of ``completions`` given ``prompts`` (rendered strings).

    ``nll`` sums the negative log-likelihood over every completion token including EOS (the
    completion as :func:`hf_persona.data.ppg.encode_example` builds it, cut to
    ``max_completion_tokens``); ``tokens`` counts them; ``words`` counts the words of the scored
    completion tokens decoded without special tokens
    (:func:`hf_persona.training.persona_extractor.count_words`, as PAL's ``ppl_word``). Per-token
    perplexity is ``exp(nll / tokens)``, per-word ``exp(nll / words)`` (:func:`word_perplexity`),
    which compares generators whose tokenizers differ.
    """
    import torch

    from .persona_extractor import count_words

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    model.eval()
    dev = _device(model)
    total, count, words = 0.0, 0, 0
    for start in range(0, len(prompts), batch_size):
        encs = [D.encode_example(tokenizer, p, c, max_completion_tokens)
                for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size])]
        n = max(len(e["input_ids"]) for e in encs)
        ids = torch.full((len(encs), n), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encs), n), dtype=torch.long)
        labels = torch.full((len(encs), n), -100, dtype=torch.long)
        for i, e in enumerate(encs):
            L = len(e["input_ids"])
            scored = [t for t, m in zip(e["input_ids"], e["completion_mask"]) if m]
            words += count_words(tokenizer.decode(scored, skip_special_tokens=True))
            ids[i, :L] = torch.tensor(e["input_ids"])
            mask[i, :L] = 1
            cm = torch.tensor(e["completion_mask"], dtype=torch.bool)
            labels[i, :L] = torch.where(cm, torch.tensor(e["input_ids"]), torch.tensor(-100))
        with torch.no_grad():
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        tgt = labels[:, 1:].to(dev)
        keep = tgt != -100
        tok_lp = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total += float(-(tok_lp * keep).sum())
        count += int(keep.sum())
    return {"nll": total, "tokens": count, "words": words}


# ----------------------------------------------------------------------------------------------
# critic
# ----------------------------------------------------------------------------------------------
def _persona_text(p):
    if isinstance(p, str):
        return p
    if isinstance(p, (list, tuple)) and all(isinstance(x, str) for x in p):
        return " ".join(p)
    raise TypeError(f"a persona must be a string or a list of strings, got {type(p).__name__}")


class CriticScorer:
    """A frozen critic: positive-class probability of (persona, response) pairs, batched.

    ``path`` is a folder saved by :func:`train_critic` (any 2-label sequence classifier works).
    """

    def __init__(self, path, batch_size=64, max_length=None, device=None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1:
            raise HFPersonaError(f"critic batch_size must be >= 1, got {batch_size}")
        p = Path(str(path))
        if not (p / "config.json").is_file():
            raise HFPersonaError(f"critic folder {str(path)!r} has no config.json; train one with "
                                 "'hf-persona train critic' or pass a saved 2-label classifier")
        self.tokenizer = AutoTokenizer.from_pretrained(p)
        self.model = AutoModelForSequenceClassification.from_pretrained(p)
        if self.model.config.num_labels != 2:
            raise HFPersonaError(f"the critic must have 2 labels, {path} has {self.model.config.num_labels}")
        self.model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.batch_size = batch_size
        # the length the critic was trained with (ppg_meta.json), else 128
        self.max_length = max_length or read_meta(p).get("max_length", 128)
        self._torch = torch
        self.calls = 0

    def probs(self, personas, responses):
        """P(label = 1 | persona, response) for each pair."""
        torch = self._torch
        if len(personas) != len(responses):
            raise ValueError(f"{len(personas)} personas but {len(responses)} responses")
        personas = [_persona_text(p) for p in personas]
        for r in responses:
            if not isinstance(r, str):
                raise TypeError(f"responses must be strings, got {type(r).__name__}")
        out = []
        dev = _device(self.model)
        for start in range(0, len(personas), self.batch_size):
            self.calls += 1
            enc = self.tokenizer(personas[start:start + self.batch_size], responses[start:start + self.batch_size],
                                 truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            with torch.no_grad():
                logits = self.model(**{k: v.to(dev) for k, v in enc.items()}).logits.float()
            out.extend(torch.softmax(logits, -1)[:, 1].tolist())
        return out

    def rewards(self, personas, responses, mode="label"):
        """+1/-1 from the predicted label (``mode="label"``, the paper) or the probability (``"prob"``)."""
        if mode not in ("label", "prob"):
            raise HFPersonaError(f"critic reward mode must be 'label' or 'prob', got {mode!r}")
        probs = self.probs(personas, responses)
        if mode == "prob":
            return probs
        return [1.0 if p > 0.5 else -1.0 for p in probs]


def train_critic(train_rows, config=None, *older, dev_rows=None, **kwargs) -> RecipeResult:
    """Train the critic on (s, r) positives and swapped negatives (section 3.3); report dev accuracy.

    Args:
        train_rows: PERSONA-CHAT dialogues with both personas (``read_personachat`` rows).
        config: a :class:`~hf_persona.training.configs.CriticTrainingConfig`, or the output folder (then
            ``kwargs`` are its fields). The earlier positional ``base`` and ``dev_rows`` after it still
            work (with a ``DeprecationWarning``), and so does the keyword ``base`` (now ``backbone``).
        dev_rows: held-back dialogues: the saved critic's accuracy on their pairs (at most
            ``max_dev_pairs``) goes into the summary.

    ``max_length`` must leave room for the whole persona (about 50 word pieces for five
    sentences) plus the response: truncation removes persona words first, and a critic that
    cannot see the persona can only guess. A short linear warm-up (``warmup_ratio``, or
    ``warmup_steps``) keeps the fresh classification head from pushing the encoder into always
    predicting one class. Returns a :class:`~hf_persona.training.recipe.RecipeResult`: the summary
    written to ``ppg_meta.json``, the output folder and the trained classifier.
    """
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from ..backbones import resolve
    from ..utils import set_seed
    from .common import last_checkpoint, train_resumable

    kwargs = older_positional("train_critic", ("backbone", "dev_rows"), older, kwargs)
    dev_rows = kwargs.pop("dev_rows", dev_rows)
    cfg = CriticTrainingConfig.build(config, **kwargs)
    seed, batch_size, max_length = cfg.seed, cfg.batch_size, cfg.max_length
    use_omp_threads()
    set_seed(seed)
    path = resolve(cfg.backbone)
    tok = AutoTokenizer.from_pretrained(path)
    extra = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **extra)
    pairs = D.critic_examples(train_rows)
    if not pairs:
        raise HFPersonaError("no critic examples: the training dialogues have no utterances")

    def enc(batch):
        e = tok(batch["persona"], batch["response"], truncation=True, max_length=max_length)
        e["labels"] = batch["label"]
        return e

    ds = Dataset.from_list(pairs).shuffle(seed=seed)
    ds = ds.map(enc, batched=True, remove_columns=["persona", "response", "label"])
    out = Path(cfg.output_dir)
    ckpt = out / "checkpoints"
    planned = cfg.max_steps if cfg.max_steps > 0 else math.ceil(len(ds) / batch_size * cfg.epochs)
    warmup_steps = cfg.warmup_steps or int(cfg.warmup_ratio * planned)
    args = trainer_arguments(
        TrainingArguments, ckpt, batch_size=batch_size, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=cfg.max_steps, epochs=cfg.epochs, warmup_steps=warmup_steps, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, progress=cfg.progress,
        ddp_find_unused_parameters=False,  # every parameter of a sequence classifier takes part
    )
    budget = time_budget_callback(cfg.budget_minutes)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok),
                      callbacks=[budget])
    resume_from = last_checkpoint(ckpt) if cfg.resume else None
    t0 = time.monotonic()
    result = train_resumable(trainer, resume=cfg.resume)  # SIGTERM/SIGINT: checkpoint, then stop
    seconds = time.monotonic() - t0
    if args.should_save:  # rank 0 of a multi-process run writes the folder
        trainer.model.save_pretrained(out)
        tok.save_pretrained(out)
    meta = {"task": "critic", "base": str(cfg.backbone), "train_pairs": len(pairs), "steps": trainer.state.global_step,
            **run_size(args, trainer.state),
            "train_loss": float(result.training_loss), "seconds": seconds, "resumed_from": resume_from,
            "budget_minutes": cfg.budget_minutes,
            "stopped_by_budget": budget.stopped_early, "learning_rate": cfg.learning_rate, "max_length": max_length,
            "warmup_steps": warmup_steps,
            "batch_size": batch_size}
    if dev_rows is not None and args.should_save:  # the saved critic, read back where it was written
        dev_pairs = D.critic_examples(dev_rows)[:cfg.max_dev_pairs]
        meta["dev_accuracy"] = critic_accuracy(CriticScorer(out, max_length=max_length), dev_pairs)
        meta["dev_pairs"] = len(dev_pairs)
    write_summary(meta, out / META_FILE, args)
    return RecipeResult(write_summary(meta, cfg.json_out, args), out, trainer.model)


def critic_accuracy(critic, pairs) -> float:
    """Fraction of (persona, response, label) pairs the critic labels correctly (threshold 0.5)."""
    scorer = critic if isinstance(critic, CriticScorer) else CriticScorer(critic)
    if not pairs:
        raise HFPersonaError("critic accuracy needs at least one pair")
    probs = scorer.probs([p["persona"] for p in pairs], [p["response"] for p in pairs])
    return sum(int((pr > 0.5) == bool(p["label"])) for pr, p in zip(probs, pairs)) / len(pairs)


# ----------------------------------------------------------------------------------------------
# the pipeline and its evaluation
# ----------------------------------------------------------------------------------------------
def generate_personas(ppg_model, ppg_tok, turns, max_prompt_tokens=DEFAULT_MAX_PROMPT_TOKENS,
                      max_new_tokens=None, batch_size=16, do_sample=False):
    """Generated partner personas (one list of sentences per turn) from a PPG model."""
    max_new_tokens = max_new_tokens or DEFAULT_MAX_COMPLETION_TOKENS[D.PPG]
    ex = task_examples(D.PPG, turns, ppg_tok, max_prompt_tokens)
    if len(ex) != len(turns):
        raise HFPersonaError("some turns do not fit the PPG prompt length; raise max_prompt_tokens")
    texts = generate(ppg_model, ppg_tok, [e["prompt"] for e in ex], max_new_tokens, batch_size, do_sample)
    return texts, [D.split_persona(t) or [t] for t in texts]


#: moved to hf_persona.evaluation.ppg / training.recipe (the old names still import, with a DeprecationWarning)
__getattr__ = moved_names(__name__, {"evaluate": "hf_persona.evaluation.ppg:evaluate_ppg",
                                     "cpu_precision": "hf_persona.training.recipe"})
