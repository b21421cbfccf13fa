"""P2Bot Transmitter benchmark: supervised training, self-play variants, evaluation.

Data: ``../shared/data/personachat/valid_both_original_no_cands.txt`` (1,000 dialogues): the first
800 train (supervised examples and self-play seeds), the last 200 are the development set (never
trained on). Offline MiniLM backbone warm-started as a causal decoder (``--backbone minilm``, the
default, writing ``p2bot.json``) or the pretrained causal LM SmolLM2-135M-Instruct in its chat format
(``--backbone smollm2``, writing ``p2bot_causal.json`` with the MiniLM figures of ``p2bot.json`` beside
it under ``minilm.``), seed 0.

Stages (each reused when its summary JSON already exists in ``--work``, so a killed run resumes):

1. ``sft``: supervised Transmitter, ``--sft-minutes`` of wall clock (continues from its checkpoints).
2. self-play from the supervised model, ``--selfplay-minutes`` each (``--runs``): ``selfplay``
   (RS.1 + RS.2 + RS.3 + information penalty, the paper's weights) and the variant table's ``rs1``
   (RS.1 only) and ``rs2`` (RS.1 + RS.2).
3. evaluation on the development dialogues: Hits@1 of ``--candidates`` (NUP head), unigram F1 of
   the beam-2 reply re-ranked by eq. 3, perplexity of the real replies, and the mean RS.3 persona
   reward of the agent on ``--selfplay-episodes`` dev self-play episodes (frozen supervised user).

RS.3 uses the Receiver plugin's ``persona_perception`` reward; by default the zero-shot MiniLM
Receiver (``--receiver minilm``), or pass a trained Receiver folder.

    OMP_NUM_THREADS=1 python benchmarks/p2bot.py --sft-minutes 8 --selfplay-minutes 7 --work /tmp/p2bot_bench
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


BACKBONES = {"minilm": "minilm (all-MiniLM-L6-v2 as causal decoder)",
             "smollm2": "smollm2 (SmolLM2-135M-Instruct, chat format, full fine-tuning)"}


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="PERSONA-CHAT both-personas file (default: shared data)")
    ap.add_argument("--work", default="/tmp/p2bot_bench", help="folder for models and checkpoints")
    ap.add_argument("--out", default=None,
                    help="result JSON (default: benchmarks/results/p2bot.json, p2bot_causal.json for smollm2)")
    ap.add_argument("--backbone", default="minilm", help="minilm (default) or smollm2 (or any causal LM folder)")
    ap.add_argument("--sft-warmup-steps", type=int, default=0)
    ap.add_argument("--samples", type=int, default=10, help="verbatim generated replies kept per model")
    ap.add_argument("--sft-minutes", type=float, default=8.0)
    ap.add_argument("--sft-max-steps", type=int, default=-1,
                    help="stop supervised training after this many steps (-1: epochs/budget decide)")
    ap.add_argument("--sft-lr", type=float, default=1e-4)
    ap.add_argument("--sft-batch-size", type=int, default=8)
    ap.add_argument("--max-context-tokens", type=int, default=128)
    ap.add_argument("--selfplay-minutes", type=float, default=7.0)
    ap.add_argument("--selfplay-lr", type=float, default=2e-5)
    ap.add_argument("--kl-beta", type=float, default=0.0,
                    help="KL penalty to the supervised model during self-play (0: the paper's objective)")
    ap.add_argument("--mask-truncated", action="store_true",
                    help="leave self-play turns cut at the token limit out of the loss")
    ap.add_argument("--sft-weight", type=float, default=0.0,
                    help="supervised loss on real turns added to each self-play update (0: the paper's objective)")
    ap.add_argument("--sft-batch-size-selfplay", type=int, default=8,
                    help="real turns per self-play update for --sft-weight")
    ap.add_argument("--episodes-per-seed", type=int, default=2)
    ap.add_argument("--seeds-per-step", type=int, default=1,
                    help="seed dialogues per optimisation step (each its own baseline group); more = less noisy updates")
    ap.add_argument("--receiver", default="minilm", help="Receiver folder for RS.3 (default: zero-shot MiniLM)")
    ap.add_argument("--runs", default="selfplay,rs1,rs2",
                    help="self-play runs, in order: selfplay (full P2Bot), rs1 (RS.1 only), rs2 (RS.1 + RS.2)")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--eval-examples", type=int, default=100)
    ap.add_argument("--selfplay-episodes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out is None:
        name = "p2bot.json" if args.backbone == "minilm" else "p2bot_causal.json"
        args.out = str(ROOT / "benchmarks" / "results" / name)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.data import shared_data_file
    from hf_persona.evaluation.transmitter import run_transmitter_eval
    from hf_persona.training.selfplay import train_selfplay
    from hf_persona.training.transmitter import train_transmitter
    from hf_persona.utils import atomic_write_json, command_line, machine_description

    machine = machine_description()  # at the start: the load average other jobs put on the CPU

    data = shared_data_file(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # 1. supervised
    sft_dir = work / "sft"
    sft_summary = _load(work / "sft_summary.json")
    if sft_summary is None:
        sft_summary = train_transmitter(sft_dir, train_data=data, backbone=args.backbone, dev_from=800,
                                        warmup_steps=args.sft_warmup_steps,
                                        budget_minutes=args.sft_minutes, max_steps=args.sft_max_steps,
                                        batch_size=args.sft_batch_size,
                                        learning_rate=args.sft_lr, max_context_tokens=args.max_context_tokens,
                                        save_steps=25, seed=args.seed, json_out=work / "sft_summary.json")

    # 2. self-play runs
    receiver = args.receiver
    known = {"rs1": {"language_style": 0.4}, "rs2": {"language_style": 0.4, "discourse_coherence": 0.1},
             "selfplay": None}
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    if "selfplay" not in names or set(names) - set(known):
        raise SystemExit(f"--runs must include 'selfplay' and name only {sorted(known)}")
    runs = {n: known[n] for n in names}
    summaries = {}
    for name, weights in runs.items():
        path = work / f"{name}_summary.json"
        summary = _load(path)
        if summary is None:
            summary = train_selfplay(sft_dir, work / name, train_data=data, receiver=receiver, weights=weights,
                                     episodes_per_seed=args.episodes_per_seed, seeds_per_step=args.seeds_per_step,
                                     learning_rate=args.selfplay_lr,
                                     kl_beta=args.kl_beta, mask_truncated=args.mask_truncated,
                                     sft_weight=args.sft_weight, sft_batch_size=args.sft_batch_size_selfplay,
                                     max_steps=100000, budget_minutes=args.selfplay_minutes, save_steps=10,
                                     dev_from=800, seed=args.seed, json_out=path)
        summaries[name] = summary

    # 3. evaluation (one cached JSON per model, so adding a run later evaluates only the new model)
    flat, rows, eval_seconds, samples = {}, [], {}, {}
    for name, path in [("sft", sft_dir)] + [(n, work / n) for n in runs]:
        cache = work / f"eval_{name}.json"
        if not cache.is_file():
            start = time.monotonic()
            _, metrics = run_transmitter_eval([(None, str(path))], data, dev_from=800, n_candidates=args.candidates,
                                              max_examples=args.eval_examples, num_beams=2, receiver=receiver,
                                              user_model=str(sft_dir), selfplay_episodes=args.selfplay_episodes,
                                              samples=args.samples,
                                              seed=args.seed)
            metrics["eval_seconds"] = time.monotonic() - start
            atomic_write_json(cache, metrics)
        metrics = json.loads(cache.read_text())
        eval_seconds[name] = metrics.pop("eval_seconds", None)
        samples[name] = metrics.pop("samples", None)
        rows.append({"variant": name, **metrics})
        flat.update({f"{name}.{k}": v for k, v in metrics.items()})

    result = {k: v for k, v in flat.items()}
    result["selfplay.seconds_per_episode"] = summaries["selfplay"]["seconds_per_episode"]
    for name, s in summaries.items():
        result[f"{name}.episodes"] = s["episodes"]
        result[f"{name}.steps"] = s["global_step"]
        result[f"{name}.train_seconds"] = s["seconds"]
    # the supervised stage may have run in several resumed pieces: sft_summary*.json
    pieces = [json.loads(p.read_text()) for p in sorted(work.glob("sft_summary*.json"))]
    result["sft.steps"] = max(p["global_step"] for p in pieces)
    result["sft.train_seconds"] = sum(p["seconds"] for p in pieces)
    result["sft.runs"] = len(pieces)
    result["sft.examples_seen"] = result["sft.steps"] * args.sft_batch_size
    gain = result["selfplay.persona_reward"] - result["sft.persona_reward"]
    f1_rel = (result["selfplay.f1"] - result["sft.f1"]) / max(result["sft.f1"], 1e-9)
    result["selfplay.persona_reward_gain"] = gain
    result["selfplay.f1_relative_change"] = f1_rel
    result["criterion.persona_reward_up_and_f1_within_5pct"] = bool(gain > 0 and f1_rel >= -0.05)
    result["config"] = {
        "data": Path(data).name, "train_dialogues": "first 800", "dev_dialogues": "last 200",
        "backbone": BACKBONES.get(args.backbone, args.backbone), "seed": args.seed,
        "sft_budget_minutes_per_run": [p.get("budget_minutes") for p in pieces],
        "sft_lr": sft_summary.get("learning_rate"),
        "sft_batch_size": args.sft_batch_size, "max_context_tokens": args.max_context_tokens,
        "selfplay_budget_minutes": {n: summaries[n].get("budget_minutes") for n in summaries},
        "selfplay_lr": {n: summaries[n].get("learning_rate") for n in summaries},
        "selfplay_kl_beta": {n: summaries[n].get("kl_beta", 0.0) for n in summaries},
        "selfplay_mask_truncated": {n: summaries[n].get("mask_truncated", False) for n in summaries},
        "selfplay_sft_weight": {n: summaries[n].get("sft_weight", 0.0) for n in summaries},
        "selfplay_baseline": "group mean (the episodes_per_seed episodes x 3 turns of one seed)",
        "episodes_per_seed": args.episodes_per_seed, "seeds_per_step": args.seeds_per_step, "turns": 3, "gamma": 0.5,
        "weights_selfplay": summaries["selfplay"]["weights"],
        "receiver": receiver, "candidates": args.candidates, "eval_examples": args.eval_examples,
        "selfplay_eval_episodes": args.selfplay_episodes, "selfplay_eval_agent_decoding": "multinomial sampling",
        "f1_decoding": "beam 2, eq. 3 re-ranking alpha 0.1, max 32 tokens", "hits_at_1_unit": "percent",
        "eval_seconds": eval_seconds, "hardware": machine,
        "variants": list(runs),
    }
    result["samples"] = {n: v for n, v in samples.items() if v}
    if args.backbone != "minilm":
        result.update(minilm_reference(data, args.seed))
    result["command"] = command_line("benchmarks/p2bot.py", argv)
    atomic_write_json(args.out, result)
    from hf_persona.evaluation import format_table

    print(format_table(rows))
    print(json.dumps(result, indent=2))


def minilm_reference(data, seed: int) -> dict:
    """The strongest MiniLM Transmitter's figures under ``minilm.`` (one epoch of supervised training,
    ``p2bot_sft1epoch_seeds4.json``), with its per-word perplexity: the recorded per-token PPL raised
    to the MiniLM word pieces per word (``<eos>`` included, as in the PPL) measured on the same
    development replies (that model is not kept). Its self-play used a trained Receiver for RS.3."""
    import math

    from transformers import AutoTokenizer

    from hf_persona.backbones import resolve
    from hf_persona.data import read_personachat
    from hf_persona.evaluation.transmitter import transmitter_eval_examples
    from hf_persona.models.transmitter import encode_response, prepare_tokenizer
    from hf_persona.training.persona_extractor import count_words

    source = "p2bot_sft1epoch_seeds4.json"
    old = json.loads((ROOT / "benchmarks" / "results" / source).read_text())
    dataset = read_personachat(data)
    dataset = dataset.select(range(800, len(dataset)))
    examples = transmitter_eval_examples(dataset, n_candidates=old["config"]["candidates"], seed=seed,
                                         max_examples=old["config"]["eval_examples"])
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    prepare_tokenizer(tok)
    pieces = [encode_response(tok, ex["response"], 32) for ex in examples]
    n_tokens = sum(len(p) for p in pieces)
    n_words = sum(count_words(tok.decode(p[:-1], skip_special_tokens=True)) for p in pieces)
    ratio = n_tokens / n_words
    out = {f"minilm.{k}": old[k] for k in ("sft.f1", "sft.hits@1", "sft.ppl", "selfplay.persona_reward_gain",
                                            "selfplay.f1_relative_change") if k in old}
    out["minilm.sft.ppl_word"] = math.exp(math.log(old["sft.ppl"]) * ratio)
    out["minilm.tokens_per_word"] = ratio
    out["minilm.sft.steps"] = old["sft.steps"]
    out["minilm.source"] = source
    out["minilm.ppl_word_method"] = (f"{source} sft.ppl ** (MiniLM tokens incl. <eos> / words) on the same "
                                     f"{len(examples)} development replies")
    return out


if __name__ == "__main__":
    main()
