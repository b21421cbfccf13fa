"""Evaluation of partner-persona generation (PPG -> DRG) and its RL ablation on PERSONA-CHAT.

:func:`run_ppg_eval` evaluates the supervised pipeline and, when given, the RL variants
(PPG after RL, DRG after RL, both) with :func:`hf_persona.training.ppg.evaluate` (DRG PPL / BLEU /
ROUGE-L and the critic reward, PPG PPL / BLEU / ROUGE-L / Distinct-1/2, cold start N=1,2,3) and
returns the table that ``hf-persona eval ppg`` prints with the flat metrics.
"""

from __future__ import annotations


def run_ppg_eval(ppg_path, drg_path, critic_path, rows, *, ppg_rl_path=None, drg_rl_path=None, bm25_drg_path=None,
                 max_examples=200, cold_start_examples=100, seed=0, json_out=None):
    """Evaluate each system on the dialogues ``rows``; return ``(table_rows, flat_metrics)``.

    Systems: ``sft`` (``ppg_path`` + ``drg_path``), then ``rl_ppg_only``, ``rl_drg_only`` and
    ``rl_both`` as far as ``ppg_rl_path`` / ``drg_rl_path`` are given. ``flat_metrics`` keys are
    ``system.metric``, plus the unprefixed ``metric`` of the last (fullest) system; written to
    ``json_out`` when given. ``bm25_drg_path`` (the BM25 top-3 gold baseline) and ``critic_path``
    (adds ``drg.reward``) are optional.
    """
    from hf_persona.training.ppg import evaluate
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
        m = evaluate(p, d, critic_path, rows, bm25_drg_path=bm25_drg_path if first else None,
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
