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
"""

from __future__ import annotations

from ..utils import atomic_write_json


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
