"""The commands ``hf-persona train pal`` and ``hf-persona eval pal`` (PAL and its two baselines).

Registered by the PAL plugin (:mod:`hf_persona.default_plugins.pal`) through :func:`add_commands`.
Heavy imports happen inside the commands.
"""

from __future__ import annotations

import dataclasses
import json
import math

import click

from hf_persona.training.configs import PALTrainingConfig

from ._output import finish, json_file, json_option, quiet_work
from .options import NONNEG_FLOAT, POS_INT, SEED, input_dir, recipe_options

#: the config's fields, for the options written here (special parsing) rather than generated
_FIELDS = {f.name: f for f in dataclasses.fields(PALTrainingConfig)}
#: the figures ``train pal`` prints (the rest is in --json)
TRAIN_KEYS = ("variant", "train_examples", "global_step", "world_size", "train_loss", "valid_loss", "mixture_weights",
              "train_seconds", "resumed_from")


def _parse_alpha(value):
    """--alpha: 'table' (paper Table 2), a level name, a number, or a JSON object strategy -> alpha."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"JSON could not be parsed: {exc}", param_hint="'--alpha'") from exc
    try:
        return float(text)
    except ValueError:
        return text


def _check_alpha(ctx, param, value):
    """--alpha: checked before any model loads; an unknown strategy or level names the valid ones."""
    if value is None:
        return None
    try:
        parsed = _parse_alpha(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from None
    if parsed == "table":
        return value
    from hf_persona.models.pal.generation_pal import resolve_strategy_alphas

    try:
        resolve_strategy_alphas(parsed)
    except (TypeError, ValueError) as exc:
        message = str(exc).removeprefix("alpha: ")
        hint = "; or 'table' (paper Table 2)" if isinstance(parsed, str) else ""
        raise click.BadParameter(f"{message}{hint}", ctx=ctx, param=param) from None
    return value


def _parse_mixture_init(ctx, param, text):
    """--mixture-init: three finite numbers 'w1,w2,w3', checked while parsing."""
    from hf_persona.utils import parse_floats

    if text is None:
        return None
    try:
        values = parse_floats(text)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected three finite numbers w1,w2,w3 (eq. 4 logits), got {text!r}",
                                 ctx=ctx, param=param)
    return values


@click.command("pal")
@click.option("--data", required=True, type=input_dir(),
              help="PESConv folder: train/ and valid/ annotate-persona outputs, or one output (split 90/10).")
@recipe_options(PALTrainingConfig, skip=("mixture_learning_rate", "mixture_init", "fusion_layer"))
@click.option("--mixture-lr", "mixture_learning_rate", default=_FIELDS["mixture_learning_rate"].default,
              show_default=True, type=NONNEG_FLOAT,
              help="Learning rate of the three eq. 4 mixture logits; 0 = the same as --lr.")
@click.option("--mixture-init", default=None, callback=_parse_mixture_init,
              help="Initial eq. 4 logits 'w1,w2,w3' for (H^_D, aligned H^_P, H_D); default 0,0,0 (the paper).")
@click.option("--fusion-layer", default=None, type=int,  # any sign: a Python index into the layers
              help=_FIELDS["fusion_layer"].metadata["option"].help)
@json_option()
@quiet_work(warm_start=True)
def train_pal_cmd(data, mixture_learning_rate, json_out, **fields):
    """Train PAL (or a baseline) on PESConv with the Trainer (progress, best checkpoint, resume)."""
    from hf_persona.training.pal import train_pal

    config = PALTrainingConfig(mixture_learning_rate=mixture_learning_rate or None, json_out=json_file(json_out),
                               **fields)
    result = train_pal(data, config)
    finish(result, TRAIN_KEYS, saved_to=result.output_dir, json_out=json_out)


@click.command("pal")
@click.option("--model", "model_dir", required=True, type=input_dir(), help="Output folder of `train pal`.")
@click.option("--data", required=True, type=input_dir(), help="PESConv folder.")
@click.option("--split", type=click.Choice(["valid", "train"]), default="valid", show_default=True)
@click.option("--max-examples", default=None, type=POS_INT, help="Teacher-forced examples (ACC, PPL).")
@click.option("--max-generate", default=None, type=POS_INT,
              help="Sampled examples (BLEU, Distinct, EAD, ROUGE-L, cos-sim).")
@click.option("--alpha", default=None, callback=_check_alpha,
              help="Strategy contrastive decoding: 'table' (paper Table 2), low/medium/high, a number >= 0, or a "
                   "JSON object strategy -> alpha.")
@click.option("--batch-size", default=16, show_default=True, type=POS_INT)
@click.option("--seed", default=0, show_default=True, type=SEED)
@json_option()
@quiet_work()
def eval_pal_cmd(model_dir, data, split, max_examples, max_generate, alpha, batch_size, seed, json_out):
    """Paper Table 3 metrics with the paper's decoding (top-k 10, top-p 0.9, T 0.5, rep. 1.03)."""
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.pal import evaluate_pal
    from hf_persona.training.pal import METRIC_KEYS

    metrics = evaluate_pal(model_dir, data, split=split, max_examples=max_examples, max_generate=max_generate,
                           alpha=_parse_alpha(alpha), batch_size=batch_size, seed=seed, json_out=json_file(json_out))
    row = {"model": metrics["variant"], **{k: metrics[k] for k in METRIC_KEYS},
           "ppl_no_strategy": metrics["ppl_no_strategy"]}
    lines = [format_table([row]), "ppl includes the strategy token (as the paper's code); ppl_no_strategy excludes it"]
    if metrics.get("n_with_persona") is not None:
        def show(value):
            return "-" if value is None else f"{value:.3f}"

        n_with = metrics["n_with_persona"]
        lines.append(f"ppl on turns with a persona (n={n_with}): {show(metrics['ppl_with_persona'])}; with the "
                     f"placeholder (n={metrics['n_teacher_forced'] - n_with}): {show(metrics['ppl_without_persona'])}")
    finish(metrics, (), json_out=json_out, table="\n".join(lines))


def add_commands(cli) -> None:
    """Add ``train pal`` and ``eval pal`` to the ``hf-persona`` command groups."""
    cli.commands["train"].add_command(train_pal_cmd)
    cli.commands["eval"].add_command(eval_pal_cmd)
