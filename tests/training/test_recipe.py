"""The trainer arguments every recipe shares (hf_persona.training.recipe)."""

import json

import pytest
import torch
from transformers import Seq2SeqTrainingArguments, TrainingArguments

from hf_persona.training.recipe import cpu_precision, trainer_arguments, write_summary


def test_shared_settings_and_recipe_overrides(tmp_path):
    args = trainer_arguments(TrainingArguments, tmp_path / "run", batch_size=4, learning_rate=3e-5, seed=7,
                             max_steps=12, save_steps=5, logging_steps=2, eval_strategy="no",
                             save_total_limit=3)
    assert args.output_dir == str(tmp_path / "run")
    assert (args.per_device_train_batch_size, args.learning_rate, args.seed, args.max_steps) == (4, 3e-5, 7, 12)
    assert args.save_strategy == "steps" and args.save_steps == 5 and args.logging_steps == 2
    assert args.save_total_limit == 3  # the recipe's own value wins over the shared 2
    assert args.report_to == [] and args.dataloader_num_workers == 0 and args.disable_tqdm
    assert args.use_cpu == (not torch.cuda.is_available())
    # epochs / warmup left at None keep the class's defaults
    default = TrainingArguments(output_dir=str(tmp_path / "d"))
    assert args.num_train_epochs == default.num_train_epochs and args.warmup_steps == default.warmup_steps


def test_progress_none_keeps_the_class_default(tmp_path):
    default = TrainingArguments(output_dir=str(tmp_path / "d"))
    kept = trainer_arguments(TrainingArguments, tmp_path, batch_size=1, learning_rate=1e-4, progress=None)
    shown = trainer_arguments(TrainingArguments, tmp_path, batch_size=1, learning_rate=1e-4, progress=True)
    assert kept.disable_tqdm == default.disable_tqdm and shown.disable_tqdm is False


def test_seq2seq_arguments_and_an_unknown_argument(tmp_path):
    args = trainer_arguments(Seq2SeqTrainingArguments, tmp_path, batch_size=2, learning_rate=1e-4, epochs=2.0,
                             warmup_steps=3)
    assert isinstance(args, Seq2SeqTrainingArguments) and args.num_train_epochs == 2.0 and args.warmup_steps == 3
    with pytest.raises(TypeError, match="no_such_option"):
        trainer_arguments(TrainingArguments, tmp_path, batch_size=2, learning_rate=1e-4, no_such_option=1)


def test_trl_configs_train_in_fp32_on_a_cpu(tmp_path):
    from trl import SFTConfig

    args = trainer_arguments(SFTConfig, tmp_path, batch_size=2, learning_rate=1e-4, max_steps=1)
    if torch.cuda.is_available():
        assert cpu_precision() == {}
    else:
        assert cpu_precision() == {"bf16": False} and args.bf16 is False


def test_write_summary_only_where_the_run_saves(tmp_path):
    class Args:
        should_save = False

    out = tmp_path / "summary.json"
    assert write_summary({"a": 1}, out, Args()) == {"a": 1} and not out.exists()
    Args.should_save = True
    write_summary({"a": 1}, out, Args())
    assert json.loads(out.read_text()) == {"a": 1}
    assert write_summary({"b": 2}, None, Args()) == {"b": 2}
