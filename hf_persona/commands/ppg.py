"""Click commands of partner-persona generation (PPG, Lu et al. 2022), added to the ``hf-persona``
CLI by the ppg plugin.

* ``hf-persona train ppg`` / ``train drg``: :func:`hf_persona.training.ppg.train_generator` (the
  supervised partner-persona and response generators share their options);
* ``hf-persona train critic``: :func:`hf_persona.training.ppg.train_critic`;
* ``hf-persona train ppg-rl``: :func:`hf_persona.training.ppg_rl.train_rl` (RLOO with the critic reward);
* ``hf-persona eval ppg``: :func:`hf_persona.evaluation.ppg.run_ppg_eval`.

Heavy imports (torch, transformers) happen inside the commands so that ``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import click

from hf_persona.training.configs import CriticTrainingConfig, GeneratorTrainingConfig, PPGRLTrainingConfig

from ._output import clamp_first, clamp_held_out, default_data, finish, json_file, json_option, quiet_work
from .options import NONNEG_INT, SEED, check_model, dev_from_option, input_file, recipe_options

_DATA_HELP = "PERSONA-CHAT file with both personas (ParlAI text, *_both_*). Default: the embedded sample."
_TRAIN_DEV_FROM_HELP = ("Train on the dialogues before index N (fewer in the file: all, with a warning); 0 = all.")
GENERATOR_KEYS = ("task", "train_examples", "steps", "train_loss", "seconds", "resumed_from")
CRITIC_KEYS = ("train_pairs", "steps", "train_loss", "dev_accuracy", "dev_pairs", "seconds", "resumed_from")
RL_KEYS = ("ppg", "drg", "steps", "train_seconds", "reward_seconds", "seconds_per_step", "reward_share")
#: RecipeConfig fields train_rl has no use for (a phase is --steps-per-phase steps; a re-run resumes)
def _rows(data_path, first=None, skip=0):
    """Dialogues of ``data_path`` (the sample when None): those before ``first`` (training, clamped
    with a warning), or those from ``skip`` on (evaluation; all, with a warning, when none is there)."""
    from hf_persona.data import read_personachat

    ds = read_personachat(data_path or default_data())
    skip = clamp_held_out(skip, len(ds))
    if skip:
        ds = ds.select(range(skip, len(ds)))
    first = clamp_first(first, len(ds))
    if first:
        ds = ds.select(range(first))
    return list(ds)


def _data_options(f):
    f = dev_from_option(800, "--train-dialogues", help=_TRAIN_DEV_FROM_HELP)(f)
    return click.option("--data", "data_path", default=None, type=input_file(), help=_DATA_HELP)(f)


@quiet_work(warm_start=True)
def _train_generator(task, data_path, dev_from, json_out, fields):
    from hf_persona.training.ppg import train_generator

    config = GeneratorTrainingConfig(task=task, json_out=json_file(json_out), **fields)
    result = train_generator(_rows(data_path, dev_from), config)
    finish(result, GENERATOR_KEYS, saved_to=result.output_dir, json_out=json_out)


@click.command("ppg")
@_data_options
@recipe_options(GeneratorTrainingConfig, skip=("partner_persona",))
@json_option()
def train_ppg_cmd(data_path, dev_from, json_out, **fields):
    """Supervised partner-persona generator: (self persona, context) -> partner persona."""
    _train_generator("ppg", data_path, dev_from, json_out, fields)


@click.command("drg")
@_data_options
@recipe_options(GeneratorTrainingConfig)
@json_option()
def train_drg_cmd(data_path, dev_from, json_out, **fields):
    """Supervised response generator: (self persona, partner persona, context) -> response."""
    _train_generator("drg", data_path, dev_from, json_out, fields)


@click.command("critic")
@click.option("--data", "data_path", default=None, type=input_file(), help=_DATA_HELP)
@dev_from_option(800, "--train-dialogues",
                 help="Dialogues before index N train, the rest are dev (fewer in the file: all train, no dev, with "
                      "a warning; 0 = all train, no dev).")
@recipe_options(CriticTrainingConfig)
@json_option()
@quiet_work(warm_start=True)
def train_critic_cmd(data_path, dev_from, json_out, **fields):
    """Binary critic on (self persona, response) positives and swapped-persona negatives; prints dev accuracy."""
    from hf_persona.data import read_personachat
    from hf_persona.training.ppg import train_critic

    ds = read_personachat(data_path or default_data())
    n = clamp_first(dev_from, len(ds)) or len(ds)
    train_rows = list(ds.select(range(min(n, len(ds)))))
    dev_rows = list(ds.select(range(n, len(ds)))) if n < len(ds) else None
    result = train_critic(train_rows, CriticTrainingConfig(json_out=json_file(json_out), **fields), dev_rows=dev_rows)
    finish(result, CRITIC_KEYS, saved_to=result.output_dir, json_out=json_out)


@click.command("ppg-rl")
@click.option("--ppg", "ppg_path", required=True, callback=check_model, help="Supervised PPG folder.")
@click.option("--drg", "drg_path", required=True, callback=check_model, help="Supervised DRG folder.")
@click.option("--critic", "critic_path", required=True, callback=check_model, help="Critic folder (frozen during RL).")
@_data_options
@click.option("--only", type=click.Choice(["both", "ppg", "drg"]), default="both", show_default=True,
              help="Which generator(s) RL updates (the other stays frozen): the paper's ablation.")
@recipe_options(PPGRLTrainingConfig)
@json_option()
def train_ppg_rl_cmd(ppg_path, drg_path, critic_path, data_path, dev_from, only, json_out, **fields):
    """RLOO on PPG and DRG with the critic reward, alternating; re-run to resume after a kill."""
    if fields["batch_size"] % fields["num_generations"]:
        raise click.BadParameter(f"{fields['batch_size']} is not a multiple of --num-generations "
                                 f"{fields['num_generations']}", param_hint="'--batch-size'")
    config = PPGRLTrainingConfig(train_ppg=only in ("both", "ppg"), train_drg=only in ("both", "drg"), **fields)
    _train_rl(ppg_path, drg_path, critic_path, _rows(data_path, dev_from), config, json_out)


@quiet_work()
def _train_rl(ppg_path, drg_path, critic_path, rows, config, json_out):
    from hf_persona.training.ppg_rl import train_rl

    result = train_rl(ppg_path, drg_path, critic_path, rows, config)
    summary = {k: v for k, v in result.items() if k != "phases"}
    finish(summary, RL_KEYS, saved_to=result.output_dir, json_out=json_out, write_json=True)


@click.command("ppg")
@click.option("--ppg", "ppg_path", required=True, help="PPG folder (supervised).")
@click.option("--drg", "drg_path", required=True, help="DRG folder (supervised).")
@click.option("--critic", "critic_path", default=None, help="Critic folder (adds drg.reward).")
@click.option("--ppg-rl", "ppg_rl_path", default=None, help="PPG after RL (adds the ablation).")
@click.option("--drg-rl", "drg_rl_path", default=None, help="DRG after RL (adds the ablation).")
@click.option("--bm25-drg", "bm25_drg_path", default=None, help="DRG trained with BM25 top-3 gold personas.")
@click.option("--data", "data_path", default=None, type=input_file(), help=_DATA_HELP)
@dev_from_option(800, "--skip-dialogues",
                 help="Evaluate the dialogues from index N on (none there: all, with a warning); 0 = all.")
@click.option("--max-examples", default=200, show_default=True, type=NONNEG_INT,
              help="Dev turns sampled (seeded); 0 = all.")
@click.option("--cold-start-examples", default=100, show_default=True, type=NONNEG_INT)
@click.option("--seed", default=0, show_default=True, type=SEED)
@json_option()
@quiet_work()
def eval_ppg_cmd(ppg_path, drg_path, critic_path, ppg_rl_path, drg_rl_path, bm25_drg_path, data_path,
                 dev_from, max_examples, cold_start_examples, seed, json_out):
    """DRG PPL/BLEU/ROUGE-L, PPG PPL/BLEU/ROUGE-L/Distinct-1/2, cold start N=1,2,3, and the RL ablation."""
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.ppg import run_ppg_eval

    table, flat = run_ppg_eval(ppg_path, drg_path, critic_path, _rows(data_path, skip=dev_from),
                            ppg_rl_path=ppg_rl_path, drg_rl_path=drg_rl_path, bm25_drg_path=bm25_drg_path,
                            max_examples=max_examples, cold_start_examples=cold_start_examples, seed=seed,
                            json_out=None if json_out == "-" else json_out)
    finish(flat, (), json_out=json_out, table=format_table(table))


def add_commands(cli) -> None:
    """Add the PPG commands to ``cli``'s ``train`` and ``eval`` groups."""
    cli.commands["train"].add_command(train_ppg_cmd)
    cli.commands["train"].add_command(train_drg_cmd)
    cli.commands["train"].add_command(train_critic_cmd)
    cli.commands["train"].add_command(train_ppg_rl_cmd)
    cli.commands["eval"].add_command(eval_ppg_cmd)
