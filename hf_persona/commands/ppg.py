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

from .options import (MAX_STEPS, NONNEG_FLOAT, NONNEG_INT, POS_FLOAT, POS_INT, SEED, UNIT_FLOAT_OPEN, check_backbone,
                       check_model, input_file, output_dir)
from ._output import (clamp_first, clamp_held_out, default_data, dev_from_option, finish, json_option, quiet_work)

_DATA_HELP = "PERSONA-CHAT file with both personas (ParlAI text, *_both_*). Default: the embedded sample."
_TRAIN_DEV_FROM_HELP = ("Train on the dialogues before index N (fewer in the file: all, with a warning); 0 = all.")
GENERATOR_KEYS = ("task", "train_examples", "steps", "train_loss", "seconds", "resumed_from")
CRITIC_KEYS = ("train_pairs", "steps", "train_loss", "dev_accuracy", "dev_pairs", "seconds", "resumed_from")
RL_KEYS = ("rounds", "rl_steps", "mean_train_reward", "train_loss", "seconds", "resumed_from")


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


def _lora(value):
    return [m.strip() for m in value.split(",") if m.strip()] if value else None


def _check_lora(ctx, param, value):
    if value is not None and not _lora(value):
        raise click.BadParameter("expected comma-separated module names such as q_proj,v_proj", ctx=ctx, param=param)
    return value


def _common_train_options(f):
    opts = [
        click.option("--data", "data_path", default=None, type=input_file(), help=_DATA_HELP),
        click.option("--output-dir", required=True, type=output_dir()),
        click.option("--backbone", default="minilm", show_default=True, callback=check_backbone,
                     help="'minilm' (offline), 'smollm2' (offline, chat template), a Hub id "
                          "(microsoft/DialoGPT-small) or a local folder."),
        dev_from_option(800, "--train-dialogues", help=_TRAIN_DEV_FROM_HELP),
        click.option("--epochs", default=2.0, show_default=True, type=POS_FLOAT, help="Paper: 2 for the generators."),
        click.option("--max-steps", default=-1, show_default=True, type=MAX_STEPS, help="Optimiser steps (-1: --epochs)."),
        click.option("--budget-minutes", default=None, type=POS_FLOAT, help="Stop (saving a checkpoint) after this time."),
        click.option("--batch-size", default=8, show_default=True, type=POS_INT),
        click.option("--lr", "learning_rate", default=1e-4, show_default=True, type=POS_FLOAT),
        click.option("--max-context", default=None, type=POS_INT, help="Keep at most the last N context utterances."),
        click.option("--max-prompt-tokens", default=192, show_default=True, type=POS_INT),
        click.option("--lora", default=None, callback=_check_lora,
                     help="Train LoRA adapters on these comma-separated modules (merged at save), e.g. "
                          "q_proj,k_proj,v_proj,o_proj for smollm2."),
        click.option("--lora-r", default=8, show_default=True, type=POS_INT, help="LoRA rank (alpha = 2 x rank)."),
        click.option("--seed", default=0, show_default=True, type=SEED),
        click.option("--no-resume", is_flag=True, help="Start afresh even when checkpoints exist."),
        json_option(),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@quiet_work(warm_start=True)
def _train_generator(task, data_path, output_dir, backbone, dev_from, epochs, max_steps, budget_minutes,
                     batch_size, learning_rate, max_context, max_prompt_tokens, lora, lora_r, seed, no_resume,
                     json_out, partner_persona="gold"):
    from hf_persona.training.ppg import train_generator

    meta = train_generator(task, _rows(data_path, dev_from), output_dir, backbone,
                           partner_persona=partner_persona, epochs=epochs, max_steps=max_steps,
                           budget_minutes=budget_minutes, learning_rate=learning_rate, batch_size=batch_size,
                           max_prompt_tokens=max_prompt_tokens, max_context=max_context,
                           lora_target_modules=_lora(lora), lora_r=lora_r, seed=seed, resume=not no_resume)
    finish(meta, GENERATOR_KEYS, saved_to=output_dir, json_out=json_out, write_json=True)


@click.command("ppg")
@_common_train_options
def train_ppg_cmd(**kw):
    """Supervised partner-persona generator: (self persona, context) -> partner persona."""
    _train_generator("ppg", **kw)


@click.command("drg")
@_common_train_options
@click.option("--partner-persona", type=click.Choice(["gold", "bm25"]), default="gold", show_default=True,
              help="Gold partner persona in the prompt: all sentences, or the BM25 top-3 (the paper's baseline).")
def train_drg_cmd(partner_persona, **kw):
    """Supervised response generator: (self persona, partner persona, context) -> response."""
    _train_generator("drg", partner_persona=partner_persona, **kw)


@click.command("critic")
@click.option("--data", "data_path", default=None, type=input_file(), help=_DATA_HELP)
@click.option("--output-dir", required=True, type=output_dir())
@click.option("--backbone", default="minilm", show_default=True, callback=check_backbone,
              help="'minilm' or distilbert-base-uncased, ...")
@dev_from_option(800, "--train-dialogues",
                 help="Dialogues before index N train, the rest are dev (fewer in the file: all train, no dev, with "
                      "a warning; 0 = all train, no dev).")
@click.option("--epochs", default=1.0, show_default=True, type=POS_FLOAT)
@click.option("--max-steps", default=-1, show_default=True, type=MAX_STEPS, help="Optimiser steps (-1: --epochs).")
@click.option("--budget-minutes", default=None, type=POS_FLOAT)
@click.option("--batch-size", default=32, show_default=True, type=POS_INT)
@click.option("--lr", "learning_rate", default=2e-5, show_default=True, type=POS_FLOAT)
@click.option("--max-length", default=128, show_default=True, type=POS_INT,
              help="Word pieces per (persona, response) pair; too few cut the persona off.")
@click.option("--warmup-ratio", default=0.06, show_default=True, type=UNIT_FLOAT_OPEN,
              help="Linear warm-up, fraction of the steps.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--no-resume", is_flag=True, help="Start afresh even when checkpoints exist.")
@json_option()
@quiet_work(warm_start=True)
def train_critic_cmd(data_path, output_dir, backbone, dev_from, epochs, max_steps, budget_minutes, batch_size,
                     learning_rate, max_length, warmup_ratio, seed, no_resume, json_out):
    """Binary critic on (self persona, response) positives and swapped-persona negatives; prints dev accuracy."""
    from hf_persona.data import read_personachat
    from hf_persona.training.ppg import train_critic

    ds = read_personachat(data_path or default_data())
    n = clamp_first(dev_from, len(ds)) or len(ds)
    train_rows = list(ds.select(range(min(n, len(ds)))))
    dev_rows = list(ds.select(range(n, len(ds)))) if n < len(ds) else None
    meta = train_critic(train_rows, output_dir, backbone, dev_rows, epochs=epochs, max_steps=max_steps,
                        budget_minutes=budget_minutes, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                        resume=not no_resume, max_length=max_length, warmup_ratio=warmup_ratio)
    finish(meta, CRITIC_KEYS, saved_to=output_dir, json_out=json_out, write_json=True)


@click.command("ppg-rl")
@click.option("--ppg", "ppg_path", required=True, callback=check_model, help="Supervised PPG folder.")
@click.option("--drg", "drg_path", required=True, callback=check_model, help="Supervised DRG folder.")
@click.option("--critic", "critic_path", required=True, callback=check_model, help="Critic folder (frozen during RL).")
@click.option("--data", "data_path", default=None, type=input_file(), help=_DATA_HELP)
@click.option("--output-dir", required=True, type=output_dir())
@dev_from_option(800, "--train-dialogues", help=_TRAIN_DEV_FROM_HELP)
@click.option("--rounds", default=2, show_default=True, type=POS_INT, help="Alternations of a PPG phase and a DRG phase.")
@click.option("--steps-per-phase", default=10, show_default=True, type=POS_INT)
@click.option("--only", type=click.Choice(["both", "ppg", "drg"]), default="both", show_default=True,
              help="Which generator(s) RL updates (the other stays frozen): the paper's ablation.")
@click.option("--reward-mode", type=click.Choice(["label", "prob"]), default="label", show_default=True)
@click.option("--lr", "learning_rate", default=1e-5, show_default=True, type=POS_FLOAT, help="Paper: 5e-6 (Adam).")
@click.option("--batch-size", default=8, show_default=True, type=POS_INT,
              help="Completions per step (prompts x generations); a multiple of --num-generations.")
@click.option("--num-generations", default=2, show_default=True, type=click.IntRange(min=2),
              help="Samples per prompt (RLOO needs at least 2).")
@click.option("--beta", default=0.0, show_default=True, type=NONNEG_FLOAT,
              help="KL penalty to the phase's starting model (0: none).")
@click.option("--max-context", default=None, type=POS_INT)
@click.option("--lora", default=None, callback=_check_lora,
              help="Comma-separated LoRA target modules (merged after each phase).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@json_option()
def train_ppg_rl_cmd(ppg_path, drg_path, critic_path, data_path, output_dir, dev_from, rounds, steps_per_phase,
                     only, reward_mode, learning_rate, batch_size, num_generations, beta, max_context, lora, seed,
                     json_out):
    """RLOO on PPG and DRG with the critic reward, alternating; re-run to resume after a kill."""
    if batch_size % num_generations:
        raise click.BadParameter(f"{batch_size} is not a multiple of --num-generations {num_generations}",
                                 param_hint="'--batch-size'")
    _train_rl(ppg_path, drg_path, critic_path, data_path, output_dir, dev_from, rounds, steps_per_phase, only,
              reward_mode, learning_rate, batch_size, num_generations, beta, max_context, lora, seed, json_out)


@quiet_work()
def _train_rl(ppg_path, drg_path, critic_path, data_path, output_dir, dev_from, rounds, steps_per_phase, only,
              reward_mode, learning_rate, batch_size, num_generations, beta, max_context, lora, seed, json_out):
    from hf_persona.training.ppg_rl import train_rl

    state = train_rl(ppg_path, drg_path, critic_path, _rows(data_path, dev_from), output_dir, rounds=rounds,
                     steps_per_phase=steps_per_phase, train_ppg=only in ("both", "ppg"),
                     train_drg=only in ("both", "drg"), reward_mode=reward_mode, learning_rate=learning_rate,
                     batch_size=batch_size, num_generations=num_generations, beta=beta, max_context=max_context,
                     lora_target_modules=_lora(lora), seed=seed)
    summary = {k: v for k, v in state.items() if k != "phases"}
    finish(summary, RL_KEYS, saved_to=output_dir, json_out=json_out, write_json=True)


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
