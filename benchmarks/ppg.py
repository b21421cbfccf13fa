"""PPG benchmark: critic, supervised PPG/DRG, the BM25 top-3 gold baseline, RLOO, evaluation.

Data: ``../shared/data/personachat/valid_both_original_no_cands.txt`` (1,000 dialogues): the
first 800 dialogues train every model, the last 200 are the development set (never trained
on). Offline MiniLM backbones, seed 0. Each supervised stage stops after ``--budget-minutes``
(wall clock, the CPU is shared); RL runs ``--rounds`` x (PPG phase, DRG phase) of
``--steps-per-phase`` RLOO steps. Writes ``benchmarks/results/ppg.json`` with the issue's keys
plus the budgets actually used. Stages whose output folder already holds a finished model
are reused (re-running resumes after a kill).

    OMP_NUM_THREADS=1 python benchmarks/ppg.py --budget-minutes 6 --work /tmp/ppg_bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="PERSONA-CHAT both-personas file (default: shared data)")
    ap.add_argument("--work", default="/tmp/ppg_bench", help="folder for models and checkpoints")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ppg.json"))
    ap.add_argument("--budget-minutes", type=float, default=20.0, help="wall-clock budget per supervised stage")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps-per-phase", type=int, default=8)
    ap.add_argument("--rl-lr", type=float, default=2e-5)
    ap.add_argument("--rl-batch-size", type=int, default=8)
    ap.add_argument("--rl-normalize-advantages", action="store_true",
                    help="scale RLOO advantages to mean 0 / std 1 per batch (TRL option)")
    ap.add_argument("--rl-reward-mode", choices=["label", "prob"], default="prob",
                    help="reward during RL: the paper's +1/-1, or the critic's probability (denser signal)")
    ap.add_argument("--eval-examples", type=int, default=150)
    ap.add_argument("--cold-start-examples", type=int, default=60)
    ap.add_argument("--max-context", type=int, default=2)
    ap.add_argument("--max-prompt-tokens", type=int, default=128)
    ap.add_argument("--critic-lr", type=float, default=5e-5)
    ap.add_argument("--gen-lr", type=float, default=5e-4, help="supervised generator learning rate (paper: 5e-4)")
    ap.add_argument("--critic-batch-size", type=int, default=32)
    ap.add_argument("--critic-max-length", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=None,
                    help="keep only the first N MiniLM layers in every model (a cheaper warm start)")
    ap.add_argument("--skip-bm25-training", action="store_true",
                    help="evaluate the BM25 top-3 baseline with the gold-trained DRG instead of training one")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.data import read_personachat, shared_data_file
    from hf_persona.training import ppg as P
    from hf_persona.training.ppg_rl import train_rl
    from hf_persona.utils import atomic_write_json

    data = shared_data_file(a.data)
    ds = read_personachat(data)
    train_rows = list(ds.select(range(800)))
    dev_rows = list(ds.select(range(800, len(ds))))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    res = {"data": os.path.basename(data), "train_dialogues": len(train_rows), "dev_dialogues": len(dev_rows),
           "backbone": "minilm (all-MiniLM-L6-v2; generators: BertLMHeadModel is_decoder=True)", "seed": a.seed,
           "budget": {"supervised_stage_minutes": a.budget_minutes, "rl_rounds": a.rounds,
                      "rl_steps_per_phase": a.steps_per_phase, "rl_learning_rate": a.rl_lr,
                      "rl_batch_size": a.rl_batch_size, "rl_reward_mode": a.rl_reward_mode,
                      "rl_normalize_advantages": a.rl_normalize_advantages, "rl_num_generations": 2,
                      "eval_examples": a.eval_examples, "cold_start_examples": a.cold_start_examples,
                      "max_context": a.max_context, "max_prompt_tokens": a.max_prompt_tokens,
                      "critic_lr": a.critic_lr, "generator_lr": a.gen_lr, "critic_batch_size": a.critic_batch_size,
                      "critic_max_length": a.critic_max_length, "num_layers": a.num_layers or 6, "torch_threads": torch.get_num_threads()}}
    t_all = time.monotonic()

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def done(path):
        return (Path(path) / P.META_FILE).is_file()

    def stage(name, path, fn):
        if done(path):
            log(f"{name}: reusing {path}")
            return P.read_meta(path)
        log(f"{name}: training")
        meta = fn()
        log(f"{name}: {json.dumps({k: meta.get(k) for k in ('steps', 'train_loss', 'seconds', 'dev_accuracy')})}")
        return meta

    critic = work / "critic"
    cm = stage("critic", critic, lambda: P.train_critic(
        train_rows, critic, "minilm", dev_rows, budget_minutes=a.budget_minutes, seed=a.seed,
        learning_rate=a.critic_lr, batch_size=a.critic_batch_size, max_length=a.critic_max_length,
        num_layers=a.num_layers))
    res["critic.accuracy"] = cm["dev_accuracy"]
    res["critic.steps"] = cm["steps"]
    res["critic.dev_pairs"] = cm.get("dev_pairs")
    gen_kw = dict(budget_minutes=a.budget_minutes, max_context=a.max_context, seed=a.seed,
                  max_prompt_tokens=a.max_prompt_tokens, logging_steps=5, num_layers=a.num_layers,
                  learning_rate=a.gen_lr)
    ppg, drg, drg_bm25 = work / "ppg_sft", work / "drg_sft", work / "drg_bm25"
    pm = stage("ppg sft", ppg, lambda: P.train_generator("ppg", train_rows, ppg, **gen_kw))
    dm = stage("drg sft", drg, lambda: P.train_generator("drg", train_rows, drg, **gen_kw))
    res["ppg.sft.steps"], res["drg.sft.steps"] = pm["steps"], dm["steps"]
    bm25_path = None
    if not a.skip_bm25_training:
        bm = stage("drg bm25", drg_bm25,
                   lambda: P.train_generator("drg", train_rows, drg_bm25, partner_persona="bm25", **gen_kw))
        res["drg.bm25.steps"] = bm["steps"]
        bm25_path = drg_bm25
    res["drg.bm25_gold.trained_with_bm25"] = bm25_path is not None

    log("rl: training")
    state = train_rl(ppg, drg, critic, train_rows, work / "rl", rounds=a.rounds, steps_per_phase=a.steps_per_phase,
                     learning_rate=a.rl_lr, batch_size=a.rl_batch_size, num_generations=2, max_context=a.max_context,
                     max_prompt_tokens=a.max_prompt_tokens, reward_mode=a.rl_reward_mode, seed=a.seed, log=log,
                     normalize_advantages=a.rl_normalize_advantages)
    res["rl.seconds_per_step"] = state.get("seconds_per_step")
    res["rl.reward_share"] = state.get("reward_share")
    res["rl.steps"] = state["steps"]
    res["rl.train_rewards"] = {k: v["train_rewards"] for k, v in state["phases"].items()}

    ev = dict(max_examples=a.eval_examples, cold_start_examples=a.cold_start_examples, seed=a.seed,
              max_prompt_tokens=a.max_prompt_tokens)
    log("eval: sft")
    sft = P.evaluate(ppg, drg, critic, dev_rows, bm25_drg_path=bm25_path, **ev)
    log("eval: rl")
    rl = P.evaluate(state["ppg"], state["drg"], critic, dev_rows, cold_start=(), **ev)
    res["drg.sft.ppl"], res["drg.rl.ppl"] = sft["drg.ppl"], rl["drg.ppl"]
    res["drg.sft.reward"], res["drg.rl.reward"] = sft["drg.reward"], rl["drg.reward"]
    res["drg.sft.reward_prob"], res["drg.rl.reward_prob"] = sft["drg.reward_prob"], rl["drg.reward_prob"]
    res["drg.bm25_gold.ppl"] = sft["drg.bm25_gold.ppl"]
    res["ppg.distinct2"] = sft["ppg.distinct2"]
    res["ppg.rl.distinct2"] = rl["ppg.distinct2"]
    res["sft"] = sft
    res["rl"] = rl
    res["rl.reward_gain"] = rl["drg.reward"] - sft["drg.reward"]
    res["rl.ppl_change"] = rl["drg.ppl"] / sft["drg.ppl"] - 1.0
    res["goal.reward_up_ppl_within_5pct"] = bool(res["rl.reward_gain"] > 0 and res["rl.ppl_change"] <= 0.05)
    res["total_minutes"] = (time.monotonic() - t_all) / 60
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, res)
    log(f"wrote {a.out}")
    print(json.dumps({k: v for k, v in res.items() if k not in ("sft", "rl")}, indent=2))


if __name__ == "__main__":
    main()
