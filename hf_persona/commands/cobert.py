"""Click commands of CoBERT and the Bi-encoder baseline (persona-aware response selection), added
to the ``hf-persona`` CLI by the cobert plugin.

* ``hf-persona train cobert``: :func:`hf_persona.training.cobert.train_cobert` on the dialogues
  before ``--dev-from`` of a PERSONA-CHAT file (the embedded sample
  by default; a count beyond the file is clamped with a warning);
* ``hf-persona eval cobert``: :func:`hf_persona.training.cobert.evaluate_cobert_file`, printed as a
  table with and without persona.

Heavy imports (torch, transformers) happen inside the commands so that ``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import click

from hf_persona.training.configs import CoBERTTrainingConfig

from ._output import (
    clamp_first,
    clamp_held_out,
    default_data,
    finish,
    json_file,
    json_option,
    quiet_work,
)
from .options import (
    CANDIDATES,
    POS_INT,
    SEED,
    check_model,
    dev_from_option,
    input_file,
    recipe_options,
)

TRAIN_KEYS = ("model", "train_examples", "global_step", "train_loss", "best_eval_hits@1", "train_seconds",
              "resumed_from")


@click.command("cobert")
@click.option("--data", "data_path", default=None, type=input_file(),
              help="PERSONA-CHAT file (ParlAI text, *_both_* or *_self_*). Default: the embedded sample.")
@dev_from_option(800, "--train-dialogues",
                 help="Train on the dialogues before index N (the rest are never seen; fewer in the file: all, "
                      "with a warning); 0 = all.")
@recipe_options(CoBERTTrainingConfig)
@json_option()
@quiet_work(warm_start=True)
def train_cobert_cmd(data_path, dev_from, json_out, **fields):
    """Train CoBERT (or the Bi-encoder baseline) for persona-aware response selection."""
    from hf_persona.data import read_personachat
    from hf_persona.training.cobert import train_cobert

    data_path = data_path or default_data()
    dialogues = read_personachat(data_path)
    n = clamp_first(dev_from, len(dialogues))
    if n:
        dialogues = dialogues.select(range(n))
    result = train_cobert(dialogues, CoBERTTrainingConfig(json_out=json_file(json_out), **fields))
    finish(result, TRAIN_KEYS, saved_to=result.output_dir, json_out=json_out)


@click.command("cobert")
@click.option("--model", "model_path", required=True, callback=check_model,
              help="Saved CoBERT / Bi-encoder folder (or Hub id).")
@click.option("--data", "data_path", default=None, type=input_file(),
              help="PERSONA-CHAT file (ParlAI text). Default: the embedded sample.")
@dev_from_option(0, "--skip-dialogues",
                 help="Evaluate only the dialogues from index N on (e.g. 800 when those before were trained on); "
                      "0 = all.")
@click.option("--max-examples", default=None, type=POS_INT,
              help="Score a seeded random subset of this many examples (distractors still come from all).")
@click.option("--candidates", default=100, show_default=True, type=CANDIDATES,
              help="C for R@1/R@10/R@50/MRR (paper: 100).")
@click.option("--hits-candidates", default=20, show_default=True, type=CANDIDATES,
              help="C for Hits@1 (PERSONA-CHAT: 20).")
@click.option("--batch-size", default=32, show_default=True, type=POS_INT, help="Queries encoded per batch.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the distractor sampling.")
@json_option()
@quiet_work()
def eval_cobert_cmd(model_path, data_path, dev_from, max_examples, candidates, hits_candidates, batch_size,
                    seed, json_out):
    """R@1/R@10/R@50/MRR (C=100) and Hits@1/20, with and without persona."""
    from hf_persona.data import read_personachat
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.cobert import evaluate_cobert_file

    data_path = data_path or default_data()
    skip = clamp_held_out(dev_from, len(read_personachat(data_path))) if dev_from else 0
    metrics = evaluate_cobert_file(model_path, data_path, skip_dialogues=skip, max_examples=max_examples,
                                   num_candidates=candidates, hits_candidates=hits_candidates, seed=seed,
                                   json_out=json_file(json_out), batch_size=batch_size)
    rows = []
    for suffix, label in (("", "persona (n_P<=10)"), ("_no_persona", "no persona (n_P=0)")):
        row = {"setting": label}
        for key in ("r@1", "r@10", "r@50", "mrr", f"hits@1_{hits_candidates}"):
            if key + suffix in metrics:
                row[key] = round(100 * metrics[key + suffix], 2)
        rows.append(row)
    finish(metrics, (), json_out=json_out,
           table=f"{metrics['examples']} examples, {candidates} candidates (values in %)\n{format_table(rows)}")


def add_commands(cli) -> None:
    """Add CoBERT's commands to ``cli``'s ``train`` and ``eval`` groups."""
    cli.commands["train"].add_command(train_cobert_cmd)
    cli.commands["eval"].add_command(eval_cobert_cmd)
