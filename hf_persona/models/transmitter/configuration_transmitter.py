"""Configuration of the P2Bot Transmitter (Liu et al., 2020, section 3)."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

# backbones that are bidirectional encoders by default and must be switched to causal decoders
_ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie"}


class TransmitterConfig(PretrainedConfig):
    r"""Holds every hyper-parameter of :class:`TransmitterForDialogue`.

    Args:
        backbone_config (`dict` or `PretrainedConfig`): configuration of the causal language model
            inside (GPT, GPT-2/DialoGPT, or a BERT turned into a decoder with ``is_decoder=True``).
        lm_weight (`float`, defaults to 0.6): ``w`` in ``loss = w * LM + (1 - w) * NUP``.
        label_smoothing (`float`, defaults to 0.05): label smoothing of the LM loss.
        nup_dropout (`float`, defaults to 0.2): dropout before the next-utterance-prediction head.
        rerank_alpha (`float`, defaults to 0.1): ``alpha`` of the paper's eq. 3, weighting the
            length-normalised log-probability against ``log p(next)`` when re-ranking beams.
        max_context_tokens / max_response_tokens: input limits used by the formatting helpers.
        persona_token_id, self_token_id, partner_token_id, nup_token_id: ids of the special tokens
            (set by the training recipe once the tokenizer has them).
    """

    model_type = "p2bot_transmitter"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config=None,
        lm_weight: float = 0.6,
        label_smoothing: float = 0.05,
        nup_dropout: float = 0.2,
        rerank_alpha: float = 0.1,
        max_context_tokens: int = 256,
        max_response_tokens: int = 32,
        persona_token_id: int | None = None,
        self_token_id: int | None = None,
        partner_token_id: int | None = None,
        nup_token_id: int | None = None,
        initializer_range: float | None = None,
        **kwargs,
    ):
        if backbone_config is None:
            from transformers import BertConfig

            backbone_config = BertConfig(is_decoder=True)
        elif isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            if "model_type" not in backbone_config:
                raise ValueError("backbone_config dict needs a 'model_type' key (e.g. 'bert', 'gpt2')")
            backbone_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
        elif not isinstance(backbone_config, PretrainedConfig):
            raise TypeError(
                f"backbone_config must be a dict or a PretrainedConfig, got {type(backbone_config).__name__}"
            )
        if backbone_config.model_type in _ENCODER_TYPES:
            backbone_config.is_decoder = True
            backbone_config.add_cross_attention = False
        if not 0.0 <= lm_weight <= 1.0:
            raise ValueError(f"lm_weight must be in [0, 1], got {lm_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= nup_dropout < 1.0:
            raise ValueError(f"nup_dropout must be in [0, 1), got {nup_dropout}")
        if not 0.0 <= rerank_alpha <= 1.0:
            raise ValueError(f"rerank_alpha must be in [0, 1], got {rerank_alpha}")
        self.backbone_config = backbone_config
        self.lm_weight = float(lm_weight)
        self.label_smoothing = float(label_smoothing)
        self.nup_dropout = float(nup_dropout)
        self.rerank_alpha = float(rerank_alpha)
        self.max_context_tokens = int(max_context_tokens)
        self.max_response_tokens = int(max_response_tokens)
        self.persona_token_id = persona_token_id
        self.self_token_id = self_token_id
        self.partner_token_id = partner_token_id
        self.nup_token_id = nup_token_id
        self.initializer_range = (
            initializer_range if initializer_range is not None
            else getattr(backbone_config, "initializer_range", 0.02)
        )
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    def get_text_config(self, *args, **kwargs):
        """The backbone's config: caches, generation and embedding resizing read it."""
        return self.backbone_config

    @property
    def hidden_size(self) -> int:
        cfg = self.backbone_config
        for name in ("hidden_size", "n_embd", "d_model"):
            if getattr(cfg, name, None) is not None:
                return int(getattr(cfg, name))
        raise ValueError(f"cannot find the hidden size of backbone {cfg.model_type!r}")

    @property
    def vocab_size(self) -> int:
        return int(self.backbone_config.vocab_size)

    @vocab_size.setter
    def vocab_size(self, value: int) -> None:  # resize_token_embeddings writes it
        if hasattr(self, "backbone_config"):
            self.backbone_config.vocab_size = int(value)
