"""Click commands of the P2Bot Transmitter, added to the ``hf-persona`` CLI by the transmitter plugin.

* ``hf-persona train transmitter``: :func:`hf_persona.training.transmitter.train_transmitter`;
* ``hf-persona train selfplay``: :func:`hf_persona.training.selfplay.train_selfplay` (its ``--weights``
  option is read by :func:`parse_weights`);
* ``hf-persona eval transmitter``: :func:`hf_persona.evaluation.transmitter.run_transmitter_eval`.

Without ``--data`` the commands read the shared PERSONA-CHAT file, else the embedded sample. Heavy
imports (torch, transformers) happen inside the commands so that ``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import math

import click

from hf_persona.errors import HFPersonaError

from .options import (CANDIDATES, MAX_STEPS, MODEL_ACCEPTED, NONNEG_FLOAT, NONNEG_INT, POS_FLOAT, POS_INT, SEED,
                       UNIT_FLOAT, UNIT_FLOAT_OPEN, check_backbone, check_model_ref, input_dir, input_file,
                       output_dir)
from ._output import clamp_first, clamp_held_out, finish, json_file, json_option, quiet_work

TRAIN_KEYS = ("examples", "global_step", "world_size", "epochs_done", "train_loss", "last_logged_loss", "seconds", "resumed_from")
SELFPLAY_KEYS = ("global_step", "episodes", "first_reward", "last_reward", "train_loss", "seconds", "resumed_from")


def expected_noise_filtered():
    from hf_persona.utils import expected_noise_filtered

    return expected_noise_filtered()


def _count(path) -> int:
    from hf_persona.data import read_personachat

    return len(read_personachat(path))


def parse_weights(text: str | None) -> dict | None:
    """``"language_style=0.4,discourse_coherence=0.1"`` -> dict (None when not given)."""
    if text is None:
        return None
    from hf_persona.training.selfplay import REWARD_NAMES

    aliases = {"rs1": "language_style", "rs2": "discourse_coherence", "rs3": "persona_perception",
               "penalty": "repetition_penalty"}
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise HFPersonaError(f"--weights expects NAME=VALUE pairs separated by commas, got {part!r}")
        name, value = (s.strip() for s in part.split("=", 1))
        name = aliases.get(name.lower(), name)
        if name not in REWARD_NAMES:
            raise HFPersonaError(f"--weights: unknown reward {name!r}; valid: {', '.join(REWARD_NAMES)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise HFPersonaError(f"--weights: {name} needs a number, got {value!r}") from None
        if not math.isfinite(out[name]) or out[name] < 0:
            raise HFPersonaError(f"--weights: {name} needs a finite number >= 0, got {value!r}")
    if not out:
        raise HFPersonaError("--weights is empty")
    return out


def _default_data():
    from hf_persona.data import sample_path, shared_data_file
    from hf_persona.errors import HFPersonaError

    try:
        return shared_data_file()
    except HFPersonaError:  # no real data here: the embedded sample
        return str(sample_path("personachat"))


@click.command("transmitter")
@click.option("--data", default=None, type=input_file(),
              help="PERSONA-CHAT ParlAI text file (default: shared original personas, else the embedded sample).")
@click.option("--output-dir", required=True, type=output_dir())
@click.option("--backbone", default="minilm", show_default=True, callback=check_backbone,
              help="minilm (offline, BERT as decoder), smollm2 (offline, chat format), openai-gpt, gpt2, "
                   "microsoft/DialoGPT-small, or a path.")
@click.option("--dev-from", default=800, show_default=True, type=POS_INT, help="Dialogues from this index on are held out.")
@click.option("--epochs", default=2.0, show_default=True, type=POS_FLOAT)
@click.option("--max-steps", default=-1, show_default=True, type=MAX_STEPS, help="Optimiser steps (-1: --epochs).")
@click.option("--budget-minutes", default=None, type=POS_FLOAT, help="Stop (with a checkpoint) after this wall time.")
@click.option("--batch-size", default=8, show_default=True, type=POS_INT, help="Examples per step and process.")
@click.option("--gradient-accumulation-steps", default=1, show_default=True, type=POS_INT,
              help="Batches summed into one optimiser step.")
@click.option("--lr", "learning_rate", default=6.25e-5, show_default=True, type=POS_FLOAT)
@click.option("--warmup-steps", default=0, show_default=True, type=NONNEG_INT, help="Linear warm-up of the learning rate.")
@click.option("--lora", default=0, show_default=True, type=NONNEG_INT,
              help="LoRA rank on every linear layer of the backbone (0: full fine-tuning); the merged model is saved, "
                   "the adapter kept in OUTPUT_DIR/adapter.")
@click.option("--lm-weight", default=0.6, show_default=True, type=UNIT_FLOAT, help="w in w·LM + (1-w)·NUP.")
@click.option("--label-smoothing", default=0.05, show_default=True, type=UNIT_FLOAT_OPEN)
@click.option("--max-context-tokens", default=256, show_default=True, type=POS_INT)
@click.option("--save-steps", default=200, show_default=True, type=POS_INT)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--no-resume", is_flag=True, help="Start afresh even when OUTPUT_DIR holds checkpoints.")
@json_option()
@quiet_work(warm_start=True)
def train_transmitter_cmd(data, output_dir, backbone, dev_from, epochs, max_steps, budget_minutes, batch_size,
                          gradient_accumulation_steps, learning_rate, warmup_steps, lora, lm_weight, label_smoothing, max_context_tokens,
                          save_steps, seed, no_resume, json_out):
    """Supervised Transmitter training (LM + next-utterance prediction, one distractor per example)."""
    from hf_persona.training.transmitter import train_transmitter

    data = data or _default_data()
    summary = train_transmitter(output_dir, train_data=data, backbone=backbone,
                                dev_from=clamp_first(dev_from, _count(data)), epochs=epochs, max_steps=max_steps,
                                budget_minutes=budget_minutes, batch_size=batch_size,
                                gradient_accumulation_steps=gradient_accumulation_steps,
                                learning_rate=learning_rate, warmup_steps=warmup_steps, lora=lora,
                                lm_weight=lm_weight,
                                label_smoothing=label_smoothing, max_context_tokens=max_context_tokens,
                                save_steps=save_steps, seed=seed, resume=not no_resume,
                                json_out=json_file(json_out))
    finish(summary, TRAIN_KEYS, saved_to=output_dir, json_out=json_out)


@click.command("selfplay")
@click.option("--model", "sft_model", required=True, type=input_dir(),
              help="Supervised Transmitter folder (both the frozen user and the agent start from it).")
@click.option("--output-dir", required=True, type=output_dir())
@click.option("--receiver", default=None, type=input_dir(),
              help="Trained Receiver folder for RS.3 (persona_perception).")
@click.option("--data", default=None, type=input_file(), help="PERSONA-CHAT file for the seeds.")
@click.option("--dev-from", default=800, show_default=True, type=POS_INT)
@click.option("--weights", default=None,
              help="Reward weights, e.g. 'rs1=0.4,rs2=0.1,rs3=0.5,penalty=0.1' (default: the paper's).")
@click.option("--baseline", type=click.Choice(["mean", "leave_one_out"]), default="mean", show_default=True)
@click.option("--turns", default=3, show_default=True, type=POS_INT)
@click.option("--episodes-per-seed", default=2, show_default=True, type=POS_INT)
@click.option("--gamma", default=0.5, show_default=True, type=UNIT_FLOAT)
@click.option("--lr", "learning_rate", default=1e-6, show_default=True, type=POS_FLOAT)
@click.option("--kl-beta", default=0.0, show_default=True, type=NONNEG_FLOAT,
              help="KL penalty to the frozen supervised model (0: the paper's plain policy gradient).")
@click.option("--mask-truncated", is_flag=True,
              help="Leave agent turns cut at the token limit (no <eos>) out of the loss.")
@click.option("--sft-weight", default=0.0, show_default=True, type=NONNEG_FLOAT,
              help="Weight of the supervised loss on real turns added to every update (0: the paper's objective).")
@click.option("--sft-batch-size", default=8, show_default=True, type=POS_INT, help="Real turns per update for --sft-weight.")
@click.option("--max-steps", default=1000, show_default=True, type=POS_INT)
@click.option("--budget-minutes", default=None, type=POS_FLOAT)
@click.option("--save-steps", default=20, show_default=True, type=POS_INT)
@click.option("--language-model", default=None, callback=check_backbone,
              help="Causal LM for RS.1 (default: the frozen supervised model).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--no-resume", is_flag=True, help="Start afresh even when OUTPUT_DIR holds checkpoints.")
@json_option()
def train_selfplay_cmd(sft_model, output_dir, receiver, data, dev_from, weights, baseline, turns, episodes_per_seed,
                       gamma, learning_rate, kl_beta, mask_truncated, sft_weight, sft_batch_size, max_steps,
                       budget_minutes, save_steps, language_model, seed, no_resume, json_out):
    """Self-play RL: frozen user vs learning agent, rewards RS.1-RS.3 and the information penalty."""
    if turns * episodes_per_seed < 2:
        raise click.BadParameter("the baseline needs at least 2 agent turns per group: raise --turns or "
                                 "--episodes-per-seed", param_hint="'--episodes-per-seed'")
    parsed_weights = parse_weights(weights)
    with expected_noise_filtered():
        _train_selfplay(sft_model, output_dir, receiver, data, dev_from, parsed_weights, baseline, turns,
                        episodes_per_seed, gamma, learning_rate, kl_beta, mask_truncated, sft_weight, sft_batch_size,
                        max_steps, budget_minutes, save_steps, language_model, seed, no_resume, json_out)


def _train_selfplay(sft_model, output_dir, receiver, data, dev_from, parsed_weights, baseline, turns,
                    episodes_per_seed, gamma, learning_rate, kl_beta, mask_truncated, sft_weight, sft_batch_size,
                    max_steps, budget_minutes, save_steps, language_model, seed, no_resume, json_out):
    from hf_persona.training.selfplay import train_selfplay

    data = data or _default_data()
    dev_from = clamp_first(dev_from, _count(data))
    summary = train_selfplay(sft_model, output_dir, train_data=data, receiver=receiver,
                             weights=parsed_weights, baseline=baseline, turns=turns,
                             episodes_per_seed=episodes_per_seed, gamma=gamma, learning_rate=learning_rate,
                             kl_beta=kl_beta, mask_truncated=mask_truncated, sft_weight=sft_weight,
                             sft_batch_size=sft_batch_size, max_steps=max_steps, budget_minutes=budget_minutes,
                             save_steps=save_steps,
                             dev_from=dev_from, language_model=language_model, seed=seed,
                             resume=not no_resume, json_out=json_file(json_out))
    finish(summary, SELFPLAY_KEYS, saved_to=output_dir, json_out=json_out)


def _parse_models(values) -> list:
    out = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            name, path = None, v
        problem = check_model_ref(path, "model", MODEL_ACCEPTED)
        if problem:
            raise click.BadParameter(problem, param_hint="'--model'")
        out.append((name, path))
    if not out:
        raise HFPersonaError("eval transmitter needs at least one --model")
    if len(out) > 1 and any(n is None for n, _ in out):
        raise HFPersonaError("with several --model options name each one: --model supervised=DIR --model rs1=DIR")
    return out


@click.command("transmitter")
@click.option("--model", "models", multiple=True, required=True,
              help="Transmitter folder, or NAME=DIR (repeat for the variant table: supervised=, rs1=, rs2=, rs3=).")
@click.option("--data", default=None, type=input_file(),
              help="PERSONA-CHAT ParlAI text file (default: shared original personas, else the embedded sample).")
@click.option("--dev-from", default=800, show_default=True, type=NONNEG_INT,
              help="Evaluate dialogues from this index on (none there: all, with a warning); 0 = all.")
@click.option("--candidates", default=20, show_default=True, type=CANDIDATES)
@click.option("--max-examples", default=None, type=POS_INT, help="Seeded random subset of responder turns.")
@click.option("--num-beams", default=2, show_default=True, type=POS_INT)
@click.option("--alpha", default=None, type=NONNEG_FLOAT, help="Eq. 3 weight (default: the model config's, 0.1).")
@click.option("--receiver", default=None, type=input_dir(),
              help="Receiver folder: also report the mean persona reward (RS.3) on dev self-play episodes.")
@click.option("--user-model", default=None, type=input_dir(),
              help="Frozen user for the self-play episodes (default: the first --model).")
@click.option("--selfplay-episodes", default=50, show_default=True, type=POS_INT)
@click.option("--seed", default=0, show_default=True, type=SEED)
@json_option()
def eval_transmitter_cmd(models, data, dev_from, candidates, max_examples, num_beams, alpha, receiver, user_model,
                         selfplay_episodes, seed, json_out):
    """Hits@1 of N, F1 and PPL on held-out PERSONA-CHAT dialogues (several models -> variant table)."""
    parsed_models = _parse_models(models)
    with expected_noise_filtered():
        _eval_transmitter(parsed_models, data, dev_from, candidates, max_examples, num_beams, alpha, receiver,
                          user_model, selfplay_episodes, seed, json_out)


def _eval_transmitter(parsed_models, data, dev_from, candidates, max_examples, num_beams, alpha, receiver, user_model,
                      selfplay_episodes, seed, json_out):
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.transmitter import run_transmitter_eval

    data = data or _default_data()
    table, flat = run_transmitter_eval(parsed_models, data, dev_from=clamp_held_out(dev_from, _count(data)),
                                       n_candidates=candidates, max_examples=max_examples, num_beams=num_beams,
                                       alpha=alpha, receiver=receiver, user_model=user_model,
                                       selfplay_episodes=selfplay_episodes, seed=seed,
                                       json_out=json_file(json_out))
    finish(flat, (), json_out=json_out, table=format_table(table))


def add_commands(cli) -> None:
    """Add the Transmitter's commands to ``cli``'s ``train`` and ``eval`` groups."""
    cli.commands["train"].add_command(train_transmitter_cmd)
    cli.commands["train"].add_command(train_selfplay_cmd)
    cli.commands["eval"].add_command(eval_transmitter_cmd)
