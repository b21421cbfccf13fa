"""The one time-budget TrainerCallback (hf_persona.training.common.time_budget_callback) and the
recipes that use it: Receiver, Transmitter and self-play stop, checkpoint and report through it."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
import torch

from hf_persona.errors import HFPersonaError
from hf_persona.training.common import time_budget_callback
from tests.models.transmitter.test_transmitter import receiver, tiny, tiny_dir, tok  # noqa: F401  (fixtures: tiny models)

NOW = 1e-9  # minutes: the budget is spent after the first step


def _spent(minutes=0.0):
    cb = time_budget_callback(minutes)
    cb.on_train_begin(None, None, None)
    time.sleep(0.002)
    return cb


def test_eval_only_when_evaluation_is_configured():
    from transformers import TrainerControl

    for args, evaluates in ((None, True), (SimpleNamespace(eval_strategy="steps"), True),
                            (SimpleNamespace(eval_strategy="no"), False)):
        cb = _spent()
        assert not cb.stopped_early and cb.stopped_at is None
        out = cb.on_step_end(args, SimpleNamespace(global_step=7), TrainerControl())
        assert out.should_training_stop and out.should_save
        assert out.should_evaluate is evaluates
        assert cb.stopped_early and cb.stopped_at == 7


def test_budget_not_spent_and_no_budget_never_stop():
    from transformers import TrainerControl

    for minutes in (None, 60):
        cb = time_budget_callback(minutes)
        cb.on_train_begin(None, None, None)
        out = cb.on_step_end(None, SimpleNamespace(global_step=1), TrainerControl())
        assert not out.should_training_stop and not cb.stopped_early


def test_step_without_train_begin_starts_the_clock():
    from transformers import TrainerControl

    cb = time_budget_callback(60)
    assert not cb.on_step_end(None, SimpleNamespace(global_step=1), TrainerControl()).should_training_stop
    assert cb.start is not None


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, "ten"])
def test_bad_budget_is_a_user_error(bad):
    with pytest.raises(HFPersonaError, match="time budget"):
        time_budget_callback(bad)
    with pytest.raises(ValueError):  # HFPersonaError is a ValueError, as the Receiver's check was
        time_budget_callback(bad)


def test_one_callback_class_for_every_recipe():
    from transformers import TrainerCallback

    import hf_persona.training.receiver as receiver_recipe
    import hf_persona.training.transmitter as transmitter_recipe

    assert type(time_budget_callback(1)) is type(time_budget_callback(None))
    assert isinstance(time_budget_callback(1), TrainerCallback)
    assert not hasattr(receiver_recipe, "TimeBudgetCallback")
    assert not hasattr(transmitter_recipe, "budget_callback") and not hasattr(transmitter_recipe, "_BudgetCallback")


def test_trainer_without_eval_set_stops_and_checkpoints(tmp_path):
    """A real Trainer with no evaluation configured: the budget stops it after one step with a
    checkpoint and without asking for an evaluation it could not run."""
    from transformers import Trainer, TrainingArguments

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, x, y):
            return {"loss": torch.nn.functional.mse_loss(self.w(x).squeeze(-1), y)}

    data = [{"x": torch.randn(2), "y": torch.tensor(1.0)} for _ in range(16)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=2,
                             save_steps=100, report_to=[], use_cpu=True, disable_tqdm=True,
                             remove_unused_columns=False)
    budget = time_budget_callback(NOW)
    trainer = Trainer(model=Tiny(), args=args, train_dataset=data, callbacks=[budget])
    trainer.train()
    assert trainer.state.global_step == 1 and budget.stopped_at == 1
    assert (tmp_path / "checkpoint-1" / "trainer_state.json").is_file()


def test_receiver_recipe_stops_on_budget_with_eval_and_checkpoint(tiny_bert_dir, tmp_path):
    from hf_persona.data import read_personachat, sample_path, split_by_dialogue
    from hf_persona.training.receiver import train_receiver

    train, dev = split_by_dialogue(read_personachat(sample_path("personachat")), first=28)
    out = tmp_path / "rx"
    metrics = train_receiver(train, out, backbone=tiny_bert_dir, eval_ds=dev, max_steps=6, batch_size=8,
                             eval_steps=100, save_steps=100, resume=False, progress=False, budget_minutes=NOW)
    assert metrics["global_step"] == 1
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert 0.0 <= metrics["eval_hits_at_1"] <= 1.0  # evaluated at the budget stop (an eval set is given)
    with pytest.raises(HFPersonaError, match="budget_minutes = -1: expected a finite number > 0"):
        train_receiver(train, tmp_path / "bad", backbone=tiny_bert_dir, max_steps=1, budget_minutes=-1)


def test_transmitter_recipe_stops_on_budget(tiny_dir, tmp_path):  # noqa: F811
    from hf_persona.data import sample_path
    from hf_persona.training.transmitter import train_transmitter

    out = tmp_path / "sft"
    summary = train_transmitter(out, train_data=sample_path("personachat"), backbone=tiny_dir, max_steps=5,
                                batch_size=2, save_steps=100, max_context_tokens=64, budget_minutes=NOW)
    assert summary["global_step"] == 1
    assert (out / "checkpoint-1" / "trainer_state.json").is_file() and (out / "model.safetensors").is_file()


def test_selfplay_recipe_stops_on_budget(tiny_dir, receiver, tmp_path):  # noqa: F811
    from hf_persona.data import sample_path
    from hf_persona.training.selfplay import train_selfplay

    out = tmp_path / "sp"
    summary = train_selfplay(tiny_dir, out, max_steps=3, budget_minutes=NOW, train_data=sample_path("personachat"),
                             dev_from=None, receiver=receiver, episodes_per_seed=1, learning_rate=1e-3,
                             save_steps=100, max_new_tokens=4)
    assert summary["global_step"] == 1
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
