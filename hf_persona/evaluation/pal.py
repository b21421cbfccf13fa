"""Evaluation of PAL and its baselines on PESConv (trained by :mod:`hf_persona.training.pal`).

:func:`evaluate_pal` reports the paper's Table 3 columns:

* ``acc``: strategy accuracy, the arg-max over the eight strategy tokens of the first decoder
  step (teacher forced);
* ``ppl``: exp of the mean token NLL over ``[strategy] + response + eos`` (this includes the
  strategy token, as the authors' code does; the paper's Table 3 uses that number) and
  ``ppl_no_strategy`` over ``response + eos`` only;
* on sampled responses (paper settings: top-k 10, top-p 0.9, temperature 0.5, repetition
  penalty 1.03, 10-50 new tokens): ``bleu2``, ``bleu4``, ``dist1``, ``dist2``, ``ead1``, ``ead2``,
  ``rougeL`` and ``cos_sim``, the mean cosine similarity between a generated response and the
  persona text (sentences joined by a space), with MiniLM mean-pooled sentence embeddings, over
  examples that have a persona. Optionally with the strategy contrastive logits processor.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

from ..errors import HFPersonaError
from ..training.pal import (
    PAPER_DECODING,
    TRAINING_CONFIG_NAME,
    VariantCollator,
    is_pal_adapter,
    load_pal_adapter,
    load_pesconv_splits,
    pesconv_examples,
)
from ..utils import atomic_write_json


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-like encoder (default MiniLM)."""

    def __init__(self, model: str = "minilm", batch_size: int = 64, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        from ..backbones import resolve

        path = resolve(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def encode(self, texts: Sequence[str]):
        import torch

        chunks = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                states = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.zeros(0, self.model.config.hidden_size)

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        if len(a) != len(b):
            raise ValueError(f"cosine needs pairs: got {len(a)} and {len(b)} texts")
        if not a:
            return []
        return (self.encode(a) * self.encode(b)).sum(-1).tolist()


def load_pal_for_eval(model_dir):
    """(model, tokenizer, training config) of a folder saved by :func:`train_pal`."""
    from transformers import AutoTokenizer

    from ..models.pal import PALForCausalLM, PALForConditionalGeneration

    p = Path(model_dir)
    cfg_path = p / TRAINING_CONFIG_NAME
    if not cfg_path.is_file():
        raise HFPersonaError(f"{p}: not a PAL training output (expected {TRAINING_CONFIG_NAME} written by `train pal`)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if is_pal_adapter(p):
        model, tokenizer, _ = load_pal_adapter(p)
        return model, tokenizer, cfg
    model_class = PALForCausalLM if cfg.get("kind") == "causal" else PALForConditionalGeneration
    model = model_class.from_pretrained(str(p)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(p))
    return model, tokenizer, cfg


def _is_causal(model) -> bool:
    return getattr(model.config, "model_type", None) == "pal_causal"


def _batches(seq, size):
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


PERSONA_INPUTS = ("given", "placeholder", "none")


def placeholder_persona_ids(tokenizer, example: dict) -> list[int]:
    """The persona input of ``example`` as if no persona were known yet: its frame around the placeholder token."""
    from ..models.pal import PERSONA_PLACEHOLDER
    from ..models.pal.processing_pal import special_frame

    n_pre, n_suf = map(len, special_frame(tokenizer))
    ids = example["persona_input_ids"]
    return ids[:n_pre] + [tokenizer.convert_tokens_to_ids(PERSONA_PLACEHOLDER)] + (ids[len(ids) - n_suf:] if n_suf else [])


def teacher_forced_metrics(model, tokenizer, examples, variant: str, batch_size: int = 16,
                           persona_input: str = "given", per_example: bool = False) -> dict:
    """Strategy accuracy and perplexities (with / without the strategy token) over ``examples``.

    When the examples carry their persona text (``pesconv_examples(..., with_text=True)``), ``ppl`` is
    also split by whether a persona was known for the turn: ``ppl_with_persona`` / ``ppl_without_persona``
    (None for an empty part) and ``n_with_persona``; this tells where a persona-fusing model gains or loses.

    ``persona_input`` (``pal`` variant only) is an ablation of what the trained model reads:
    ``"given"`` (the example's persona), ``"placeholder"`` (every persona replaced by the placeholder,
    as on turns where none is known yet) or ``"none"`` (no persona pass: the decoder reads the plain
    dialogue states H_D, the persona-free logits of contrastive decoding). The split keeps following
    whether the turn *had* a persona.

    ``per_example`` adds ``per_example``: for every example, in order, its summed NLL (``nll``, strategy
    token included), number of predicted tokens (``tokens``) and whether the strategy was predicted
    (``strategy_correct``), for paired significance tests between models scored on the same examples
    (``evaluation.paired_bootstrap_nll``, ``evaluation.mcnemar_exact``) and ``nll_reply``, the NLL of
    the reply without the strategy token.

    ``ppl_word`` is the perplexity per word, which compares models whose tokenizers differ: the
    replies' NLL without the strategy token (their words and end-of-turn token) divided by the
    number of words in the scored reply tokens, decoded
    (:func:`~hf_persona.training.persona_extractor.count_words`).
    """
    import torch

    from ..training.persona_extractor import count_words

    if persona_input not in PERSONA_INPUTS:
        raise HFPersonaError(f"persona_input={persona_input!r}; expected one of {list(PERSONA_INPUTS)}")
    if persona_input != "given":
        if variant != "pal":
            raise HFPersonaError(f"persona_input={persona_input!r} ablates the persona fusion; only the 'pal' "
                                 f"variant has one (got {variant!r})")
        if persona_input == "placeholder":
            examples = [dict(e, persona_input_ids=placeholder_persona_ids(tokenizer, e)) for e in examples]
    collate = VariantCollator(tokenizer, "no_persona" if persona_input == "none" else variant)
    strategy_ids = torch.tensor(model.config.strategy_token_ids)
    nll_all = nll_resp = 0.0
    n_all = n_resp = correct = 0
    split = bool(examples) and all("persona" in e for e in examples)
    part_nll, part_n = [0.0, 0.0], [0, 0]  # [without, with] persona
    rows = []
    causal = _is_causal(model)
    nll_word, n_words = 0.0, 0
    for chunk in _batches(examples, batch_size):
        batch = collate(chunk)
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch, labels=labels).logits.float()
        if causal:  # position t predicts token t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        valid = labels != -100
        first = valid.int().argmax(dim=1)  # the strategy token: the first label of each row
        rows_index = torch.arange(labels.shape[0])
        response = valid.clone()
        response[rows_index, first] = False
        nll_all += nll[valid].sum().item()
        n_all += int(valid.sum())
        row_nll = (nll * valid).sum(dim=1).tolist()
        row_n = valid.sum(dim=1).tolist()
        if split:
            for f, r_nll, r_n in zip(chunk, row_nll, row_n):
                part_nll[bool(f["persona"])] += r_nll
                part_n[bool(f["persona"])] += int(r_n)
        nll_resp += nll[response].sum().item()
        n_resp += int(response.sum())
        reply_nll = (nll * response).sum(dim=1).tolist()
        nll_word += sum(reply_nll)
        n_words += sum(count_words(tokenizer.decode([t for t in f["labels"] if t != -100][1:], skip_special_tokens=True))
                       for f in chunk)
        predicted = logits[rows_index, first][:, strategy_ids].argmax(-1)
        hit = predicted == torch.tensor([int(f["strategy_id"]) for f in chunk])
        if per_example:
            rows.extend({"nll": r_nll, "tokens": int(r_n), "nll_reply": r_reply, "strategy_correct": bool(ok)}
                        for r_nll, r_n, r_reply, ok in zip(row_nll, row_n, reply_nll, hit.tolist()))
        correct += int(hit.sum())
    out = {
        "acc": 100.0 * correct / len(examples),
        "ppl": math.exp(nll_all / n_all),
        "ppl_no_strategy": math.exp(nll_resp / n_resp),
        "n_teacher_forced": len(examples),
    }
    if n_words:
        out["ppl_word"] = math.exp(nll_word / n_words)
    if split:
        out["ppl_without_persona"] = math.exp(part_nll[0] / part_n[0]) if part_n[0] else None
        out["ppl_with_persona"] = math.exp(part_nll[1] / part_n[1]) if part_n[1] else None
        out["n_with_persona"] = sum(1 for e in examples if e["persona"])
    if per_example:
        out["per_example"] = rows
    return out


def generate_responses(model, tokenizer, examples, variant: str, *, alpha=None, batch_size: int = 16, seed: int = 0,
                       decoding: dict | None = None, force_strategy_first: bool = False) -> tuple[list[str], list]:
    """Sample a response for each example (paper decoding); returns (texts, strategy names chosen).

    ``alpha``: None = plain decoding; otherwise the strategy contrastive processor with that
    alpha (``"table"`` = the config's per-strategy table, paper Table 2; a number or level name
    for every strategy; a dict). Only the ``pal`` variant can use it (it needs the persona pass).
    The random generator is re-seeded per batch, so two calls that differ only in ``alpha``
    draw from the same random stream. ``force_strategy_first`` restricts the first generated
    token to the eight strategy tokens (``prefix_allowed_tokens_fn``), for models too briefly
    trained to open with one on their own (the contrastive processor picks alpha from that token).
    """
    import torch
    from transformers import LogitsProcessorList

    settings = dict(PAPER_DECODING if decoding is None else decoding)
    causal = _is_causal(model)
    collate = VariantCollator(tokenizer, variant, padding_side="left" if causal else "right")
    texts, strategies = [], []
    for b, chunk in enumerate(_batches(examples, batch_size)):
        if causal:  # the prompt alone (the examples carry prompt + reply)
            chunk = [{**{k: v for k, v in f.items() if k != "labels"}, "input_ids": f["input_ids"][: f["prompt_length"]]}
                     for f in chunk]
        batch = collate(chunk)
        batch.pop("labels", None)
        width = batch["input_ids"].shape[1] if causal else 1
        kwargs = dict(settings)
        if alpha is not None:
            if variant != "pal":
                raise HFPersonaError("strategy contrastive decoding needs the persona: use it with the 'pal' variant")
            proc = model.strategy_contrast_processor(None if alpha == "table" else alpha)
            kwargs["logits_processor"] = LogitsProcessorList([proc])
        if force_strategy_first:
            strategy_ids = list(model.config.strategy_token_ids)
            everything = list(range(model.get_output_embeddings().weight.shape[0]))

            def allowed(batch_id, prefix, _s=strategy_ids, _all=everything, _first=width):
                return _s if prefix.shape[-1] == _first else _all

            kwargs["prefix_allowed_tokens_fn"] = allowed
        torch.manual_seed(seed + b)
        with torch.no_grad():
            out = model.generate(**batch, **kwargs)
        if causal:
            strategies.extend(model.strategies_of(out, model.strategy_position(batch["input_ids"])))
            out = out[:, width:]
        else:
            strategies.extend(model.strategies_of(out))
        texts.extend(t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True))
    return texts, strategies


def generation_metrics(hyps: Sequence[str], refs: Sequence[str], personas: Sequence[Sequence[str]], vocab_size: int,
                       embedder: SentenceEmbedder | None = None) -> dict:
    """BLEU-2/4, Distinct-1/2, EAD-1/2, ROUGE-L and response-persona cosine similarity."""
    from .metrics import bleu, distinct_n, ead_n, rouge_l

    refs = [r.lower() for r in refs]
    hyps = [h.lower() for h in hyps]
    out = {
        "bleu2": bleu(hyps, refs, 2),
        "bleu4": bleu(hyps, refs, 4),
        "dist1": distinct_n(hyps, 1),
        "dist2": distinct_n(hyps, 2),
        "ead1": ead_n(hyps, 1, vocab_size),
        "ead2": ead_n(hyps, 2, vocab_size),
        "rougeL": rouge_l(hyps, refs),
        "mean_response_words": sum(len(h.split()) for h in hyps) / max(len(hyps), 1),
    }
    pairs = [(h, " ".join(p)) for h, p in zip(hyps, personas) if p]
    if embedder is None:
        embedder = SentenceEmbedder()
    sims = embedder.cosine([a for a, _ in pairs], [b for _, b in pairs])
    out["cos_sim"] = sum(sims) / len(sims) if sims else float("nan")
    out["n_cos_sim"] = len(sims)
    return out


def persona_information(rows: Sequence[dict], tokenizer, max_source_length: int, max_target_length: int = 50) -> dict:
    """How much of each reference response a persona could supply that the encoder's dialogue window does not.

    For every example of ``pesconv_examples(rows, ...)`` (one per answerable supporter turn) the
    response's content words (``persona_extractor.content_words``: stemmed, function words dropped)
    are looked up in the dialogue window the model reads (its ``input_ids``, decoded), in the
    whole dialogue history before the turn, and in the persona known at the turn. Shares are of
    response content words, pooled over examples:

    * ``in_window``: already visible to any model that reads the dialogue;
    * ``in_history_not_window``: said earlier but cut off by ``max_source_length`` - the most a
      perfect summary of the history could add;
    * ``persona_only``: in the persona but not in the window - what this persona does add
      (examples with a persona; ``in_window_with_persona``, ``in_persona`` likewise).

    A persona that supplies almost no response word beyond the window cannot lower perplexity by
    much, whatever the fusion does.
    """
    from ..training.persona_extractor import content_words

    examples, _ = pesconv_examples(rows, tokenizer, "pal", max_source_length=max_source_length,
                                   max_persona_length=max_source_length, max_target_length=max_target_length,
                                   with_text=True)
    # said_before[dialogue][i]: content words of the utterances before turn i, built once per dialogue
    said_before = {}
    for r, row in enumerate(rows):
        prefix = [set()]
        for utt in row["utterances"]:
            prefix.append(prefix[-1] | content_words(utt))
        said_before[row.get("dialogue_id", r)] = prefix
    total = in_window = in_history = 0
    p_total = p_window = p_persona = p_only = 0
    with_persona = with_gain = 0
    for ex in examples:
        words = content_words(ex["response"])
        window = content_words(tokenizer.decode(ex["input_ids"], skip_special_tokens=True))
        history = said_before[ex["dialogue_id"]][ex["turn"]]
        total += len(words)
        in_window += len(words & window)
        in_history += len((words & history) - window)
        if ex["persona"]:
            persona = content_words(" ".join(ex["persona"]))
            with_persona += 1
            p_total += len(words)
            p_window += len(words & window)
            p_persona += len(words & persona)
            gain = len((words & persona) - window)
            p_only += gain
            with_gain += gain > 0

    def share(a, b):
        return a / b if b else None

    return {
        "max_source_length": max_source_length,
        "examples": len(examples),
        "response_content_words": total,
        "in_window": share(in_window, total),
        "in_history_not_window": share(in_history, total),
        "examples_with_persona": with_persona,
        "response_content_words_with_persona": p_total,
        "in_window_with_persona": share(p_window, p_total),
        "in_persona": share(p_persona, p_total),
        "persona_only": share(p_only, p_total),
        "examples_where_persona_adds_a_word": with_gain,
    }


def evaluate_pal(model_dir, data, *, split: str = "valid", max_examples: int | None = None,
                 max_generate: int | None = None, alpha=None, batch_size: int = 16, seed: int = 0,
                 decoding: dict | None = None, embedder: SentenceEmbedder | None = None, json_out=None,
                 return_samples: int = 5, teacher_forced: bool = True, force_strategy_first: bool = False,
                 max_source_length: int | None = None, per_example: bool = False) -> dict:
    """Table 3 metrics of a model trained by :func:`train_pal` on PESConv ``split`` (valid or train).

    ``max_examples`` caps the teacher-forced examples (ACC, PPL) and ``max_generate`` the sampled
    ones (the first ``max_generate`` of the same list). ``alpha`` as in :func:`generate_responses`.
    ``teacher_forced=False`` skips ACC / PPL (decoding comparisons only need the generations).
    ``max_source_length`` evaluates with another dialogue window than the model was trained with
    (e.g. 128 tokens, the paper's). ``per_example`` adds, for paired tests between models scored on
    the same examples, ``per_example`` (:func:`teacher_forced_metrics` rows, each with its
    ``dialogue_id`` and ``has_persona``) and ``generated`` (dialogue id, persona, reference and
    generated reply of every sampled example); neither goes to ``json_out``.
    """
    model, tokenizer, cfg = load_pal_for_eval(model_dir)
    variant = cfg["variant"]
    train_rows, valid_rows = load_pesconv_splits(data, seed=seed)
    rows = {"valid": valid_rows, "train": train_rows}.get(split)
    if rows is None:
        raise HFPersonaError(f"split must be 'valid' or 'train', got {split!r}")
    lengths = {k: cfg[k] for k in ("max_source_length", "max_persona_length", "max_target_length")}
    if max_source_length is not None:
        if max_source_length < 1:
            raise HFPersonaError(f"max_source_length must be a positive number of tokens, got {max_source_length}")
        lengths["max_source_length"] = max_source_length
    causal = _is_causal(model)
    system = model.config.system_prompt if causal else None
    examples, skipped = pesconv_examples(rows, tokenizer, variant, with_text=True, causal=causal, system_prompt=system,
                                         **lengths)
    if not examples:
        raise HFPersonaError(f"{data}: no {split} examples to evaluate")
    if max_examples:
        examples = examples[:max_examples]
    gen_examples = examples[:max_generate] if max_generate else examples
    t0 = time.monotonic()
    metrics = {"variant": variant, "split": split, "n_examples": len(examples), "n_generated": len(gen_examples),
               "max_source_length": lengths["max_source_length"]}
    if teacher_forced:
        metrics.update(teacher_forced_metrics(model, tokenizer, examples, variant, batch_size, per_example=per_example))
        for row, e in zip(metrics.get("per_example", []), examples):
            row.update(dialogue_id=e["dialogue_id"], has_persona=bool(e["persona"]))
    hyps, chosen = generate_responses(model, tokenizer, gen_examples, variant, alpha=alpha, batch_size=batch_size,
                                      seed=seed, decoding=decoding, force_strategy_first=force_strategy_first)
    metrics["force_strategy_first"] = int(force_strategy_first)
    metrics.update(generation_metrics(hyps, [e["response"] for e in gen_examples], [e["persona"] for e in gen_examples],
                                      len(tokenizer), embedder))
    gold = [e["strategy"] for e in gen_examples]
    metrics["acc_generated"] = 100.0 * sum(c == g for c, g in zip(chosen, gold)) / len(gold)
    metrics["alpha"] = alpha if alpha is None or isinstance(alpha, (str, int, float)) else dict(alpha)
    metrics["decoding"] = dict(PAPER_DECODING if decoding is None else decoding)
    metrics["seconds"] = round(time.monotonic() - t0, 1)
    samples = [
        {"persona": e["persona"], "reference": e["response"], "generated": h, "strategy_gold": e["strategy"],
         "strategy_generated": c}
        for e, h, c in list(zip(gen_examples, hyps, chosen))[:return_samples]
    ]
    if per_example:
        metrics["generated"] = [{"dialogue_id": e["dialogue_id"], "persona": e["persona"], "reference": e["response"],
                                 "generated": h} for e, h in zip(gen_examples, hyps)]
    if json_out:
        # the metrics file stays flat (metric -> number, plus a few labels) for the model card;
        # decoding settings and sample responses go next to it
        atomic_write_json(json_out, {k: v for k, v in metrics.items()
                                     if k not in ("decoding", "per_example", "generated")})
        atomic_write_json(Path(str(json_out) + ".samples.json"), {"decoding": metrics["decoding"], "samples": samples})
    metrics["samples"] = samples
    return metrics
