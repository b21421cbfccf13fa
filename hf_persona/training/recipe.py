"""What every training recipe shares: the trainer arguments, the device choice, the summary.

Each recipe (``train_cobert``, ``train_pal``, ``train_persona_extractor``, ``train_generator``,
``train_critic``, ``train_rl``, ``train_receiver``, ``train_transmitter``, self-play) builds its
``transformers.TrainingArguments`` or TRL config with :func:`trainer_arguments`, so the settings that
must not differ between recipes are written once:

* ``use_cpu`` on a machine without CUDA: without it, ``torchrun`` / ``accelerate launch`` on a CPU
  initialises a process group but the Trainer trains as independent ``world_size=1`` copies;
* fp32 on a CPU for TRL configs (:func:`cpu_precision`: TRL turns bf16 on by default, and bf16
  autocast on a CPU is many times slower);
* no reporting integrations (``report_to=[]``), no dataloader worker processes, the progress bar
  only when asked;
* checkpoints: at most two kept, every ``save_steps`` (the resumable path of
  :func:`hf_persona.training.common.train_resumable` resumes from the newest intact one).

A recipe passes its own settings (evaluation strategy, best-model selection, TRL's generation
options...) as keyword arguments, which override these defaults. :func:`write_summary` writes a
recipe's JSON summary from the main process only.

**One recipe shape.** Every recipe's settings are a dataclass extending :class:`RecipeConfig` (the
fields all recipes share: output folder, backbone, epochs / steps / time budget, batch, learning rate,
warm-up, evaluation and logging intervals, seed, resume, LoRA rank, progress bar, JSON summary). Each
field's default is written once, on the dataclass; its checked range, command-line flag and help are in
its metadata (:func:`option`), from which ``hf_persona.commands.options.recipe_options`` builds the click
options of ``hf-persona train <recipe>``. A bad value fails when the config is built, from Python and
from the command line alike, with the field, the value and what is accepted. Every ``train_*`` function
takes its config (or the output folder and keyword arguments that build it, as before) and returns a
:class:`RecipeResult`: the run's summary, with the output folder and, where the recipe keeps one in
memory, the trained model.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import HFPersonaError
from ..utils import atomic_write_json

# ---------------------------------------------------------------------------------------------
# checked ranges and the field metadata the command line is built from

@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: ``kind`` (int or float, finite), bounds (``None``: none),
    open or closed, and single ``extra`` values allowed outside them (``max_steps``: -1)."""

    kind: type = float
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    extra: tuple = ()

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        text = f"{noun} {' and '.join(parts)}".strip()
        return text + "".join(f" or {e}" for e in self.extra)

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if value in self.extra:
            return True
        if not math.isfinite(value):
            return False
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            return False
        return not (self.max is not None and (value > self.max or (self.max_open and value == self.max)))


POSITIVE_INT = Range(int, min=1)
NONNEGATIVE_INT = Range(int, min=0)
SEED_RANGE = Range(int, min=0, max=2**32 - 1)
STEPS = Range(int, min=1, extra=(-1,))  # max_steps: -1 = train for the epochs
POSITIVE = Range(float, min=0, min_open=True)
NONNEGATIVE = Range(float, min=0)
UNIT = Range(float, min=0, max=1)
UNIT_OPEN = Range(float, min=0, max=1, max_open=True)
FRACTION = Range(float, min=0, max=1, min_open=True, max_open=True)


@dataclass(frozen=True)
class Option:
    """How a config field reaches the command line: ``flag`` (default ``--field-name``), older
    ``aliases``, ``help``, and its check: a :class:`Range`, ``choices``, or a ``kind`` the command
    layer knows ("backbone", "model", "output_dir", "input_file", "input_dir"). ``cli=False``: the
    field is Python-only."""

    help: str = ""
    flag: str | None = None
    aliases: tuple = ()
    range: Range | None = None
    choices: tuple | None = None
    kind: str | None = None
    cli: bool = True


def option(help: str = "", **spec) -> dict:
    """Field metadata: ``field(default=..., metadata=option("help", range=POSITIVE_INT, flag="--lr"))``."""
    return {"option": Option(help=help, **spec)}


def field_option(f: dataclasses.Field) -> Option | None:
    """The :class:`Option` of a config field (``None``: no metadata)."""
    return f.metadata.get("option")


def _check_value(cls_name: str, f: dataclasses.Field, value) -> None:
    spec = field_option(f)
    if spec is None or value is None:
        return
    what = f"{cls_name}.{f.name} = {value!r}"
    about = f" ({spec.help.split(':')[0].split('(')[0].strip().rstrip('.')})" if spec.help else ""
    if spec.range is not None and not spec.range.accepts(value):
        raise HFPersonaError(f"{what}: expected {spec.range.describe()}{about}")
    if spec.choices is not None and value not in spec.choices:
        raise HFPersonaError(f"{what}: expected one of {', '.join(map(repr, spec.choices))}{about}")
    if spec.kind in ("backbone", "model", "output_dir", "input_file", "input_dir") and not (
            isinstance(value, (str, Path)) and str(value).strip()):
        raise HFPersonaError(f"{what}: expected a non-empty path or name{about}")


# ---------------------------------------------------------------------------------------------
# the config every recipe extends

@dataclass(kw_only=True)
class RecipeConfig:
    """The settings every training recipe shares; each recipe extends it with its own fields and
    defaults (``CoBERTTrainingConfig``, ``PALTrainingConfig``, ...). Build one with keywords;
    :meth:`build` also takes the older keyword names of a recipe (with a ``DeprecationWarning``)."""

    #: older keyword names of fields: {old: new}; a recipe adds its own
    renamed: ClassVar[dict] = {}
    #: shared fields this recipe has no use for: its command leaves them out, and one set from Python to
    #: anything but its default is an error (never silently ignored)
    unused: ClassVar[tuple] = ()

    output_dir: str | Path = field(metadata=option(
        "Checkpoints, the final model and train_summary.json.", kind="output_dir"))
    backbone: str = field(default="minilm", metadata=option(
        "'minilm' (offline), 'smollm2', a Hub id or a local model folder.", kind="backbone"))
    epochs: float = field(default=1.0, metadata=option("Training epochs (when --max-steps is -1).", range=POSITIVE))
    max_steps: int = field(default=-1, metadata=option(
        "Stop after this many optimiser steps (-1: --epochs).", range=STEPS))
    budget_minutes: float | None = field(default=None, metadata=option(
        "Time budget: stop (after evaluating and saving) after this wall time in minutes.", range=POSITIVE))
    batch_size: int = field(default=8, metadata=option("Rows per optimiser step and process.", range=POSITIVE_INT))
    learning_rate: float = field(default=5e-5, metadata=option("Learning rate.", flag="--lr", range=POSITIVE))
    warmup_steps: int = field(default=0, metadata=option("Linear warm-up steps.", range=NONNEGATIVE_INT))
    eval_steps: int | None = field(default=None, metadata=option(
        "Evaluate (and checkpoint) every N steps.", range=POSITIVE_INT))
    logging_steps: int = field(default=10, metadata=option("Log every N steps.", range=POSITIVE_INT, cli=False))
    seed: int = field(default=0, metadata=option("Random seed.", range=SEED_RANGE))
    resume: bool = field(default=True, metadata=option(
        "Continue from the newest complete checkpoint in the output folder (--no-resume: start afresh).",
        flag="--resume/--no-resume"))
    lora: int = field(default=0, metadata=option(
        "Train LoRA adapters of this rank instead of all weights (0: all weights).", range=NONNEGATIVE_INT,
        cli=False))
    progress: bool = field(default=True, metadata=option("Show the Trainer's progress bar.", cli=False))
    json_out: str | Path | None = field(default=None, metadata=option(
        "Also write the summary to this JSON file.", cli=False))

    def __post_init__(self):
        name = type(self).__name__
        for f in dataclasses.fields(self):
            _check_value(name, f, getattr(self, f.name))
            if f.name in self.unused and getattr(self, f.name) != f.default:
                raise HFPersonaError(f"{name}.{f.name} = {getattr(self, f.name)!r}: not used by this recipe "
                                     f"(leave it at {f.default!r})")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, config=None, /, **kwargs):
        """The config a ``train_*`` function runs with: ``config`` itself (an instance of ``cls``,
        keyword arguments replacing its fields), or ``cls(output_dir=config, **kwargs)`` when
        ``config`` is the output folder. Older keyword names are accepted with a
        ``DeprecationWarning``; an unknown keyword is a :class:`TypeError` naming it and the fields."""
        for old, new in cls.renamed.items():
            if old in kwargs:
                warnings.warn(f"{cls.__name__}: the keyword {old!r} is now {new!r}", DeprecationWarning,
                              stacklevel=3)
                value = kwargs.pop(old)
                kwargs[new] = convert_renamed(old, new, value)
        unknown = sorted(set(kwargs) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; its fields: "
                            f"{', '.join(cls.field_names())}")
        if isinstance(config, cls):
            return dataclasses.replace(config, **kwargs) if kwargs else config
        if isinstance(config, RecipeConfig):
            raise TypeError(f"expected a {cls.__name__}, got a {type(config).__name__}")
        if config is not None:
            if "output_dir" in kwargs:
                raise TypeError("output_dir given twice (positionally and as a keyword)")
            kwargs["output_dir"] = config
        if "output_dir" not in kwargs:
            raise TypeError(f"{cls.__name__} needs output_dir (the folder the run writes)")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """The config as JSON-ready values (paths as strings), for a run's summary."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def convert_renamed(old: str, new: str, value):
    """The value of an older keyword under its new name (``disable_tqdm`` -> ``progress`` flips it)."""
    if old == "disable_tqdm":
        return None if value is None else not value
    return value


class RecipeResult(dict):
    """What every ``train_*`` recipe returns: the run's summary (this dict: steps, losses,
    ``world_size``, ``examples_seen``...), plus ``output_dir`` (where the run saved) and ``model``
    (the trained model when the recipe keeps it in memory, else ``None``: load it from ``output_dir``)."""

    def __init__(self, summary: dict, output_dir, model: Any = None):
        super().__init__(summary)
        self.output_dir = Path(output_dir)
        self.model = model

    @property
    def summary(self) -> dict:
        """The summary as a plain dict."""
        return dict(self)

    def __repr__(self) -> str:
        model = "None" if self.model is None else type(self.model).__name__
        return f"RecipeResult(output_dir={str(self.output_dir)!r}, model={model}, summary={dict(self)!r})"


def cuda_available() -> bool:
    """Whether training runs on a CUDA GPU (the recipes' automatic CPU/GPU choice)."""
    import torch

    return torch.cuda.is_available()


def cpu_precision() -> dict:
    """``{"bf16": False}`` without a GPU, else ``{}`` (the trainer's default).

    TRL 1.x turns ``bf16`` on by default in ``SFTConfig`` / ``RLOOConfig`` / ``GRPOConfig``; on a CPU
    that means bf16 autocast, whose matmuls (measured here, torch 2.13) run through the generic
    non-BLAS GEMM: a SmolLM2-135M step of batch 8 x ~230 tokens took over 3 minutes instead of ~30 s
    in fp32."""
    return {} if cuda_available() else {"bf16": False}


def trainer_arguments(config_class, output_dir, *, batch_size: int, learning_rate: float, seed: int = 0,
                      max_steps: int = -1, epochs: float | None = None, warmup_steps: int | None = None,
                      logging_steps: int = 10, save_steps: int | None = None, progress: bool | None = False,
                      **specific):
    """``config_class(...)`` (``TrainingArguments``, ``Seq2SeqTrainingArguments`` or a TRL config)
    with the settings every recipe shares (see the module docstring) and the recipe's ``specific``
    ones, which win over the shared defaults.

    ``epochs``, ``warmup_steps`` and ``save_steps`` left at ``None`` keep the class's defaults
    (``save_steps`` given: checkpoints every ``save_steps`` steps); ``progress`` shows the Trainer's
    progress bar (``None``: the class's default). An argument the class does not know is a :class:`TypeError` naming it.
    """
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        max_steps=max_steps,
        logging_steps=logging_steps,
        save_total_limit=2,
        report_to=[],
        seed=seed,
        use_cpu=not cuda_available(),
        dataloader_num_workers=0,
    )
    optional = {"num_train_epochs": epochs, "warmup_steps": warmup_steps,
                "disable_tqdm": None if progress is None else not progress}
    values.update({k: v for k, v in optional.items() if v is not None})
    if save_steps is not None:
        values.update(save_strategy="steps", save_steps=save_steps)
    if _is_trl_config(config_class):
        values.update(cpu_precision())
    values.update(specific)
    return config_class(**values)


def _is_trl_config(config_class) -> bool:
    return config_class.__module__.split(".")[0] == "trl"


def run_size(args, state) -> dict:
    """``world_size`` (processes) and ``examples_seen`` (rows of all processes' optimiser steps) of a
    finished run, for a recipe's summary."""
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return {"world_size": args.world_size, "examples_seen": state.global_step * per_step}


def write_summary(summary: dict, json_out, args) -> dict:
    """Write a recipe's ``summary`` to ``json_out`` (when given) from the process that saves
    (``args.should_save``: rank 0 of a multi-process run); return it."""
    if json_out and args.should_save:
        atomic_write_json(json_out, summary)
    return summary
