"""PPG benchmark: critic, supervised PPG/DRG, the BM25 top-3 gold baseline, RLOO, evaluation.

Data: ``../shared/data/personachat/valid_both_original_no_cands.txt`` (1,000 dialogues): the
first 800 dialogues train every model, the last 200 are the development set (never trained
on). Offline MiniLM backbones, seed 0. Each supervised stage stops after ``--budget-minutes``
(wall clock, the CPU is shared); RL runs ``--rounds`` x (PPG phase, DRG phase) of
``--steps-per-phase`` RLOO steps. Writes ``benchmarks/results/ppg.json`` with the issue's keys
plus the budgets actually used. Stages whose output folder already holds a finished model
are reused (re-running resumes after a kill).

    OMP_NUM_THREADS=1 python benchmarks/ppg.py --budget-minutes 6 --work /tmp/ppg_bench

``--backbone smollm2`` trains the two generators on SmolLM2-135M-Instruct with the chat-template
prompt format (the critic stays MiniLM, trained as above) and writes
``benchmarks/results/ppg_causal.json``: per-word perplexities (``drg.sft.ppl_word``...), BLEU of
PPG against the gold partner personas, ten verbatim sample outputs, the steps and examples each
stage saw, the MiniLM figures of ``ppg.json`` beside (``minilm.*``; its per-token DRG PPL converted
to per word with the word pieces per word of MiniLM measured on the same dev completions), and
whether LoRA or full fine-tuning was used (``--tuning auto`` measures both for a few steps and
keeps the one that trains more tokens per second).

    OMP_NUM_THREADS=1 python benchmarks/ppg.py --backbone smollm2 --work /tmp/ppg_causal
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="PERSONA-CHAT both-personas file (default: shared data)")
    ap.add_argument("--work", default="/tmp/ppg_bench", help="folder for models and checkpoints")
    ap.add_argument("--out", default=None,
                    help="results file (default: benchmarks/results/ppg.json, ppg_causal.json for a causal backbone)")
    ap.add_argument("--backbone", default="minilm",
                    help="generator backbone: minilm (BERT decoder) or a causal LM (smollm2, a Hub id, a folder)")
    ap.add_argument("--tuning", choices=["auto", "full", "lora"], default="auto",
                    help="causal backbones: full fine-tuning, LoRA, or measure both (tokens/s) and keep the faster")
    ap.add_argument("--lora-modules", default="q_proj,k_proj,v_proj,o_proj")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-lr", type=float, default=3e-4, help="supervised learning rate with LoRA")
    ap.add_argument("--rl-lora-lr", type=float, default=1e-4, help="RL learning rate with LoRA")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="causal backbones: keep TRL's gradient checkpointing (off here: memory fits, steps are faster)")
    ap.add_argument("--measure-steps", type=int, default=3, help="steps per variant for --tuning auto")
    ap.add_argument("--samples", type=int, default=10, help="verbatim dev samples written to the results")
    ap.add_argument("--minilm-results", default=str(ROOT / "benchmarks" / "results" / "ppg.json"),
                    help="the MiniLM results to quote beside a causal backbone's")
    ap.add_argument("--stop-after", choices=["sft", "rl"], default=None,
                    help="stop after the supervised stages or after RL (a later run reuses them)")
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
    ap.add_argument("--max-prompt-tokens", type=int, default=None,
                    help="default 128 (MiniLM word pieces); 256 for a causal backbone (its chat template and "
                         "system message take ~60 tokens; 95%% of DRG prompts fit in 237)")
    ap.add_argument("--critic-lr", type=float, default=5e-5)
    ap.add_argument("--gen-lr", type=float, default=None,
                    help="supervised generator learning rate (paper: 5e-4, the MiniLM default; causal full "
                         "fine-tuning: 5e-5; LoRA: --lora-lr)")
    ap.add_argument("--critic-batch-size", type=int, default=32)
    ap.add_argument("--critic-max-length", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=None,
                    help="keep only the first N MiniLM layers in every model (a cheaper warm start)")
    ap.add_argument("--skip-bm25-training", action="store_true",
                    help="evaluate the BM25 top-3 baseline with the gold-trained DRG instead of training one")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    causal = a.backbone != "minilm"
    if a.out is None:
        a.out = str(ROOT / "benchmarks" / "results" / ("ppg_causal.json" if causal else "ppg.json"))
    if a.max_prompt_tokens is None:
        a.max_prompt_tokens = 256 if causal else 128

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.data import read_personachat, shared_data_file
    from hf_persona.evaluation.ppg import evaluate_ppg
    from hf_persona.training import ppg as P
    from hf_persona.training.ppg_rl import train_rl
    from hf_persona.utils import atomic_write_json

    data = shared_data_file(a.data)
    ds = read_personachat(data)
    train_rows = list(ds.select(range(800)))
    dev_rows = list(ds.select(range(800, len(ds))))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def done(path):
        return (Path(path) / P.META_FILE).is_file()

    # LoRA or full fine-tuning (causal backbones): measured, or as asked
    tuning, measured = "full", None
    if causal:
        tuning, measured = a.tuning, None
        if a.tuning == "auto":
            measured = _measure_tuning(a, train_rows, work / "measure", log)
            tuning = measured["choice"]
    lora = [m.strip() for m in a.lora_modules.split(",") if m.strip()] if tuning == "lora" else None
    gen_lr = a.gen_lr or (a.lora_lr if lora else (5e-5 if causal else 5e-4))
    rl_lr = a.rl_lora_lr if lora else a.rl_lr
    backbone_desc = ("minilm (all-MiniLM-L6-v2; generators: BertLMHeadModel is_decoder=True)" if not causal else
                     f"{a.backbone} (AutoModelForCausalLM, chat-template prompts; critic: MiniLM)")
    res = {"data": os.path.basename(data), "train_dialogues": len(train_rows), "dev_dialogues": len(dev_rows),
           "backbone": backbone_desc, "seed": a.seed,
           "command": "OMP_NUM_THREADS=%s python benchmarks/ppg.py %s" % (
               os.environ.get("OMP_NUM_THREADS", ""), " ".join(sys.argv[1:] if argv is None else argv)),
           "budget": {"supervised_stage_minutes": a.budget_minutes, "rl_rounds": a.rounds,
                      "rl_steps_per_phase": a.steps_per_phase, "rl_learning_rate": rl_lr,
                      "rl_batch_size": a.rl_batch_size, "rl_reward_mode": a.rl_reward_mode,
                      "rl_normalize_advantages": a.rl_normalize_advantages, "rl_num_generations": 2,
                      "eval_examples": a.eval_examples, "cold_start_examples": a.cold_start_examples,
                      "max_context": a.max_context, "max_prompt_tokens": a.max_prompt_tokens,
                      "critic_lr": a.critic_lr, "generator_lr": gen_lr, "critic_batch_size": a.critic_batch_size,
                      "critic_max_length": a.critic_max_length, "num_layers": a.num_layers or (None if causal else 6),
                      "torch_threads": torch.get_num_threads()}}
    if causal:
        res["tuning"] = {"choice": tuning, "lora_modules": lora, "lora_r": a.lora_r if lora else None,
                         "measured": measured,
                         "note": "LoRA adapters are merged into the saved generators (plain causal-LM folders)"}

    def stage(name, path, fn):
        if done(path):
            log(f"{name}: reusing {path}")
            return P.read_meta(path)
        log(f"{name}: training")
        meta = dict(fn())  # the summary alone (the RecipeResult also holds the trained model)
        log(f"{name}: {json.dumps({k: meta.get(k) for k in ('steps', 'train_loss', 'seconds', 'dev_accuracy')})}")
        return meta

    critic = work / "critic"
    cm = stage("critic", critic, lambda: P.train_critic(
        train_rows, critic, dev_rows=dev_rows, backbone="minilm", budget_minutes=a.budget_minutes, seed=a.seed,
        learning_rate=a.critic_lr, batch_size=a.critic_batch_size, max_length=a.critic_max_length,
        num_layers=None if causal else a.num_layers))
    res["critic.accuracy"] = cm["dev_accuracy"]
    res["critic.steps"] = cm["steps"]
    res["critic.dev_pairs"] = cm.get("dev_pairs")
    res["critic.budget_minutes"] = cm.get("budget_minutes")
    res["critic.examples_seen"] = cm["steps"] * cm.get("batch_size", a.critic_batch_size)
    gen_kw = dict(budget_minutes=a.budget_minutes, max_context=a.max_context, seed=a.seed,
                  max_prompt_tokens=a.max_prompt_tokens, logging_steps=5, num_layers=a.num_layers,
                  learning_rate=gen_lr)
    if lora:
        gen_kw.update(lora_target_modules=lora, lora=a.lora_r)
    if causal:
        gen_kw.update(gradient_checkpointing=a.gradient_checkpointing)
    ppg, drg, drg_bm25 = work / "ppg_sft", work / "drg_sft", work / "drg_bm25"
    gen_kw.update(backbone=a.backbone)
    pm = stage("ppg sft", ppg, lambda: P.train_generator(train_rows, ppg, task="ppg", **gen_kw))
    dm = stage("drg sft", drg, lambda: P.train_generator(train_rows, drg, task="drg", **gen_kw))
    res["ppg.sft.steps"], res["drg.sft.steps"] = pm["steps"], dm["steps"]
    for name, meta in (("ppg.sft", pm), ("drg.sft", dm)):
        res[f"{name}.examples_seen"] = meta["steps"] * meta["batch_size"]
        res[f"{name}.train_examples"] = meta["train_examples"]
        res[f"{name}.minutes"] = meta["seconds"] / 60
        res[f"{name}.stopped_by_budget"] = meta.get("stopped_by_budget")
    bm25_path = None
    if not a.skip_bm25_training:
        bm = stage("drg bm25", drg_bm25, lambda: P.train_generator(train_rows, drg_bm25, task="drg",
                                                                    partner_persona="bm25", **gen_kw))
        res["drg.bm25.steps"] = bm["steps"]
        bm25_path = drg_bm25
    res["drg.bm25_gold.trained_with_bm25"] = bm25_path is not None
    if a.stop_after == "sft":
        log("stopping after the supervised stages (--stop-after sft)")
        return

    log("rl: training")
    state = train_rl(ppg, drg, critic, train_rows, work / "rl", rounds=a.rounds, steps_per_phase=a.steps_per_phase,
                     learning_rate=rl_lr, batch_size=a.rl_batch_size, num_generations=2, max_context=a.max_context,
                     max_prompt_tokens=a.max_prompt_tokens, reward_mode=a.rl_reward_mode, seed=a.seed, log=log,
                     normalize_advantages=a.rl_normalize_advantages, lora_target_modules=lora, lora=a.lora_r,
                     gradient_checkpointing=a.gradient_checkpointing if causal else None)
    res["rl.seconds_per_step"] = state.get("seconds_per_step")
    res["rl.reward_share"] = state.get("reward_share")
    res["rl.steps"] = state["steps"]
    res["rl.completions_seen"] = state["steps"] * a.rl_batch_size
    res["rl.prompts_seen"] = state["steps"] * a.rl_batch_size // 2
    res["rl.phase_steps"] = {k: v["steps"] for k, v in state["phases"].items()}
    res["rl.train_rewards"] = {k: v["train_rewards"] for k, v in state["phases"].items()}
    if a.stop_after == "rl":
        log("stopping after RL (--stop-after rl)")
        return

    ev = dict(max_examples=a.eval_examples, cold_start_examples=a.cold_start_examples, seed=a.seed,
              max_prompt_tokens=a.max_prompt_tokens)
    n_samples = a.samples if causal else 0
    log("eval: sft")
    sft = evaluate_ppg(ppg, drg, critic, dev_rows, bm25_drg_path=bm25_path, n_samples=n_samples, **ev)
    log("eval: rl")
    rl = evaluate_ppg(state["ppg"], state["drg"], critic, dev_rows, cold_start=(), n_samples=n_samples, **ev)
    res["drg.sft.ppl"], res["drg.rl.ppl"] = sft["drg.ppl"], rl["drg.ppl"]
    res["drg.sft.ppl_word"], res["drg.rl.ppl_word"] = sft["drg.ppl_word"], rl["drg.ppl_word"]
    res["drg.sft.reward"], res["drg.rl.reward"] = sft["drg.reward"], rl["drg.reward"]
    res["drg.sft.reward_prob"], res["drg.rl.reward_prob"] = sft["drg.reward_prob"], rl["drg.reward_prob"]
    res["drg.bm25_gold.ppl"] = sft["drg.bm25_gold.ppl"]
    res["drg.bm25_gold.ppl_word"] = sft["drg.bm25_gold.ppl_word"]
    res["ppg.distinct2"] = sft["ppg.distinct2"]
    res["ppg.rl.distinct2"] = rl["ppg.distinct2"]
    res["ppg.bleu"], res["ppg.rl.bleu"] = sft["ppg.bleu"], rl["ppg.bleu"]
    res["ppg.ppl_word"], res["ppg.rl.ppl_word"] = sft["ppg.ppl_word"], rl["ppg.ppl_word"]
    if causal:
        res["samples.sft"] = sft.pop("samples", None)
        res["samples.rl"] = rl.pop("samples", None)
    res["sft"] = sft
    res["rl"] = rl
    res["rl.reward_gain"] = rl["drg.reward"] - sft["drg.reward"]
    res["rl.reward_prob_gain"] = rl["drg.reward_prob"] - sft["drg.reward_prob"]
    res["rl.ppl_change"] = rl["drg.ppl"] / sft["drg.ppl"] - 1.0
    res["rl.ppl_word_change"] = rl["drg.ppl_word"] / sft["drg.ppl_word"] - 1.0
    res["goal.reward_up_ppl_within_5pct"] = bool(res["rl.reward_gain"] > 0 and res["rl.ppl_change"] <= 0.05)
    if causal:
        _minilm_reference(a, res, dev_rows, log)
    res["total_minutes_this_run"] = (time.monotonic() - t_all) / 60
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, res)
    log(f"wrote {a.out}")
    print(json.dumps({k: v for k, v in res.items() if k not in ("sft", "rl", "samples.sft", "samples.rl")},
                     indent=2))


def _measure_tuning(a, train_rows, folder, log):
    """Time a few supervised DRG steps with full fine-tuning and with LoRA on the real data; return
    tokens per second of each (steps after the first) and the faster one (``choice``)."""
    import resource
    import statistics

    from transformers import TrainerCallback

    from hf_persona.data import ppg as D
    from hf_persona.training import ppg as P

    if a.measure_steps < 2:
        raise SystemExit("--measure-steps must be >= 2 (the first step is not timed)")
    lora = [m.strip() for m in a.lora_modules.split(",") if m.strip()]
    out = {"steps": a.measure_steps, "batch_size": 8, "task": "drg",
           "gradient_checkpointing": a.gradient_checkpointing}

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    for variant in ("full", "lora"):
        model, tok = P.load_generator(a.backbone)
        turns = D.build_turns(train_rows[:40], min_context=1, max_context=a.max_context)
        ds = P.sft_dataset(P.task_examples("drg", turns, tok, a.max_prompt_tokens), tok, 32)
        tokens_per_example = statistics.mean(len(r) for r in ds["input_ids"])
        timer = Timer()
        trainer = P.make_sft_trainer(model, tok, ds, folder / variant, max_steps=a.measure_steps, batch_size=8,
                                     learning_rate=a.lora_lr if variant == "lora" else 5e-5,
                                     max_length=a.max_prompt_tokens + 34, logging_steps=1, save_steps=10 ** 6,
                                     seed=a.seed, lora_target_modules=lora if variant == "lora" else None,
                                     lora=a.lora_r, callbacks=[timer],
                                     gradient_checkpointing=a.gradient_checkpointing)
        trainer.train()
        sec = statistics.mean(timer.times[1:])
        out[variant] = {"peak_rss_gb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,"seconds_per_step": sec, "tokens_per_second": tokens_per_example * 8 / sec,
                        "tokens_per_minute": tokens_per_example * 8 / sec * 60, "step_seconds": timer.times,
                        "tokens_per_example": tokens_per_example}
        log(f"measure {variant}: {sec:.1f} s/step, {tokens_per_example * 8 / sec:.0f} tokens/s")
        del trainer, model
    out["choice"] = "lora" if out["lora"]["tokens_per_second"] > out["full"]["tokens_per_second"] else "full"
    out["rule"] = "the variant with more training tokens per second (steps after the first, batch 8, DRG examples)"
    return out


def _minilm_reference(a, res, dev_rows, log):
    """The MiniLM figures of ``ppg.json`` beside the causal ones; its per-token DRG PPL converted to
    per word with MiniLM word pieces (+ [SEP]) per word on the same dev completions."""
    import math
    import random

    from transformers import AutoTokenizer

    from hf_persona.backbones import resolve
    from hf_persona.data import ppg as D
    from hf_persona.training import ppg as P
    from hf_persona.training.persona_extractor import count_words

    ref_path = Path(a.minilm_results)
    if not ref_path.is_file():
        log(f"no MiniLM results at {ref_path}; minilm.* keys left out")
        return
    ref = json.loads(ref_path.read_text())
    # the MiniLM run's dev sample: evaluate()'s seeded sample of the dev turns (same seed, same size)
    turns = D.build_turns(dev_rows, min_context=1)
    n = ref.get("budget", {}).get("eval_examples", a.eval_examples)
    sample = random.Random(ref.get("seed", a.seed)).sample(turns, min(n, len(turns)))
    tok = D.prepare_tokenizer(AutoTokenizer.from_pretrained(resolve("minilm")))
    drg_max = P.DEFAULT_MAX_COMPLETION_TOKENS[D.DRG]
    pieces = words = 0
    for t in sample:
        ids = D.encode_completion(tok, D.response_target(t["response"]), drg_max)
        pieces += len(ids)
        words += count_words(tok.decode(ids, skip_special_tokens=True))
    ratio = pieces / words
    res["minilm.tokens_per_word"] = ratio
    res["minilm.tokens_per_word.method"] = (
        f"MiniLM word pieces of the {len(sample)} gold dev responses that ppg.json's drg.sft.ppl was scored on "
        f"(evaluate()'s seeded sample, seed {ref.get('seed', a.seed)}), each cut to {drg_max} tokens incl. the "
        f"[SEP] end token ({pieces} tokens) / their words by count_words ({words}); ppl_word = ppl ** ratio "
        "(the same summed NLL divided by words instead of tokens). The MiniLM models themselves are gone.")
    for key in ("drg.sft.ppl", "drg.rl.ppl", "drg.bm25_gold.ppl"):
        if key in ref:
            res[f"minilm.{key}"] = ref[key]
            res[f"minilm.{key}_word"] = math.exp(math.log(ref[key]) * ratio)
    for key in ("drg.sft.reward", "drg.rl.reward", "drg.sft.reward_prob", "drg.rl.reward_prob", "ppg.distinct2",
                "critic.accuracy", "ppg.sft.steps", "drg.sft.steps", "rl.steps", "rl.reward_gain", "rl.ppl_change"):
        if key in ref:
            res[f"minilm.{key}"] = ref[key]
    if "sft" in ref and "ppg.bleu" in ref["sft"]:
        res["minilm.ppg.bleu"] = ref["sft"]["ppg.bleu"]
    if "rl" in ref and "ppg.bleu" in ref["rl"]:
        res["minilm.ppg.rl.bleu"] = ref["rl"]["ppg.bleu"]
    res["goal.drg_ppl_word_halved"] = bool(res["drg.sft.ppl_word"] <= 0.5 * res["minilm.drg.sft.ppl_word"])


if __name__ == "__main__":
    main()
