"""Configuration of P2Bot's Receiver (Liu et al., 2020, section 4).

This file imports only ``transformers`` so that it can be copied into a checkpoint and loaded
with ``trust_remote_code=True`` by users who do not have ``hf_persona`` installed.
"""

from transformers import AutoConfig, PretrainedConfig


LOSS_TYPES = ("margin", "softmax")


class ReceiverConfig(PretrainedConfig):
    r"""Hyper-parameters of the Receiver persona-perception scorer.

    The Receiver encodes each utterance of one speaker and each sentence of a persona into a vector
    (masked mean pooling over the last hidden layer), builds the relevance grid
    ``U = H · Wᵀ / √d`` (utterances × persona sentences), aggregates every row with a
    temperature softmax over the persona sentences, and averages the rows into one score.

    Args:
        encoder (`dict` or `PretrainedConfig`, *optional*):
            Configuration of the sentence encoder backbone (any ``AutoModel`` encoder: BERT, DistilBERT,
            RoBERTa, MiniLM, ...). A dict must carry ``model_type`` (defaults to ``"bert"``).
        share_encoders (`bool`, defaults to `True`):
            ``True``: one encoder for utterances and persona sentences (the authors' code);
            ``False``: a separate impression encoder and persona encoder (the paper's Figure 5).
        segment_ids (`bool`, defaults to `True`):
            With a shared encoder, give persona sentences token type id 1 and utterances 0 (the authors'
            code), so the shared encoder knows which side it reads. Ignored when encoders are separate.
        margin (`float`, defaults to 0.4):
            Margin ``m`` of the ranking loss ``max(0, m + c_Z - c_A)`` (paper: 0.4, authors' code: 0.5).
        l1_weight (`float`, defaults to 1e-4):
            Weight ``β`` of the L1 sparsity penalty on the relevance grids (paper: 1e-4, code: 1e-2).
        loss_type (`str`, defaults to `"margin"`):
            ``"margin"``: the paper's ranking loss ``max(0, m + c_Z - c_A)`` averaged over the distractors.
            ``"softmax"``: cross-entropy of the true persona among itself and the distractors on the scores
            divided by ``loss_temperature`` (InfoNCE); unlike the hinge it keeps pushing on the hardest
            distractors after the margin is met. The L1 term is added in both cases.
        loss_temperature (`float`, defaults to 0.1):
            Temperature of the ``"softmax"`` loss (a score gap of ``m = 0.4`` is a logit gap of 4).
        tau (`float`, defaults to 0.5):
            Current temperature ``τ`` of the aggregation softmax. Training anneals it and stores the final
            value here, so a saved model scores with the temperature it ended training with.
        tau_start (`float`, defaults to 10.0) / tau_end (`float`, defaults to 0.5):
            The linear annealing schedule used in training (paper: 10 → 0.5).
        max_utterance_length (`int`, defaults to 64) / max_persona_length (`int`, defaults to 32):
            Token truncation lengths used by the text-level helpers (``score``, ``relevance``...).
        encode_chunk_size (`int`, defaults to 64):
            In ``forward``, the real sentences of a batch are sorted by length and encoded in chunks of
            this many, each cut to its longest sentence (same result, less padding compute).
        encoder_name_or_path (`str`, *optional*):
            The pretrained encoder the Receiver started from (recorded for model cards).
    """

    model_type = "p2bot_receiver"
    sub_configs = {"encoder": AutoConfig}

    def __init__(
        self,
        encoder=None,
        share_encoders: bool = True,
        segment_ids: bool = True,
        margin: float = 0.4,
        l1_weight: float = 1e-4,
        loss_type: str = "margin",
        loss_temperature: float = 0.1,
        tau: float = 0.5,
        tau_start: float = 10.0,
        tau_end: float = 0.5,
        max_utterance_length: int = 64,
        max_persona_length: int = 32,
        encode_chunk_size: int = 64,
        encoder_name_or_path=None,
        **kwargs,
    ):
        if encoder is None:
            encoder = AutoConfig.for_model("bert")
        elif isinstance(encoder, dict):
            encoder = dict(encoder)
            model_type = encoder.pop("model_type", "bert")
            encoder = AutoConfig.for_model(model_type, **encoder)
        elif not isinstance(encoder, PretrainedConfig):
            raise TypeError(
                f"ReceiverConfig: `encoder` must be a dict or a transformers PretrainedConfig, got {type(encoder).__name__}"
            )
        if not hasattr(encoder, "hidden_size"):
            raise ValueError(
                f"ReceiverConfig: the encoder config ({type(encoder).__name__}) has no `hidden_size`; "
                "expected a text encoder such as BERT, DistilBERT or RoBERTa"
            )
        for name, value in (("margin", margin), ("l1_weight", l1_weight)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"ReceiverConfig: `{name}` must be a number >= 0, got {value!r}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"ReceiverConfig: `loss_type` must be one of {LOSS_TYPES}, got {loss_type!r}")
        for name, value in (
            ("loss_temperature", loss_temperature),
            ("tau", tau),
            ("tau_start", tau_start),
            ("tau_end", tau_end),
        ):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ReceiverConfig: `{name}` must be a number > 0, got {value!r}")
        for name, value in (("max_utterance_length", max_utterance_length), ("max_persona_length", max_persona_length)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"ReceiverConfig: `{name}` must be an integer >= 2, got {value!r}")
        if not isinstance(encode_chunk_size, int) or encode_chunk_size < 1:
            raise ValueError(f"ReceiverConfig: `encode_chunk_size` must be an integer >= 1, got {encode_chunk_size!r}")
        self.encoder = encoder
        self.share_encoders = bool(share_encoders)
        self.segment_ids = bool(segment_ids)
        self.margin = float(margin)
        self.l1_weight = float(l1_weight)
        self.loss_type = loss_type
        self.loss_temperature = float(loss_temperature)
        self.tau = float(tau)
        self.tau_start = float(tau_start)
        self.tau_end = float(tau_end)
        self.max_utterance_length = max_utterance_length
        self.max_persona_length = max_persona_length
        self.encode_chunk_size = encode_chunk_size
        self.encoder_name_or_path = None if encoder_name_or_path is None else str(encoder_name_or_path)
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size


__all__ = ["ReceiverConfig"]
