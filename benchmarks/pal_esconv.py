"""PAL vs no-persona vs Hard Prompt on ESConv (PESConv built by our persona extractor).

Stages (each cached in ``--work``, so a rerun continues where the last one stopped):

1. persona extractor: BERT2BERT warm-started from the packaged MiniLM, trained on PERSONA-CHAT
   (original personas, dialogues 0-799) + MSC sessions 2-3 (episodes of those dialogues);
   BLEU / ROUGE-L / Distinct on the held-back PERSONA-CHAT dialogues 800-999;
2. PESConv: ``annotate-persona`` on the first ``--train-dialogues`` of ESConv ``train.json`` and
   the first ``--valid-dialogues`` of ``valid.json``;
3. PAL, no_persona and hard_prompt trained by the same recipe (MiniLM warm start, seed, batch,
   learning rate, the same number of optimiser steps ``--max-steps`` over the same shuffled
   examples);
4. evaluation on the PESConv valid examples: ACC and PPL teacher forced on ``--eval-examples``,
   generation metrics on the first ``--generate-examples`` with the paper's decoding (top-k 10,
   top-p 0.9, temperature 0.5, repetition penalty 1.03, 10-50 new tokens, seed 0), no
   contrastive decoding (that is ``benchmarks/decoding_quality.py``).

    python benchmarks/pal_esconv.py --work runs/pal_bench

Writes ``benchmarks/results/pal_esconv.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PAPER = {  # Table 3 of the paper (Blenderbot-small-90M backbone, full ESConv, 10 epochs)
    "no_persona": {"acc": 27.72, "ppl": 18.11, "bleu2": 5.57, "bleu4": 1.93, "dist1": 3.74, "dist2": 20.66,
                   "ead1": 4.23, "ead2": 20.28, "rougeL": 16.36, "cos_sim": 0.184},
    "hard_prompt": {"acc": 34.24, "ppl": 17.06, "bleu2": 7.57, "bleu4": 2.53, "dist1": 5.15, "dist2": 25.47,
                    "ead1": 6.02, "ead2": 31.64, "rougeL": 18.12, "cos_sim": 0.199},
    "pal_alpha0": {"acc": 34.25, "ppl": 15.92, "bleu2": 9.28, "bleu4": 2.90, "dist1": 4.72, "dist2": 25.56,
                   "ead1": 5.87, "ead2": 33.05, "rougeL": 18.27, "cos_sim": 0.229},
}


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_extractor(args, work: Path) -> dict:
    from hf_persona.training.persona_extractor import default_data_files, train_persona_extractor

    out = work / "extractor"
    summary_path = work / "extractor_train.json"
    if (out / "persona_extractor.json").is_file() and summary_path.is_file() and not args.retrain_extractor:
        _log(f"extractor: reusing {out}")
        return json.loads(summary_path.read_text())
    _log("extractor: training")
    if args.causal:  # an instruction-tuned LM: one epoch at most, greedy decoding, a longer prompt
        recipe = dict(epochs=1, learning_rate=1e-4, warmup_steps=10, max_source_length=192, max_target_length=64,
                      num_beams=1)
    else:
        recipe = dict(epochs=3, learning_rate=2e-4, warmup_steps=20, max_source_length=128, max_target_length=48,
                      num_beams=4)
    return train_persona_extractor(
        out, default_data_files(), backbone=args.backbone, budget_minutes=args.extractor_minutes, batch_size=8,
        eval_steps=40, max_dev_examples=48, eval_generation_examples=60, min_support=args.extractor_min_support,
        seed=args.seed, progress=False, json_out=summary_path, **recipe,
    ).summary  # the summary alone: the model is reloaded from the folder where it is needed


def stage_annotate(args, work: Path, data_dir: Path) -> dict:
    from hf_persona.data.pesconv import annotate

    out = {}
    for split, n in (("train", args.train_dialogues), ("valid", args.valid_dialogues)):
        _log(f"annotate {split}: first {n} dialogues")
        out[split] = annotate(work / "extractor", data_dir / f"{split}.json", work / "pesconv" / split,
                              batch_size=16 if args.causal else 32, dialogues_per_shard=8, num_beams=1, max_dialogues=n,
                              min_support=args.persona_min_support, progress=False)
        _log(f"annotate {split}: {out[split]}")
    return out


def stage_train(args, work: Path, variant: str) -> dict:
    from hf_persona.training.pal import train_pal

    out = work / variant
    summary_path = work / f"{variant}_train.json"
    if summary_path.is_file() and (out / "pal_training.json").is_file():
        _log(f"{variant}: reusing {out}")
        return json.loads(summary_path.read_text())
    _log(f"{variant}: training {args.max_steps} steps")
    return train_pal(
        work / "pesconv", out, variant=variant, backbone=args.backbone, max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.lr, mixture_learning_rate=args.mixture_lr or None,
        mixture_init=args.mixture_init,
        **(dict(fusion_layer=args.fusion_layer) if args.causal else
           dict(fusion_norm_init=args.fusion_norm_init, persona_alignment=args.persona_alignment)),
        warmup_steps=args.warmup_steps, eval_steps=args.eval_steps,
        max_eval_examples=args.loss_eval_examples, max_source_length=args.max_source_length,
        max_persona_length=args.max_persona_length, max_target_length=args.max_target_length, seed=args.seed,
        progress=False, json_out=summary_path,
    ).summary  # the summary alone: no variant's model stays in memory while the next one trains


def stage_eval(args, work: Path, variant: str, embedder) -> dict:
    from hf_persona.evaluation.pal import evaluate_pal

    path = work / f"{variant}_eval.json"
    if path.is_file() and not args.reevaluate:
        _log(f"{variant}: reusing evaluation {path}")
        return json.loads(path.read_text())
    _log(f"{variant}: evaluating")
    return evaluate_pal(work / variant, work / "pesconv", max_examples=args.eval_examples,
                        max_generate=args.generate_examples, batch_size=16, seed=0, embedder=embedder,
                        json_out=path)


CAUSAL_METRICS = ("acc", "ppl", "ppl_word", "bleu2", "bleu4", "dist1", "dist2", "ead1", "ead2", "rougeL", "cos_sim")


def _cached(path: Path, compute, reuse: bool) -> dict:
    if path.is_file() and reuse:
        return json.loads(path.read_text())
    result = compute()
    from hf_persona.utils import atomic_write_json

    atomic_write_json(path, result)
    return result


def causal_window(args, work: Path, variants, window, embedder) -> dict:
    """Table 3 rows of every variant (and PAL with the Table 2 alpha) with one dialogue window, plus
    the paired dialogue-level bootstrap of PAL against each baseline (PPL and cos-sim)."""
    from hf_persona.evaluation import paired_bootstrap, paired_bootstrap_nll
    from hf_persona.evaluation.pal import evaluate_pal

    tag = "full" if window is None else f"w{window}"
    common = dict(max_examples=args.eval_examples, max_generate=args.generate_examples, batch_size=16, seed=0,
                  embedder=embedder, max_source_length=window, per_example=True, return_samples=0)
    runs = {}
    for v in variants:
        _log(f"{v} ({tag}): evaluating")
        runs[v] = _cached(work / f"eval_{v}_{tag}.json", lambda v=v: evaluate_pal(work / v, work / "pesconv", **common),
                          not args.reevaluate)
        if args.force_strategy_first:  # the same teacher-forced figures; replies opened by a strategy token
            _log(f"{v} ({tag}): generating, strategy token first")
            forced = _cached(work / f"eval_{v}_{tag}_forced.json",
                             lambda v=v: evaluate_pal(work / v, work / "pesconv", teacher_forced=False,
                                                      force_strategy_first=True, **common), not args.reevaluate)
            runs[v] = {**runs[v], **{k: x for k, x in forced.items() if k not in ("per_example", "n_examples")}}
    if "pal" in variants:
        _log(f"pal with the Table 2 alpha ({tag}): generating")
        suffix = "_forced" if args.force_strategy_first else ""
        with_alpha = _cached(work / f"eval_pal_alpha_{tag}{suffix}.json",
                             lambda: evaluate_pal(work / "pal", work / "pesconv", alpha="table", teacher_forced=False,
                                                  force_strategy_first=args.force_strategy_first, **common),
                             not args.reevaluate)
        runs["pal_alpha0"], runs["pal"] = runs["pal"], {**runs["pal"], **{k: v for k, v in with_alpha.items()
                                                                          if k not in ("per_example", "n_examples")}}
    table = {name: {k: run.get(k) for k in CAUSAL_METRICS} for name, run in runs.items()}
    for name, run in runs.items():
        table[name].update(ppl_no_strategy=run.get("ppl_no_strategy"), acc_generated=run.get("acc_generated"),
                           mean_response_words=run.get("mean_response_words"))

    # paired tests over the same examples, whole dialogues resampled
    def cosines(run):
        pairs = [(g["generated"], " ".join(g["persona"])) for g in run["generated"] if g["persona"]]
        return embedder.cosine([a for a, _ in pairs], [b for _, b in pairs])

    groups_gen = [g["dialogue_id"] for g in runs["pal"]["generated"] if g["persona"]] if "pal" in runs else []
    paired = {}
    for name in [n for n in runs if n not in ("pal", "pal_alpha0")]:
        ref = runs[name]["per_example"]
        for model in ("pal", "pal_alpha0"):
            if model not in runs:
                continue
            mine = runs[model]["per_example"]
            if [r["tokens"] for r in mine] != [r["tokens"] for r in ref]:
                raise RuntimeError(f"{model} and {name} were not scored on the same reply tokens")
            key = f"{model}_vs_{name}"
            paired[key] = {
                "ppl": paired_bootstrap_nll([r["nll"] for r in mine], [r["nll"] for r in ref],
                                            [r["tokens"] for r in ref], groups=[r["dialogue_id"] for r in ref]),
                "cos_sim": paired_bootstrap(cosines(runs[model]), cosines(runs[name]), groups=groups_gen)
                if groups_gen else None,
            }
    samples = {}
    if "pal" in runs:
        picked = [i for i, g in enumerate(runs["pal"]["generated"]) if g["persona"]][:10]
        for i in picked:
            g = runs["pal"]["generated"][i]
            samples.setdefault("items", []).append({
                "dialogue_id": g["dialogue_id"], "persona": g["persona"], "reference": g["reference"],
                **{name: run["generated"][i]["generated"] for name, run in runs.items()}})
    return {"table": table, "paired": paired, "samples": samples.get("items", []),
            "n_teacher_forced": runs[variants[0]]["n_examples"], "n_generated": runs[variants[0]]["n_generated"],
            "max_source_length": runs[variants[0]]["max_source_length"]}


def minilm_ppl_word(tokens_per_word_rows) -> dict:
    """The MiniLM PAL's per-word PPL, converted from its per-word-piece PPL (pal_esconv_full_train.json)
    with the words per word piece measured on the same replies (its tokenizer, its target length)."""
    from transformers import AutoTokenizer

    from hf_persona.backbones import resolve
    from hf_persona.models.pal import add_pal_tokens, build_pal_example
    from hf_persona.training.persona_extractor import count_words

    old = json.loads((ROOT / "benchmarks" / "results" / "pal_esconv_full_train.json").read_text())
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    add_pal_tokens(tok)
    tokens = words = 0
    max_target = old["setup"]["training"]["pal"]["max_target_length"]
    for row in tokens_per_word_rows:
        for i, spk in enumerate(row["speakers"]):
            if spk != "sys" or "usr" not in row["speakers"][:i] or not row["utterances"][i].strip():
                continue
            ex = build_pal_example(row["utterances"][:i], row["speakers"][:i], row["strategies"][:i], [],
                                   response=row["utterances"][i], strategy=row["strategies"][i], tokenizer=tok,
                                   max_source_length=32, max_target_length=max_target)
            reply = ex["labels"][1:]  # words + [SEP], without the strategy token (as ppl_no_strategy)
            tokens += len(reply)
            words += count_words(tok.decode(reply, skip_special_tokens=True))
    out = {}
    for name in ("pal", "no_persona", "hard_prompt"):
        per_piece = old[name]["ppl_no_strategy"]
        out[name] = {"ppl_no_strategy_per_word_piece": per_piece,
                     "ppl_word": math.exp(math.log(per_piece) * tokens / words)}
    out["word_pieces_per_word"] = tokens / words
    out["source"] = "benchmarks/results/pal_esconv_full_train.json (" + old["command"] + ")"
    return out


def run_causal(args, work: Path, data_dir: Path, extractor: dict, pesconv: dict, variants) -> dict:
    import torch

    from hf_persona.evaluation.pal import SentenceEmbedder
    from hf_persona.training.pal import load_pesconv_splits
    from hf_persona.utils import machine_description

    trained = {v: stage_train(args, work, v) for v in variants}
    embedder = SentenceEmbedder()
    result = {}
    full = causal_window(args, work, variants, None, embedder)
    result.update(full["table"])
    result["paired"] = full["paired"]
    result["samples"] = {"full": full["samples"]}
    w128 = causal_window(args, work, variants, 128, embedder) if args.window128 else None
    if w128 is not None:
        result["window128"] = {**w128["table"], "paired": w128["paired"]}
        result["samples"]["window128"] = w128["samples"]
    _, valid_rows = load_pesconv_splits(work / "pesconv", seed=args.seed)
    result["minilm"] = minilm_ppl_word(valid_rows)
    baselines = [v for v in ("no_persona", "hard_prompt") if v in result]
    if "pal" in result and "no_persona" in result:
        pal = result["pal"]
        result["floors"] = {  # against the baselines trained in this run (listed)
            "baselines": baselines,
            "cos_sim_above_baselines": all(pal["cos_sim"] > result[b]["cos_sim"] for b in baselines),
            "dist2_above_baselines": all(pal["dist2"] > result[b]["dist2"] for b in baselines),
            "ppl_within_1pct_of_no_persona": pal["ppl"] <= 1.01 * result["no_persona"]["ppl"],
            "ppl_word_halved_vs_minilm": all(result[v]["ppl_word"] <= 0.5 * result["minilm"]["pal"]["ppl_word"]
                                             for v in ["pal", *baselines]),
        }
    ext_eval = extractor.get("eval", {})
    result["setup"] = {
        "device": machine_description(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "seed": args.seed,
        "backbone": args.backbone,
        "persona_extractor": {
            "backbone": args.backbone, "train_examples": extractor.get("train_examples"),
            "steps": extractor.get("global_step"), "batch_size": extractor.get("batch_size"),
            "dev_loss": extractor.get("dev_loss"), "train_seconds_last_run": extractor.get("train_seconds"),
            "heldout_metrics": {k: ext_eval.get(k) for k in ("n", "bleu1", "bleu2", "rougeL", "dist1", "dist2",
                                                             "persona_recall_f1_50")},
        },
        "pesconv": {split: {k: s.get(k) for k in ("dialogues", "supporter_turns", "supporter_turns_with_persona",
                                                    "mean_persona_sentences_at_last_turn")}
                    for split, s in pesconv.items()},
        "training": {v: {k: trained[v].get(k) for k in (
            "global_step", "examples_seen", "train_examples", "valid_loss", "train_loss", "train_seconds",
            "stopped_by_budget", "batch_size", "learning_rate", "mixture_learning_rate", "mixture_weights",
            "fusion_layer", "fusion_gate_mean_abs", "max_source_length", "max_persona_length", "max_target_length")}
            for v in variants},
        "evaluation": {
            "split": f"PESConv valid (first {args.valid_dialogues} ESConv valid dialogues)",
            "teacher_forced_examples": full["n_teacher_forced"], "generated_examples": full["n_generated"],
            "windows": {"full": full["max_source_length"],
                        **({"window128": w128["max_source_length"]} if w128 is not None else {})},
            "window": "dialogue tokens after the system turn; the oldest turns are dropped first",
            "decoding": "top-k 10, top-p 0.9, temperature 0.5, repetition penalty 1.03, 10-50 new tokens, seed 0"
                        + ("; first token restricted to the strategy tokens (every model)" if args.force_strategy_first
                           else ""),
            "pal": "Table 2 alpha per strategy (strategy contrastive decoding); pal_alpha0: plain decoding, "
                   "the same model (teacher-forced figures are the model's and shared)",
            "ppl": "per token, including the strategy token (as the paper's code); ppl_word: per word, reply "
                   "without the strategy token",
            "acc": "arg-max over the 8 strategy tokens at the first reply position, teacher forced",
            "cos_sim": "MiniLM mean-pooled embeddings, generated reply vs persona text, examples with a persona",
            "paired": "paired bootstrap, whole dialogues resampled (10,000 draws): ppl = per-token NLL difference "
                      "(ppl_ratio < 1: PAL better), cos_sim = mean difference (diff > 0: PAL higher)",
        },
    }
    return result


def _floats(text: str) -> list[float]:
    from hf_persona.utils import parse_floats

    try:
        return parse_floats(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/pal_bench", help="Working folder (models, PESConv); reused when rerun.")
    p.add_argument("--esconv", default=None, help="ESConv folder with train.json / valid.json (default: shared data).")
    p.add_argument("--backbone", default="minilm",
                   help="minilm (BERT2BERT warm start, the default) or a causal LM (smollm2, a Hub id, a folder): then "
                        "the extractor and the three models are causal LMs, evaluated with and without the Table 2 "
                        "alpha and with a 128-token window too (writes pal_causal_esconv.json).")
    p.add_argument("--fusion-layer", type=int, default=None,
                   help="Causal backbones: the decoder layer PAL fuses (-1 = the last, the default).")
    p.add_argument("--extractor-minutes", type=float, default=10.0)
    p.add_argument("--retrain-extractor", action="store_true")
    p.add_argument("--extractor-min-support", type=float, default=0.0,
                   help="Train the extractor on grounded persona sentences only (share of content words the speaker "
                        "used; 0: all, the paper).")
    p.add_argument("--persona-min-support", type=float, default=0.0,
                   help="PESConv keeps inferred sentences with at least this share of content words in the seeker's "
                        "utterances (0: all, the paper).")
    p.add_argument("--train-dialogues", type=int, default=80)
    p.add_argument("--valid-dialogues", type=int, default=25)
    p.add_argument("--max-steps", type=int, default=60, help="Optimiser steps per model (the same for all three).")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--mixture-lr", type=float, default=1e-2,
                   help="learning rate of PAL's three eq. 4 mixture logits (0 = the same as --lr)")
    p.add_argument("--mixture-init", default=None, type=_floats,
                   help="PAL's initial eq. 4 logits 'w1,w2,w3' (default: equal, the paper)")
    p.add_argument("--fusion-norm-init", choices=("fresh", "encoder"), default="fresh",
                   help="PAL's co-attention LayerNorms: fresh (the paper's code) or a copy of the encoder's last one.")
    p.add_argument("--persona-alignment", choices=("coattention", "concat"), default="coattention",
                   help="PAL's persona term: carried onto dialogue positions (default) or appended as decoder keys.")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--loss-eval-examples", type=int, default=64)
    p.add_argument("--max-source-length", type=int, default=128)
    p.add_argument("--max-persona-length", type=int, default=64)
    p.add_argument("--max-target-length", type=int, default=40)
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--generate-examples", type=int, default=64)
    p.add_argument("--reevaluate", action="store_true")
    p.add_argument("--force-strategy-first", action="store_true",
                   help="Causal backbones: restrict each reply's first token to the eight strategy tokens (for "
                        "models trained too briefly to open with one; the Table 2 alpha is chosen by that token).")
    p.add_argument("--no-window128", dest="window128", action="store_false",
                   help="Causal backbones: skip the second evaluation with a 128-token dialogue window.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="pal,no_persona,hard_prompt")
    p.add_argument("--stop-after", choices=("extractor", "annotate"), default=None,
                   help="Run the stages up to this one and stop (e.g. to train the variants in parallel processes).")
    p.add_argument("--out", default=None,
                   help="default: benchmarks/results/pal_esconv.json (pal_causal_esconv.json for a causal backbone)")
    args = p.parse_args(argv)
    from hf_persona.backbones import is_causal_lm, resolve

    args.causal = args.backbone != "minilm" and is_causal_lm(resolve(args.backbone))
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / ("pal_causal_esconv.json" if args.causal else "pal_esconv.json"))

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.data import shared_data_dir
    from hf_persona.errors import HFPersonaError
    from hf_persona.evaluation.pal import SentenceEmbedder
    from hf_persona.training.pal import METRIC_KEYS
    from hf_persona.utils import atomic_write_json, command_line, machine_description

    machine = machine_description()  # at the start: the load average other jobs put on the CPU

    data_dir = Path(args.esconv) if args.esconv else (shared_data_dir() / "esconv" if shared_data_dir() else None)
    if data_dir is None or not (data_dir / "train.json").is_file():
        raise HFPersonaError("ESConv not found: pass --esconv DIR with train.json and valid.json")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    extractor = stage_extractor(args, work)
    if args.stop_after == "extractor":
        return
    pesconv = stage_annotate(args, work, data_dir)
    if args.stop_after == "annotate":
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.causal:
        result = run_causal(args, work, data_dir, extractor, pesconv, variants)
        result["setup"]["total_wall_seconds_this_run"] = round(time.monotonic() - t0, 1)
        result["paper_table3"] = PAPER
        result["command"] = command_line("benchmarks/pal_esconv.py", argv)
        atomic_write_json(args.out, result)
        _log(f"wrote {args.out}")
        from hf_persona.evaluation import format_table

        for name, table in (("full window", result), ("128-token window", result.get("window128"))):
            if table is None:
                continue
            print(name)
            print(format_table([{"model": v, **{k: table[v][k] for k in CAUSAL_METRICS}}
                                for v in ("pal", "pal_alpha0", *[v for v in variants if v != "pal"]) if v in table]))
        return
    trained = {v: stage_train(args, work, v) for v in variants}
    embedder = SentenceEmbedder()
    evaluated = {v: stage_eval(args, work, v, embedder) for v in variants}

    result = {v: {k: evaluated[v][k] for k in METRIC_KEYS} for v in variants}
    for v in variants:
        result[v]["ppl_no_strategy"] = evaluated[v]["ppl_no_strategy"]
        result[v]["acc_generated"] = evaluated[v]["acc_generated"]
        for key in ("ppl_with_persona", "ppl_without_persona", "n_with_persona"):  # evaluations since the split
            if key in evaluated[v]:
                result[v][key] = evaluated[v][key]
    if "pal" in result and "no_persona" in result:
        result["pal_beats_no_persona"] = {
            "ppl": result["pal"]["ppl"] < result["no_persona"]["ppl"],
            "cos_sim": result["pal"]["cos_sim"] > result["no_persona"]["cos_sim"],
        }
    ext_eval = extractor.get("eval", {})
    result["setup"] = {
        "device": machine,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "seed": args.seed,
        "backbone": "all-MiniLM-L6-v2 (packaged), BERT2BERT warm start",
        "persona_extractor": {
            "train_examples": extractor.get("train_examples"), "dev_examples": extractor.get("dev_examples"),
            "min_support": extractor.get("min_support", 0.0),
            "steps": extractor.get("global_step"), "batch_size": extractor.get("batch_size"),
            "dev_loss": extractor.get("dev_loss"), "train_seconds_last_run": extractor.get("train_seconds"),
            "heldout_metrics": {k: ext_eval.get(k) for k in ("n", "bleu1", "bleu2", "bleu4", "rougeL", "dist1", "dist2",
                                                             "sentences_per_example", "persona_recall_f1_50")},
        },
        "pesconv_min_support": args.persona_min_support,
        "pesconv": {split: {k: s[k] for k in ("dialogues", "supporter_turns", "supporter_turns_with_persona",
                                                "mean_persona_sentences_at_last_turn")}
                    for split, s in pesconv.items()},
        "training": {v: {k: trained[v].get(k) for k in ("global_step", "examples_seen", "train_examples",
                                                        "valid_loss", "train_loss", "train_seconds", "batch_size",
                                                        "learning_rate", "mixture_learning_rate", "mixture_init",
                                                        "fusion_norm_init", "persona_alignment", "resumed_from",
                                                        "mixture_weights",
                                                        "max_source_length", "max_persona_length",
                                                        "max_target_length")}
                     for v in variants},
        "evaluation": {"split": "PESConv valid (first %d ESConv valid dialogues)" % args.valid_dialogues,
                       "teacher_forced_examples": evaluated[variants[0]]["n_examples"],
                       "generated_examples": evaluated[variants[0]]["n_generated"],
                       "decoding": "top-k 10, top-p 0.9, temperature 0.5, repetition penalty 1.03, 10-50 new tokens, seed 0",
                       "ppl": "includes the strategy token (as the paper's code); ppl_no_strategy excludes it",
                       "acc": "arg-max over the 8 strategy tokens at the first decoder step, teacher forced",
                       "cos_sim": "MiniLM mean-pooled embeddings, generated response vs persona text, examples with a persona"},
        "total_wall_seconds_this_run": round(time.monotonic() - t0, 1),
    }
    result["paper_table3"] = PAPER
    result["command"] = command_line("benchmarks/pal_esconv.py", argv)
    atomic_write_json(args.out, result)
    _log(f"wrote {args.out}")
    from hf_persona.evaluation import format_table

    print(format_table([{"model": v, **{k: result[v][k] for k in METRIC_KEYS}} for v in variants]))


if __name__ == "__main__":
    main()
