"""Evaluate the LoRA-trained PAL and persona extractor over SmolLM2 and package them as the
shipped checkpoints ``hf_persona/pretrained/pal`` and ``hf_persona/pretrained/persona_extractor``.

The two runs come from the project's own recipes (the exact commands are in each run folder's
``train_command.txt`` and end up in the JSON and the model cards):

    hf-persona train persona-extractor --backbone smollm2 --lora 8 ... --output-dir runs/ship/extractor
    hf-persona train pal --data runs/palc/pesconv --backbone smollm2 --lora 8 ... --output-dir runs/ship/pal

Evaluation, never on training data:

* the extractor on the first ``--extractor-examples`` held-back PERSONA-CHAT speakers (dialogues
  800+, as ``benchmarks/persona_extractor_causal.py``; greedy);
* PAL on the validation dialogues of the PESConv folder it was trained on (as
  ``benchmarks/pal_esconv.py --backbone smollm2``: teacher-forced PPL on the first
  ``--pal-examples`` replies, replies generated for the first ``--pal-generate`` with strategy
  contrastive decoding (paper Table 2 α) and the strategy token forced first), beside the
  full-fine-tuning pilot of ``benchmarks/results/pal_causal_esconv_forced.json``.

    python benchmarks/pretrained_causal.py --pal-run runs/ship/pal --extractor-run runs/ship/extractor \\
        --pesconv runs/palc/pesconv

Writes ``benchmarks/results/pretrained_pal.json``, ``benchmarks/results/pretrained_persona_extractor.json``
and the two shipped folders (adapter, tokenizer, ``manifest.json``, model card ``README.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PACKAGE = ROOT / "hf_persona" / "pretrained"
#: Files copied from a run folder into the package (anything else there stays behind: checkpoints,
#: trainer state, the PEFT-written README).
#: What ``adapter_config.json`` names as base (the run recorded a machine-local cache folder).
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PAL_FILES = ("adapter_config.json", "adapter_model.safetensors", "pal_config.json", "pal_fusion.safetensors",
             "pal_training.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
EXTRACTOR_FILES = ("adapter_config.json", "adapter_model.safetensors", "persona_extractor.json",
                   "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
EXTRACTOR_KEYS = ("bleu1", "bleu2", "rougeL", "persona_recall_f1_50", "dist1", "dist2", "sentences_per_example")
PAL_KEYS = ("ppl", "ppl_word", "ppl_no_strategy", "acc", "bleu2", "rougeL", "dist1", "dist2", "cos_sim",
            "mean_response_words")


def _command(run: Path) -> str:
    path = run / "train_command.txt"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; write the exact training command there first")
    return path.read_text().strip()


def _training(run: Path, name: str) -> dict:
    summary = json.loads((run.parent / f"{name}_train.json").read_text())
    keep = ("global_step", "batch_size", "learning_rate", "lora_rank", "train_seconds", "train_loss", "dev_loss",
            "valid_loss", "train_examples", "train_dialogues", "valid_dialogues", "budget_minutes", "stopped_by_budget",
            "fusion_gate_mean_abs", "mixture_weights")
    return {k: summary[k] for k in keep if k in summary}


def _package(run: Path, files, name: str, manifest: dict, card: str) -> Path:
    target = PACKAGE / name.replace("-", "_")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        if (run / f).is_file():
            shutil.copy2(run / f, tmp / f)
    adapter = tmp / "adapter_config.json"
    config = json.loads(adapter.read_text())
    config["base_model_name_or_path"] = SMOLLM2_HUB_ID  # online PEFT loading; offline, hf_persona resolves "smollm2"
    adapter.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (tmp / "README.md").write_text(card)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def _table(rows: dict, keys) -> str:
    names = list(rows)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys:
        cells = []
        for n in names:
            v = rows[n].get(k)
            cells.append("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 2)


def extractor_card(result: dict) -> str:
    t = result["training"]
    samples = "\n".join(f"- gold: {' | '.join(s['persona'])}\n  - written: {' | '.join(s['generated'])}"
                         for s in result["samples"][:3])
    return f"""---
library_name: peft
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
license: apache-2.0
tags: [hf-persona, persona-extraction, lora]
---
# hf-persona/persona-extractor

LoRA adapter (rank {t.get('lora_rank')}) over SmolLM2-135M-Instruct that reads what one person said in a
conversation and writes that person's persona as short first-person sentences, separated by ` | `.
PAL uses it to infer the help-seeker's persona (PESConv).

## Trained by

```
{result['training_command']}
```

PERSONA-CHAT (original personas) and MSC sessions 2-3, dialogues before 800; {t.get('global_step')} steps of
batch {t.get('batch_size')}, {t.get('train_seconds')} s on a 2-core CPU.

## Measured

On the first {result['examples']} held-back PERSONA-CHAT speakers (dialogues 800+), greedy decoding:

{_table({'this adapter': result['metrics'], 'full fine-tuning pilot (38 steps)': result['full_finetuning_pilot']}, EXTRACTOR_KEYS + ('distinct_persona_sets',))}

```
{result['command']}
```

Samples (gold persona of a held-back speaker, then what the adapter wrote from their utterances):

{samples}

## Use

```python
import hf_persona
extractor = hf_persona.from_pretrained("persona-extractor")
extractor.extract([["i just got back from my shift at the hospital", "my two cats wait for me"]])
```

With plain transformers and PEFT: load SmolLM2-135M-Instruct, `PeftModel.from_pretrained(lm, folder)`, and prompt
it with the chat template, the `system_prompt` of `persona_extractor.json` as system turn and the utterances one per
line as user turn.
"""


def pal_card(result: dict) -> str:
    t = result["training"]
    rows = {"this adapter (LoRA)": result["metrics"]}
    if result.get("full_finetuning_pilot"):
        rows["full fine-tuning pilot"] = result["full_finetuning_pilot"]
    samples = "\n".join(f"- [{s.get('strategy_generated') or s.get('strategy')}] {s.get('generated')}"
                        for s in result["samples"][:4])
    return f"""---
library_name: peft
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
license: apache-2.0
tags: [hf-persona, emotional-support, pal, lora]
---
# hf-persona/pal

PAL over a decoder-only LM: SmolLM2-135M-Instruct with LoRA adapters (rank {t.get('lora_rank')}), trained PAL token
rows, and PAL's persona fusion in its last decoder layer (gate mean |g| = {t.get('fusion_gate_mean_abs')}). Given an
emotional-support dialogue and the seeker's inferred persona, it replies as the supporter, opening with one of the
eight ESConv strategy tokens; decode it with strategy contrastive decoding
(`model.strategy_contrast_processor()`).

## Trained by

```
{result['training_command']}
```

PESConv: {t.get('train_dialogues')} ESConv training dialogues annotated with seeker personas by the persona extractor
({t.get('train_examples')} supporter replies); {t.get('global_step')} steps of batch {t.get('batch_size')},
{t.get('train_seconds')} s on a 2-core CPU. A small run: the figures below are a pilot's, not the paper's.

## Measured

On the {result['valid_dialogues']} validation dialogues (first {result['examples']} replies for PPL, {result['generated']}
generated with the paper's sampling and Table 2 α, strategy forced first):

{_table(rows, PAL_KEYS)}

```
{result['command']}
```

Sample replies:

{samples}

## Use

```python
import hf_persona
from hf_persona.pipeline import SupportPipeline
pipe = SupportPipeline.from_shipped()          # this adapter, the extractor, CoBERT and the Receiver
print(pipe.respond("i lost my job and i can not sleep").reply)
model, tokenizer = hf_persona.from_pretrained("pal")
```

With plain transformers and PEFT: load SmolLM2-135M-Instruct, resize its embeddings to this tokenizer,
`PALForCausalLM(PALCausalConfig.from_json_file("pal_config.json"), backbone=lm)` (code in `hf_persona.models.pal`),
`PeftModel.from_pretrained(lm, folder)`, then load `pal_fusion.safetensors` into the model.
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pal-run", default="runs/ship/pal")
    p.add_argument("--extractor-run", default="runs/ship/extractor")
    p.add_argument("--pesconv", default="runs/palc/pesconv", help="The PESConv folder PAL trained on (its valid/ split).")
    p.add_argument("--extractor-examples", type=int, default=60)
    p.add_argument("--pal-examples", type=int, default=120)
    p.add_argument("--pal-generate", type=int, default=40)
    p.add_argument("--only", choices=("pal", "extractor"), default=None)
    p.add_argument("--reuse-training-eval", action="store_true",
                   help="Take the extractor's figures from its training summary when that evaluated the same "
                        "held-back examples greedily (train persona-extractor --eval-examples N --num-beams 1).")
    args = p.parse_args(argv)

    import torch

    from hf_persona.evaluation.pal import evaluate_pal
    from hf_persona.evaluation.persona_extractor import evaluate_persona_extractor
    from hf_persona.training.persona_extractor import default_data_files
    from hf_persona.utils import atomic_write_json, command_line, machine_description

    command = command_line("benchmarks/pretrained_causal.py", argv)
    setup = {"device": machine_description(), "platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    if args.only in (None, "extractor"):
        run = Path(args.extractor_run)
        trained = json.loads((run.parent / "extractor_train.json").read_text())
        if args.reuse_training_eval and trained.get("eval", {}).get("n") == args.extractor_examples:
            # `train persona-extractor --eval-examples N --num-beams 1` ran this very evaluation
            # (first N held-back examples, greedy) on the saved adapter
            metrics = trained["eval"]
        else:
            metrics = evaluate_persona_extractor(run, default_data_files(), max_examples=args.extractor_examples,
                                                 num_beams=1, samples=10)
        pilot = json.loads((RESULTS / "persona_extractor_causal.json").read_text())
        result = {
            "metrics": {k: metrics.get(k) for k in EXTRACTOR_KEYS + ("distinct_persona_sets",)},
            f"distinct_persona_sets_of_{args.extractor_examples}": metrics.get("distinct_persona_sets"),
            "full_finetuning_pilot": {**{k: pilot.get(k) for k in EXTRACTOR_KEYS},
                                      "distinct_persona_sets": pilot.get("distinct_persona_sets_of_60")},
            "examples": args.extractor_examples, "samples": metrics.get("examples", []),
            "training": _training(run, "extractor"), "training_command": _command(run), "setup": setup,
            "command": command,
        }
        atomic_write_json(RESULTS / "pretrained_persona_extractor.json", result)
        manifest = {"name": "persona-extractor", "model": "persona_extractor", "base": "smollm2",
                    "command": result["training_command"], "evaluation_command": command,
                    "benchmark": "benchmarks/results/pretrained_persona_extractor.json",
                    "figures": {k: round(result["metrics"][k], 2) for k in ("bleu2", "rougeL", "persona_recall_f1_50")
                                if isinstance(result["metrics"].get(k), (int, float))}}
        folder = _package(run, EXTRACTOR_FILES, "persona-extractor", manifest, extractor_card(result))
        print(f"persona-extractor: {folder} ({_mb(folder)} MB)")
    if args.only in (None, "pal"):
        run = Path(args.pal_run)
        metrics = evaluate_pal(run, args.pesconv, max_examples=args.pal_examples, max_generate=args.pal_generate,
                               alpha="table", force_strategy_first=True, return_samples=10)
        pilot = json.loads((RESULTS / "pal_causal_esconv_forced.json").read_text())
        result = {
            "metrics": {k: metrics.get(k) for k in PAL_KEYS},
            "full_finetuning_pilot": {k: pilot["pal"].get(k) for k in PAL_KEYS},
            "pilot_source": "benchmarks/results/pal_causal_esconv_forced.json (pal: same PESConv folder, same "
                            "evaluation; all weights trained, 48 steps)",
            "valid_dialogues": _training(run, "pal").get("valid_dialogues"), "examples": args.pal_examples,
            "generated": metrics.get("n_generated"), "samples": metrics.get("samples", []),
            "training": _training(run, "pal"), "training_command": _command(run), "setup": setup, "command": command,
        }
        atomic_write_json(RESULTS / "pretrained_pal.json", result)
        manifest = {"name": "pal", "model": "pal_causal", "base": "smollm2", "command": result["training_command"],
                    "evaluation_command": command, "benchmark": "benchmarks/results/pretrained_pal.json",
                    "figures": {k: round(result["metrics"][k], 2) for k in ("ppl", "ppl_word", "dist2", "cos_sim")
                                if isinstance(result["metrics"].get(k), (int, float))}}
        folder = _package(run, PAL_FILES, "pal", manifest, pal_card(result))
        print(f"pal: {folder} ({_mb(folder)} MB)")


if __name__ == "__main__":
    main()
