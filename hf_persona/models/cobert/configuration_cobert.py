"""Configurations for CoBERT (Zhong et al., 2020) and its Bi-encoder baseline.

This file imports only ``transformers`` so that checkpoints saved with ``save_pretrained`` load with
``trust_remote_code=True`` on machines that do not have ``hf_persona`` installed.
"""

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

_POOLINGS = ("max", "mean", "max+mean")


def _check_positive_int(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    low = 0 if allow_zero else 1
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


class _ResponseSelectionConfigBase(PreTrainedConfig):
    """Fields shared by CoBERT and the Bi-encoder: one shared encoder plus the input limits.

    Args:
        encoder: configuration (or dict) of the shared text encoder (any ``AutoModel`` encoder: BERT,
            DistilBERT, all-MiniLM, ...). Defaults to a BERT configuration.
        max_context_length: token budget of the context sequence; the most recent utterances are kept.
        max_context_turns: at most this many most recent context utterances are used (paper: 6).
        max_persona_sentences: persona sentences used per example (paper: 10); extra ones are dropped
            with a warning.
        max_persona_length: token budget of the persona sequence (sentences joined with the separator).
        max_response_length: token budget of a candidate response.
        use_token_type_ids: give context utterances alternating segment ids (respondent = 1, the other
            speaker = 0) when the encoder has at least two token types.
        mask_duplicate_candidates: in training, a candidate whose tokens equal the gold response of the
            same row (e.g. two "hi ." in one batch) is masked instead of counted as a negative.
        score_scale: multiplier of the final matching score (a softmax temperature for the loss;
            rankings do not depend on it); None means ``1 / sqrt(hidden_size)``. The paper uses the
            plain dot product (1.0).
    """

    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    max_context_length: int = 128
    max_context_turns: int = 6
    max_persona_sentences: int = 10
    max_persona_length: int = 96
    max_response_length: int = 32
    use_token_type_ids: bool = True
    mask_duplicate_candidates: bool = True
    score_scale: float | None = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.score_scale is not None:
            if isinstance(self.score_scale, bool) or not isinstance(self.score_scale, (int, float)):
                raise TypeError(f"score_scale must be a number or None, got {self.score_scale!r}")
            if not self.score_scale > 0:
                raise ValueError(f"score_scale must be > 0, got {self.score_scale}")
        _check_positive_int("max_context_length", self.max_context_length)
        _check_positive_int("max_context_turns", self.max_context_turns)
        _check_positive_int("max_persona_sentences", self.max_persona_sentences, allow_zero=True)
        _check_positive_int("max_persona_length", self.max_persona_length)
        _check_positive_int("max_response_length", self.max_response_length)
        for name in ("max_context_length", "max_persona_length", "max_response_length"):
            if getattr(self, name) < 3:
                raise ValueError(f"{name} must leave room for [CLS] text [SEP] (>= 3), got {getattr(self, name)}")
        if self.hidden_size is None:
            raise ValueError("the encoder configuration has no hidden_size (or dim); expected a text encoder config")

    @property
    def effective_score_scale(self):
        """The multiplier applied to scores: ``score_scale`` or ``1/sqrt(hidden_size)`` when None."""
        return float(self.score_scale) if self.score_scale is not None else float(self.hidden_size) ** -0.5

    @property
    def hidden_size(self):
        enc = self.encoder
        for attr in ("hidden_size", "dim", "d_model"):
            value = getattr(enc, attr, None)
            if isinstance(value, int):
                return value
        return None


class CoBERTConfig(_ResponseSelectionConfigBase):
    """Configuration of [`CoBERTForResponseSelection`].

    CoBERT encodes context, persona and candidate response with one shared encoder, matches
    context-response and persona-response with multi-hop co-attention and scores with the dot product
    of the concatenated matching vectors (paper sections 4.2-4.5). The matching has no parameters of
    its own: all weights belong to the encoder.

    Args:
        num_hops: co-attention hops whose features are used (1, 2 or 3). Hop 1 is the max-pooled
            co-attended sequence, hop 2 the attention-over-attention vector (paper eq. 4-5), hop 3
            continues the alternation one step further (the paper's "+ hop-3" ablation).
        use_hop1: keep the hop-1 features (set False for the paper's "- hop-1" ablation; needs
            ``num_hops >= 2``).
        hop1_pooling: pooling of the hop-1 attended sequences: "max" (paper), "mean" or "max+mean".
        attention_scale: multiplier of the word-word affinity matrix before the softmaxes; the paper
            uses the plain dot product (1.0).
        use_persona: match persona against the response (False: context-response matching only).
        global_match: also match the plain mean-pooled token states, appending ``mean(X)`` and
            ``mean(Y)`` to the two matching vectors, which adds the Bi-encoder's score
            ``<mean(X), mean(Y)>`` to the co-attention score. Not in the paper (False reproduces it);
            it lets an encoder pretrained for mean-pooled similarity (all-MiniLM) keep that signal.
        score_scale: as in the base configuration, but the default here is None (``1/sqrt(hidden_size)``):
            the plain dot product of the matching vectors gives logits with a spread of about 50 on
            MiniLM (hundreds on BERT-base), which saturates the cross-entropy; 1.0 is the paper's
            exact scoring. Rankings are the same either way.
    """

    model_type = "cobert"

    score_scale: float | None = None
    num_hops: int = 2
    use_hop1: bool = True
    hop1_pooling: str = "max"
    attention_scale: float = 1.0
    use_persona: bool = True
    global_match: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_positive_int("num_hops", self.num_hops)
        if not isinstance(self.global_match, bool):
            raise TypeError(f"global_match must be True or False, got {self.global_match!r}")
        if self.num_hops > 3:
            raise ValueError(f"num_hops must be 1, 2 or 3, got {self.num_hops}")
        if self.hop1_pooling not in _POOLINGS:
            raise ValueError(f"hop1_pooling must be one of {_POOLINGS}, got {self.hop1_pooling!r}")
        if not self.use_hop1 and self.num_hops < 2:
            raise ValueError("use_hop1=False leaves no features unless num_hops >= 2")
        if isinstance(self.attention_scale, bool) or not isinstance(self.attention_scale, (int, float)):
            raise TypeError(f"attention_scale must be a number, got {self.attention_scale!r}")
        if not self.attention_scale > 0:
            raise ValueError(f"attention_scale must be > 0, got {self.attention_scale}")

    @property
    def features_per_match(self):
        """Width (in units of hidden_size) of one side's matching vector for one sequence pair."""
        width = 0
        if self.use_hop1:
            width += 2 if self.hop1_pooling == "max+mean" else 1
        return width + (self.num_hops - 1) + int(self.global_match)


class BiEncoderConfig(_ResponseSelectionConfigBase):
    """Configuration of [`BiEncoderForResponseSelection`], the paper's Bi-encoder (Tri-encoder) baseline:
    mean-pooled context and persona vectors are averaged and scored against the mean-pooled response
    with a dot product."""

    model_type = "persona_biencoder"

    use_persona: bool = True


__all__ = ["CoBERTConfig", "BiEncoderConfig"]
