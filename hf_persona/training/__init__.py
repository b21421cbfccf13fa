"""Training recipes built on transformers.Trainer and TRL."""
