"""A short, deterministic Trainer run through hf_persona.training.common, used by test_reliability.

``python -c "from tests.reliability_job import main; main()" OUT [PACE_SECONDS]`` trains a tiny
BERT classifier for 24 steps (checkpoints every 5), writing the finished step number to
``OUT/progress`` after each step so a test can kill it at a known point. Exit status 3 means the
run stopped on a signal after saving a checkpoint (``TrainingInterrupted``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

STEPS_PER_EPOCH = 12
EPOCHS = 2
SAVE_STEPS = 5


def run(out_dir, pace: float = 0.0, logging_steps: int = 1, stop_at: int | None = None):
    """Train (resuming when ``out_dir`` holds checkpoints); returns the Trainer, with the
    ``TrainOutput`` of :func:`train_resumable` as ``trainer.result``. ``stop_at``: save a
    checkpoint and stop after that step (a run cut short, without a signal)."""
    import torch
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from hf_persona.training.common import train_resumable

    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 64, (STEPS_PER_EPOCH * 4, 8), generator=gen)
    labels = (ids[:, 0] > 32).long()
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2,
                        hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            (out / "progress.tmp").write_text(str(state.global_step))
            (out / "progress.tmp").replace(out / "progress")
            if pace:
                time.sleep(pace)
            if stop_at is not None and state.global_step >= stop_at:
                control.should_save = control.should_training_stop = True
            return control

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=EPOCHS,
                             learning_rate=1e-2, save_strategy="steps", save_steps=SAVE_STEPS,
                             logging_steps=logging_steps,
                             seed=7, data_seed=7, report_to=[], disable_tqdm=True, use_cpu=True,
                             dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Progress()])
    trainer.result = train_resumable(trainer)
    trainer.save_state()
    trainer.save_model(str(out / "final"))
    return trainer


def main():
    from hf_persona.training.common import TrainingInterrupted

    out = sys.argv[1]
    pace = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    try:
        run(out, pace)
    except TrainingInterrupted as exc:
        print(exc, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
