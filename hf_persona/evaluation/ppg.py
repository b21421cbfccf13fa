"""Evaluation of partner-persona generation (PPG -> DRG) and its RL ablation on PERSONA-CHAT.

:func:`run_ppg_eval` evaluates the supervised pipeline and, when given, the RL variants
(PPG after RL, DRG after RL, both) with :func:`evaluate_ppg` (DRG PPL / BLEU /
ROUGE-L and the critic reward, PPG PPL / BLEU / ROUGE-L / Distinct-1/2, cold start N=1,2,3) and
returns the table that ``hf-persona eval ppg`` prints with the flat metrics.
"""

from __future__ import annotations

import math

from ..data import ppg as D
from ..errors import HFPersonaError
from ..training import ppg as P


def run_ppg_eval(ppg_path, drg_path, critic_path, rows, *, ppg_rl_path=None, drg_rl_path=None, bm25_drg_path=None,
                 max_examples=200, cold_start_examples=100, seed=0, json_out=None):
    """Evaluate each system on the dialogues ``rows``; return ``(table_rows, flat_metrics)``.

    Systems: ``sft`` (``ppg_path`` + ``drg_path``), then ``rl_ppg_only``, ``rl_drg_only`` and
    ``rl_both`` as far as ``ppg_rl_path`` / ``drg_rl_path`` are given. ``flat_metrics`` keys are
    ``system.metric``, plus the unprefixed ``metric`` of the last (fullest) system; written to
    ``json_out`` when given. ``bm25_drg_path`` (the BM25 top-3 gold baseline) and ``critic_path``
    (adds ``drg.reward``) are optional.
    """
    from hf_persona.utils import atomic_write_json

    kw = dict(max_examples=max_examples, cold_start_examples=cold_start_examples, seed=seed)
    metrics = {}
    systems = [("sft", ppg_path, drg_path)]
    if ppg_rl_path:
        systems.append(("rl_ppg_only", ppg_rl_path, drg_path))
    if drg_rl_path:
        systems.append(("rl_drg_only", ppg_path, drg_rl_path))
    if ppg_rl_path and drg_rl_path:
        systems.append(("rl_both", ppg_rl_path, drg_rl_path))
    for name, p, d in systems:
        first = name == "sft"
        m = evaluate_ppg(p, d, critic_path, rows, bm25_drg_path=bm25_drg_path if first else None,
                     cold_start=(1, 2, 3), **kw)
        for k, v in m.items():
            metrics[f"{name}.{k}"] = v
    final = systems[-1][0]
    for k, v in list(metrics.items()):  # unprefixed keys: the last (fullest) system
        if k.startswith(final + "."):
            metrics[k[len(final) + 1:]] = v
    if json_out:
        atomic_write_json(json_out, metrics)
    table = [{"system": n, **{k: metrics.get(f"{n}.{k}") for k in ("drg.ppl", "drg.bleu", "drg.rouge_l",
                                                                      "drg.reward", "ppg.ppl", "ppg.distinct2")}}
             for n, _, _ in systems]
    return table, metrics


def evaluate_ppg(
    ppg_path,
    drg_path,
    critic_path,
    dev_rows,
    *,
    max_examples=200,
    max_prompt_tokens=P.DEFAULT_MAX_PROMPT_TOKENS,
    cold_start=(1, 2, 3),
    cold_start_examples=100,
    bm25_drg_path=None,
    seed=0,
    batch_size=16,
    n_samples=0,
):
    """Metrics of the PPG -> DRG pipeline on dev dialogues (flat dict, metric -> number).

    * ``drg.ppl/bleu/rouge_l``: the DRG conditioned on PPG-generated personas (the framework at
      inference), PPL of the gold response, BLEU/ROUGE-L of greedy responses.
    * ``drg.gold.ppl``: the same DRG with all gold partner-persona sentences.
    * ``drg.bm25_gold.ppl/bleu/rouge_l``: the BM25 top-3 gold baseline (``bm25_drg_path`` when
      given — a DRG trained on BM25 top-3 gold — else this DRG).
    * ``ppg.ppl/bleu/rouge_l/distinct1/distinct2``: PPG against the gold partner persona;
      ``gold.distinct1/2`` of the gold personas for reference.
    * ``drg.reward``: mean critic reward (+1/-1) of (generated persona, greedy response);
      ``drg.reward_prob``: the mean positive-class probability.
    * ``cold_start.nN.ppl``: DRG PPL on turns with exactly N earlier utterances.
    * every ``*.ppl`` is per token (EOS included); the matching ``*.ppl_word`` is per word
      (:func:`hf_persona.training.ppg.completion_stats`: the same NLL over the words of the completion), which compares
      generators with different tokenizers.
    * ``n_samples > 0`` adds ``samples``: that many dev turns verbatim (context, gold and generated
      partner persona, gold and generated response) — the only non-number entry.
    """
    import random

    from .metrics import bleu, distinct_n, perplexity, rouge_l

    P.use_omp_threads()
    turns = D.build_turns(dev_rows, min_context=1)
    rng = random.Random(seed)
    sample = rng.sample(turns, min(max_examples, len(turns))) if max_examples else turns
    ppg_model, ppg_tok = P.load_generator(ppg_path)
    drg_model, drg_tok = P.load_generator(drg_path)
    ppg_max = P.read_meta(ppg_path).get("max_completion_tokens", P.DEFAULT_MAX_COMPLETION_TOKENS[D.PPG])
    drg_max = P.read_meta(drg_path).get("max_completion_tokens", P.DEFAULT_MAX_COMPLETION_TOKENS[D.DRG])
    m = {"n_examples": len(sample)}

    # PPG
    ppg_ex = P.task_examples(D.PPG, sample, ppg_tok, max_prompt_tokens)
    st = P.completion_stats(ppg_model, ppg_tok, [e["prompt"] for e in ppg_ex], [e["completion"] for e in ppg_ex],
                          ppg_max, batch_size)
    m["ppg.ppl"] = perplexity(st["nll"], st["tokens"])
    m["ppg.ppl_word"] = P.word_perplexity(st["nll"], st["words"])
    texts = P.generate(ppg_model, ppg_tok, [e["prompt"] for e in ppg_ex], ppg_max, batch_size)
    gold_p = [" ".join(t["partner_persona"]) for t in sample]
    m["ppg.bleu"] = bleu(texts, gold_p)
    m["ppg.rouge_l"] = rouge_l(texts, gold_p)
    m["ppg.distinct1"] = distinct_n(texts, 1)
    m["ppg.distinct2"] = distinct_n(texts, 2)
    m["gold.distinct1"] = distinct_n(gold_p, 1)
    m["gold.distinct2"] = distinct_n(gold_p, 2)
    gen_p = [D.split_persona(t) or [t] for t in texts]

    def drg_metrics(prefix, model, tok, personas, with_generation=True):
        ex = P.task_examples(D.DRG, sample, tok, max_prompt_tokens, personas, keep_unfit=True)
        if any(e is None for e in ex):
            raise HFPersonaError("some dev turns do not fit the DRG prompt length; raise max_prompt_tokens")
        st = P.completion_stats(model, tok, [e["prompt"] for e in ex], [e["completion"] for e in ex], drg_max,
                              batch_size)
        m[f"{prefix}.ppl"] = perplexity(st["nll"], st["tokens"])
        m[f"{prefix}.ppl_word"] = P.word_perplexity(st["nll"], st["words"])
        m[f"{prefix}.completion_tokens"] = st["tokens"]
        m[f"{prefix}.completion_words"] = st["words"]
        if with_generation:
            hyps = P.generate(model, tok, [e["prompt"] for e in ex], drg_max, batch_size)
            refs = [t["response"] for t in sample]
            m[f"{prefix}.bleu"] = bleu(hyps, refs)
            m[f"{prefix}.rouge_l"] = rouge_l(hyps, refs)
            return hyps
        return None

    hyps = drg_metrics("drg", drg_model, drg_tok, gen_p)
    drg_metrics("drg.gold", drg_model, drg_tok, "gold", with_generation=False)
    if bm25_drg_path:
        bm_model, bm_tok = P.load_generator(bm25_drg_path)
        drg_metrics("drg.bm25_gold", bm_model, bm_tok, "bm25")
        del bm_model
    else:
        drg_metrics("drg.bm25_gold", drg_model, drg_tok, "bm25")
    probs = None
    if critic_path:
        probs = P.CriticScorer(critic_path).probs(gen_p, hyps)
        m["drg.reward"] = sum(1.0 if p > 0.5 else -1.0 for p in probs) / len(probs)  # the paper's +1/-1
        m["drg.reward_prob"] = sum(probs) / len(probs)
    if n_samples:
        m["samples"] = [
            {"dialogue_id": t["dialogue_id"], "turn": t["turn"], "self_persona": list(t["self_persona"]),
             "context": [f"{who}: {u}" for who, u in zip(e["context_speakers"], e["context"])],
             "gold_partner_persona": list(t["partner_persona"]), "ppg": texts[i], "gold_response": t["response"],
             "drg": hyps[i], **({"critic_prob": probs[i]} if probs is not None else {})}
            for i, (t, e) in enumerate(zip(sample, ppg_ex)) if i < n_samples]

    # cold start: turns with exactly N earlier utterances
    for nctx in cold_start or ():
        sub = [t for t in turns if t["n_context"] == nctx]
        sub = rng.sample(sub, min(cold_start_examples, len(sub)))
        if not sub:
            continue
        _, personas = P.generate_personas(ppg_model, ppg_tok, sub, max_prompt_tokens, ppg_max, batch_size)
        ex = P.task_examples(D.DRG, sub, drg_tok, max_prompt_tokens, personas)
        st = P.completion_stats(drg_model, drg_tok, [e["prompt"] for e in ex], [e["completion"] for e in ex],
                              drg_max, batch_size)
        m[f"cold_start.n{nctx}.ppl"] = perplexity(st["nll"], st["tokens"])
        m[f"cold_start.n{nctx}.ppl_word"] = P.word_perplexity(st["nll"], st["words"])
        ex = P.task_examples(D.DRG, sub, drg_tok, max_prompt_tokens, "bm25")
        nll, n = P.completion_nll(drg_model, drg_tok, [e["prompt"] for e in ex], [e["completion"] for e in ex],
                                drg_max, batch_size)
        m[f"cold_start.n{nctx}.bm25_gold.ppl"] = perplexity(nll, n)
        m[f"cold_start.n{nctx}.n_examples"] = len(sub)
    return {k: (float(v) if isinstance(v, float) else v) for k, v in m.items() if not
            (isinstance(v, float) and math.isnan(v))}
