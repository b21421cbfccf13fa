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
from hf_persona.training.configs import SelfPlayTrainingConfig, TransmitterTrainingConfig

from ._output import clamp_first, clamp_held_out, finish, json_file, json_option, quiet_work
from .options import (
    CANDIDATES,
    MODEL_ACCEPTED,
    NONNEG_FLOAT,
    NONNEG_INT,
    POS_INT,
    SEED,
    check_model_ref,
    input_dir,
    input_file,
    recipe_options,
)

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
@recipe_options(TransmitterTrainingConfig)
@json_option()
@quiet_work(warm_start=True)
def train_transmitter_cmd(data, json_out, **fields):
    """Supervised Transmitter training (LM + next-utterance prediction, one distractor per example)."""
    from hf_persona.training.transmitter import train_transmitter

    data = data or _default_data()
    fields["dev_from"] = clamp_first(fields["dev_from"], _count(data))
    result = train_transmitter(TransmitterTrainingConfig(json_out=json_file(json_out), **fields), train_data=data)
    finish(result, TRAIN_KEYS, saved_to=result.output_dir, json_out=json_out)


@click.command("selfplay")
@click.option("--model", "sft_model", required=True, type=input_dir(),
              help="Supervised Transmitter folder (both the frozen user and the agent start from it).")
@click.option("--receiver", default=None, type=input_dir(),
              help="Trained Receiver folder for RS.3 (persona_perception).")
@click.option("--data", default=None, type=input_file(), help="PERSONA-CHAT file for the seeds.")
@click.option("--weights", default=None,
              help="Reward weights, e.g. 'rs1=0.4,rs2=0.1,rs3=0.5,penalty=0.1' (default: the paper's).")
@recipe_options(SelfPlayTrainingConfig)
@json_option()
def train_selfplay_cmd(sft_model, receiver, data, weights, json_out, **fields):
    """Self-play RL: frozen user vs learning agent, rewards RS.1-RS.3 and the information penalty."""
    if fields["turns"] * fields["episodes_per_seed"] < 2:
        raise click.BadParameter("the baseline needs at least 2 agent turns per group: raise --turns or "
                                 "--episodes-per-seed", param_hint="'--episodes-per-seed'")
    config = SelfPlayTrainingConfig(weights=parse_weights(weights), json_out=json_file(json_out), **fields)
    with expected_noise_filtered():
        _train_selfplay(sft_model, config, receiver, data, json_out)


def _train_selfplay(sft_model, config, receiver, data, json_out):
    from hf_persona.training.selfplay import train_selfplay

    data = data or _default_data()
    config = SelfPlayTrainingConfig.build(config, dev_from=clamp_first(config.dev_from, _count(data)))
    result = train_selfplay(sft_model, config, train_data=data, receiver=receiver)
    finish(result, SELFPLAY_KEYS, saved_to=result.output_dir, json_out=json_out)


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
