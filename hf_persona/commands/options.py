"""Checked option types shared by the ``hf-persona`` commands (issue 28, item 3).

Every numeric option gets a range and every path a check that runs while click parses the command
line, before any model or data set loads: a bad value ends the command at once with status 2 and one
line that names the option (see :mod:`hf_persona.cli`). This module imports only click and the
standard library; the backbone / model check imports ``huggingface_hub`` when it is asked about a Hub
id, never at ``--help``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import click


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also rejects ``nan`` and ``inf`` (which pass every comparison)."""

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)


class MaxSteps(click.ParamType):
    """``--max-steps``: -1 (train for ``--epochs``) or a positive number of optimiser steps."""

    name = "integer"

    def convert(self, value, param, ctx):
        rv = click.INT.convert(value, param, ctx)
        if rv == -1 or rv >= 1:
            return rv
        self.fail(f"{rv} is neither -1 (train for --epochs) nor a positive number of steps.", param, ctx)

    def __repr__(self):
        return "MaxSteps"


#: counts and sizes: at least 1
POS_INT = click.IntRange(min=1)
#: counts where 0 means "none" or "all" (documented per option)
NONNEG_INT = click.IntRange(min=0)
#: candidates per ranking item: the true one and at least one distractor
CANDIDATES = click.IntRange(min=2)
#: seeds as numpy and torch take them
SEED = click.IntRange(min=0, max=2**32 - 1)
#: epochs, learning rates, temperatures, minutes: > 0
POS_FLOAT = FiniteFloatRange(min=0, min_open=True)
#: weights and penalties: >= 0
NONNEG_FLOAT = FiniteFloatRange(min=0)
#: shares and probabilities: [0, 1]
UNIT_FLOAT = FiniteFloatRange(min=0, max=1)
#: label smoothing, warm-up ratio: [0, 1)
UNIT_FLOAT_OPEN = FiniteFloatRange(min=0, max=1, max_open=True)
#: held-out fractions: (0, 1)
FRACTION = FiniteFloatRange(min=0, max=1, min_open=True, max_open=True)
MAX_STEPS = MaxSteps()


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


class OutputPath(click.Path):
    """A file or folder the command will create: an existing part of the path that is a file
    (``--output-dir report.txt/run``), a folder where a file is to be written, or a folder without
    write permission fails before any work starts."""

    def __init__(self, file_okay=True, dir_okay=True, **kwargs):
        super().__init__(file_okay=file_okay, dir_okay=dir_okay, exists=False, **kwargs)
        self.name = "folder" if not file_okay else "file" if not dir_okay else "path"

    def convert(self, value, param, ctx):
        if self.allow_dash and value == "-":
            return value
        rv = super().convert(value, param, ctx)
        text = os.fspath(rv)
        if not text.strip():
            self.fail("an empty path.", param, ctx)
        path = Path(text).expanduser()
        existing = _first_existing(path)
        if existing != path:
            if not existing.is_dir():
                self.fail(f"{text!r} cannot be created: {str(existing)!r} is a file, not a folder.", param, ctx)
            target = existing
        else:
            target = path if path.is_dir() else path.parent if str(path.parent) else Path(".")
        if not os.access(target, os.W_OK | os.X_OK):
            self.fail(f"{text!r} cannot be written: no write permission in {str(target)!r}.", param, ctx)
        return rv


def output_dir(**kwargs) -> OutputPath:
    return OutputPath(file_okay=False, **kwargs)


def output_file(**kwargs) -> OutputPath:
    return OutputPath(dir_okay=False, **kwargs)


def input_file(**kwargs) -> click.Path:
    return click.Path(exists=True, dir_okay=False, readable=True, **kwargs)


def input_dir(**kwargs) -> click.Path:
    return click.Path(exists=True, file_okay=False, readable=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# backbones and models: a packaged name, a local folder or a Hub id that exists

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _hub_problem(repo_id: str) -> str | None:
    """None when ``repo_id`` is a model in the local Hugging Face cache or on the Hub, else what it is
    not (completing "... is neither a local folder nor ")."""
    from huggingface_hub import constants, try_to_load_from_cache

    if re.search(r"--|\.\.", repo_id) or repo_id.endswith((".", "-")) or len(repo_id) > 96:
        return "a valid Hub id"
    for filename in ("config.json", "adapter_config.json", "modules.json"):
        if isinstance(try_to_load_from_cache(repo_id, filename), str):
            return None
    if constants.HF_HUB_OFFLINE:
        return "a model in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
    try:
        from huggingface_hub import HfApi

        if HfApi().repo_exists(repo_id):
            return None
    except Exception as exc:  # no network, a proxy error...: say so rather than guess
        return f"a model in the local Hugging Face cache, and the Hub could not be reached ({type(exc).__name__})"
    return "a model on the Hub (a private or gated one needs `hf auth login`)"


def check_model_ref(value: str, what: str, accepted: str, aliases=()) -> str | None:
    """Why ``value`` names no usable model (None when it does): a name in ``aliases``, an existing
    folder, or a Hub id that is cached or on the Hub."""
    name = value.strip()
    if not name:
        return f"{what} is empty; accepted: {accepted}"
    if name.lower() in {a.lower() for a in aliases}:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    if path.exists():
        return f"{what} {value!r} is a file, not a model folder; accepted: {accepted}"
    if not _HUB_ID.fullmatch(name):
        return f"{what} {value!r} is not a folder that exists; accepted: {accepted}"
    problem = _hub_problem(name)
    if problem is None:
        return None
    return f"{what} {value!r} is neither a local folder nor {problem}; accepted: {accepted}"


def backbone_aliases():
    from hf_persona.backbones import ALIASES, SMOLLM2_ALIASES

    return (*ALIASES, *SMOLLM2_ALIASES)


BACKBONE_ACCEPTED = "'minilm', 'smollm2', a local model folder or a Hub model id (org/name)"
MODEL_ACCEPTED = "a local model folder or a Hub model id (org/name)"


def check_backbone(ctx, param, value):
    """Click callback for ``--backbone``-like options."""
    if value is None:
        return value
    problem = check_model_ref(value, "backbone", BACKBONE_ACCEPTED, backbone_aliases())
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def check_model(ctx, param, value):
    """Click callback for options that name a trained model (folder or Hub id)."""
    if value is None:
        return value
    problem = check_model_ref(value, "model", MODEL_ACCEPTED)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def check_modules(ctx, param, value):
    """Click callback for comma-separated module names (LoRA targets): the list of names."""
    names = None if value is None else [m.strip() for m in value.split(",") if m.strip()]
    if names == []:
        raise click.BadParameter("expected comma-separated module names such as q_proj,v_proj", ctx=ctx, param=param)
    return names


# ---------------------------------------------------------------------------------------------
# the options of ``hf-persona train <recipe>``, generated from the recipe's config dataclass

def range_type(spec):
    """The click type of a :class:`hf_persona.training.recipe.Range` (the same check, while parsing)."""
    if spec.kind is int and spec.min is None and spec.max is None and not spec.extra:
        return click.INT
    if spec.kind is int:
        if spec.extra == (-1,) and spec.min == 1 and spec.max is None:
            return MAX_STEPS
        if spec.extra:
            raise TypeError(f"no click type for {spec!r}")
        return click.IntRange(min=spec.min, max=spec.max, min_open=spec.min_open, max_open=spec.max_open)
    return FiniteFloatRange(min=spec.min, max=spec.max, min_open=spec.min_open, max_open=spec.max_open)


_KINDS = {
    "backbone": lambda: {"callback": check_backbone},
    "model": lambda: {"callback": check_model},
    "modules": lambda: {"callback": check_modules},
    "output_dir": lambda: {"type": output_dir()},
    "input_file": lambda: {"type": input_file()},
    "input_dir": lambda: {"type": input_dir()},
}


def _click_option(f, spec, default, required: bool):
    import dataclasses

    flag = spec.flag or "--" + f.name.replace("_", "-")
    kwargs: dict = {"help": spec.help}
    if "/" in flag:  # --x/--no-x: a boolean with both spellings
        return click.option(flag, *spec.aliases, f.name, default=default, show_default=True, **kwargs)
    if f.type in (bool, "bool"):
        if default:
            raise TypeError(f"{f.name}: a boolean option that defaults to True needs a '--x/--no-x' flag")
        return click.option(flag, *spec.aliases, f.name, is_flag=True, **kwargs)
    if spec.range is not None:
        kwargs["type"] = range_type(spec.range)
    elif spec.choices is not None:
        kwargs["type"] = click.Choice([str(c) for c in spec.choices])
    elif spec.kind is not None:
        kwargs.update(_KINDS[spec.kind]())
    if required:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
        kwargs["show_default"] = default is not None and default is not dataclasses.MISSING
    return click.option(flag, *spec.aliases, f.name, **kwargs)


def recipe_options(config_class, *, skip=()):
    """Decorator adding one click option per command-line field of ``config_class`` (a
    :class:`hf_persona.training.recipe.RecipeConfig` subclass), in field order: the flag, check, default
    and help of each come from the field (one default, in one place). The config's ``unused`` fields and
    ``skip`` (fields the command sets itself) get no option. The command receives each field under its
    own name."""
    import dataclasses

    chosen = []
    for f in dataclasses.fields(config_class):
        spec = f.metadata.get("option")
        if spec is None or not spec.cli or f.name in skip or f.name in config_class.unused:
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        chosen.append(_click_option(f, spec, default, required=default is dataclasses.MISSING))

    def deco(command):
        for opt in reversed(chosen):
            command = opt(command)
        return command

    return deco


# ---------------------------------------------------------------------------------------------
# the split

def dev_from_option(default, *aliases, help: str, type=None):
    """``--dev-from N``: the one way to choose splits (dialogues before N train, from N on are held
    out). ``aliases`` are the older spellings of the same option (``--train-dialogues``, ``--first``,
    ``--skip-dialogues``): still accepted, hidden from ``--help``, and a warning names ``--dev-from``.
    Giving both is a usage error."""
    import functools

    kind = type or NONNEG_INT
    main = click.option("--dev-from", "dev_from", default=default, show_default=default is not None, type=kind,
                        help=help)

    def param(alias: str) -> str:
        return "old_" + alias.lstrip("-").replace("-", "_")

    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            given = {a: v for a in aliases if (v := kwargs.pop(param(a))) is not None}
            if given:
                ctx = click.get_current_context()
                if len(given) > 1 or ctx.get_parameter_source("dev_from") != click.core.ParameterSource.DEFAULT:
                    both = ", ".join(["--dev-from", *given][-2:])
                    raise click.UsageError(f"give the split once, as --dev-from (got {both})", ctx=ctx)
                alias, kwargs["dev_from"] = next(iter(given.items()))
                from hf_persona.utils import get_logger

                get_logger("hf_persona.cli").warning(f"{alias} is deprecated: use --dev-from {kwargs['dev_from']} "
                                                     "(the same split)")
            return f(*args, **kwargs)

        for alias in aliases:
            wrapper = click.option(alias, param(alias), default=None, type=kind, hidden=True,
                                   help="Deprecated spelling of --dev-from.")(wrapper)
        return main(wrapper)

    return deco
