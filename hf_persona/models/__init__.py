"""One folder per model, in the transformers style. Each folder imports only torch,
transformers and its own siblings, so saved checkpoints load with ``trust_remote_code=True``
for users who do not have hf_persona installed."""
