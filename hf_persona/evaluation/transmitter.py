"""Evaluation of the P2Bot Transmitter on PERSONA-CHAT: Hits@1 of N by the NUP head, F1 of the
beam-searched (eq. 3 re-ranked) response, perplexity of the real response."""

from __future__ import annotations

import random

from ..errors import HFPersonaError


def transmitter_eval_examples(dataset, n_candidates: int = 20, seed: int = 0, max_examples: int | None = None) -> list:
    """Responder turns of ``dataset`` with ``n_candidates`` candidates (the real reply first).

    Distractors are replies of the same split (any dialogue, never equal to the real one), drawn
    with ``random.Random(seed + index)``. ``max_examples`` keeps a seeded random subset.
    """
    from hf_persona.data import sample_candidates
    from hf_persona.training.transmitter import dialogue_examples

    if n_candidates < 2:
        raise HFPersonaError(f"n_candidates must be at least 2, got {n_candidates}")
    examples = dialogue_examples(dataset, both_sides=False)
    if not examples:
        raise HFPersonaError("no responder turns to evaluate")
    if max_examples is not None and len(examples) > max_examples:
        keep = sorted(random.Random(seed).sample(range(len(examples)), max_examples))
        examples = [examples[i] for i in keep]
    pool = [u for row in dataset for u in row["utterances"] if u.strip()]
    out = []
    for i, ex in enumerate(examples):
        cands = [ex["response"]] + sample_candidates(pool, n_candidates - 1, exclude={ex["response"]},
                                                     seed=seed + i)
        out.append({**ex, "candidates": cands})
    return out


def evaluate_transmitter(model, tokenizer, examples, num_beams: int = 2, alpha: float | None = None,
                         generate_batch_size: int = 8, with_f1: bool = True, max_new_tokens: int | None = None,
                         samples: int = 0) -> dict:
    """``hits@1`` (%, real reply ranked first among the candidates by log p(next)), ``f1`` (unigram
    F1 of the generated reply, 0-100), ``ppl`` (of the real replies, ``<eos>`` included).

    ``ppl_word`` is the perplexity per word, which compares models whose tokenizers differ: the same
    summed NLL divided by the number of words of the scored replies (decoded from their tokens,
    :func:`~hf_persona.training.persona_extractor.count_words`). ``samples`` > 0 adds ``samples``:
    the first N examples' last partner utterance, persona, real and generated reply, verbatim.
    """
    import math

    import numpy as np

    from hf_persona.evaluation import hits_at_k, mrr, perplexity, unigram_f1
    from hf_persona.models.transmitter import build_example, encode_response, pad_batch, special_token_ids
    from hf_persona.training.persona_extractor import count_words

    if not examples:
        raise HFPersonaError("no examples to evaluate")
    model.eval()
    cfg = model.config
    pad = special_token_ids(tokenizer)["pad"]
    scores = np.array([model.rank_candidates(tokenizer, ex["persona"], ex["history"], ex["candidates"])
                       for ex in examples])
    nll, n_tok = 0.0, 0
    n_words = sum(count_words(tokenizer.decode(encode_response(tokenizer, ex["response"], cfg.max_response_tokens)[:-1],
                                               skip_special_tokens=True)) for ex in examples)
    for start in range(0, len(examples), 16):
        chunk = examples[start:start + 16]
        batch = pad_batch([build_example(tokenizer, ex["persona"], ex["history"], ex["response"],
                                         cfg.max_context_tokens, cfg.max_response_tokens) for ex in chunk], pad)
        s = model.score_batch(batch)
        nll -= float(s["logprob_sum"].sum())
        n_tok += int(s["n_tokens"].sum())
    metrics = {
        "hits@1": 100.0 * hits_at_k(scores, 1),
        "mrr": 100.0 * mrr(scores),
        "ppl": perplexity(nll, n_tok),
        "ppl_word": math.exp(nll / n_words) if n_words else math.nan,
        "n_examples": len(examples),
        "n_candidates": int(scores.shape[1]),
    }
    if with_f1:
        f1s, generated = [], []
        for start in range(0, len(examples), generate_batch_size):
            chunk = examples[start:start + generate_batch_size]
            replies = model.respond_batch(tokenizer, [ex["persona"] for ex in chunk], [ex["history"] for ex in chunk],
                                          num_beams=num_beams, alpha=alpha, max_new_tokens=max_new_tokens)
            f1s.extend(unigram_f1(r, ex["response"]) for r, ex in zip(replies, chunk))
            generated.extend(replies)
        metrics["f1"] = float(np.mean(f1s))
        if samples:
            metrics["samples"] = [{"persona": list(ex["persona"]), "partner_said": ex["history"][-1] if ex["history"] else "",
                                   "gold": ex["response"], "generated": r}
                                  for ex, r in zip(examples[:samples], generated[:samples])]
    return metrics


def run_transmitter_eval(models, data, dev_from: int = 800, n_candidates: int = 20, max_examples: int | None = None,
                         num_beams: int = 2, alpha: float | None = None, receiver=None,
                         user_model=None, selfplay_episodes: int = 50, seed: int = 0, json_out=None, samples: int = 0):
    """Evaluate ``models`` (list of ``(name or None, folder)``) on the dialogues of ``data`` from
    ``dev_from`` on. Returns ``(table_rows, flat_metrics)``; ``flat_metrics`` keys are ``metric``
    for one unnamed model, else ``name.metric``; written to ``json_out`` when given."""
    from pathlib import Path

    from hf_persona.data import read_personachat
    from hf_persona.training.selfplay import evaluate_selfplay, selfplay_seeds
    from hf_persona.training.transmitter import load_transmitter
    from hf_persona.utils import atomic_write_json

    dataset = read_personachat(data) if isinstance(data, (str, Path)) else data
    if dev_from and len(dataset) > dev_from:
        dataset = dataset.select(range(dev_from, len(dataset)))
    elif dev_from and len(dataset) <= dev_from:
        raise HFPersonaError(f"{data}: only {len(dataset)} dialogues, none from index {dev_from} on to evaluate; "
                             "lower --dev-from")
    examples = transmitter_eval_examples(dataset, n_candidates=n_candidates, seed=seed, max_examples=max_examples)
    user = None
    if receiver is not None:
        from hf_persona.rewards.persona_perception import load_receiver

        receiver = load_receiver(receiver)
        user, _ = load_transmitter(user_model or models[0][1])
        seeds = selfplay_seeds(dataset)[:selfplay_episodes]
    rows, flat = [], {}
    for name, path in models:
        model, tokenizer = load_transmitter(path)
        metrics = evaluate_transmitter(model, tokenizer, examples, num_beams=num_beams, alpha=alpha, samples=samples)
        if receiver is not None:
            sp = evaluate_selfplay(model, user, tokenizer, seeds, receiver, seed=seed)
            metrics["persona_reward"] = sp["persona_reward"]
            metrics["persona_score"] = sp["persona_score"]
        rows.append({"variant": name or Path(path).name, **{k: v for k, v in metrics.items() if k != "samples"}})
        for k, v in metrics.items():
            flat[k if name is None else f"{name}.{k}"] = v
    if json_out:
        atomic_write_json(json_out, flat)
    return rows, flat
