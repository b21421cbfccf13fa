"""Configuration of PAL (Persona-Augmented emotional support, Cheng et al., 2023).

This file imports only ``transformers`` so that a checkpoint saved with ``save_pretrained``
loads with ``trust_remote_code=True`` for a user who does not have hf_persona installed.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The eight ESConv helping strategies, in the order used everywhere in this model folder
# (strategy index i <-> STRATEGY_TOKENS[i]).
STRATEGY_NAMES = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    "Others",
)
STRATEGY_TOKENS = tuple(f"[{name}]" for name in STRATEGY_NAMES)

# Paper, Table 2: the named levels and the level chosen for every strategy.
ALPHA_LEVELS = {"low": 0.0, "medium": 0.375, "high": 0.75}
DEFAULT_STRATEGY_ALPHA = {
    "Question": 0.0,
    "Restatement or Paraphrasing": 0.75,
    "Reflection of feelings": 0.0,
    "Self-disclosure": 0.0,
    "Affirmation and Reassurance": 0.75,
    "Providing Suggestions": 0.75,
    "Information": 0.75,
    "Others": 0.375,
}

#: values of ``PALConfig.fusion_norm_init``
FUSION_NORM_INITS = ("fresh", "encoder")
#: values of ``PALConfig.persona_alignment``
PERSONA_ALIGNMENTS = ("coattention", "concat")


def _check_shared_fields(config) -> None:
    """Defaults and checks of the fields PALConfig and PALCausalConfig share (mixture logits of
    eq. 4, the strategy names, ids and alpha table)."""
    name = type(config).__name__
    if config.mixture_init is None:
        config.mixture_init = [0.0, 0.0, 0.0]
    init = config.mixture_init
    if (not isinstance(init, (list, tuple)) or len(init) != 3
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in init)):
        raise ValueError(f"{name}.mixture_init must be three finite numbers (logits of eq. 4), got {init!r}")
    config.mixture_init = [float(w) for w in init]
    if config.strategy_names is None:
        config.strategy_names = list(STRATEGY_NAMES)
    if config.strategy_alpha is None:
        config.strategy_alpha = dict(DEFAULT_STRATEGY_ALPHA)
    if len(config.strategy_names) != len(STRATEGY_NAMES):
        raise ValueError(
            f"{name}.strategy_names must list the {len(STRATEGY_NAMES)} ESConv strategies "
            f"{list(STRATEGY_NAMES)}, got {config.strategy_names!r}"
        )
    if config.strategy_token_ids is not None and len(config.strategy_token_ids) != len(config.strategy_names):
        raise ValueError(
            f"{name}.strategy_token_ids needs one id per strategy ({len(config.strategy_names)}), "
            f"got {len(config.strategy_token_ids)}"
        )


class PALConfig(PreTrainedConfig):
    r"""Configuration of :class:`PALForConditionalGeneration`.

    PAL wraps any sequence-to-sequence backbone (``backbone``: the config of an
    ``AutoModelForSeq2SeqLM``; offline a BERT-to-BERT ``encoder-decoder`` warm-started from
    MiniLM, on the Hub ``facebook/blenderbot_small-90M``). The backbone's encoder runs twice,
    on the dialogue (H_D) and on the persona text (H_P); a masked co-attention (paper eq. 2-3)
    refines both; the decoder cross-attends over

        H_final = l1 * LN_d(H_D + Z_D) + l2 * A_DP . LN_p(H_P + Z_P) + l3 * H_D,
        (l1, l2, l3) = softmax(w),   w initialised equal (paper eq. 4).

    **Alignment of the persona term (our choice).** ``LN_p(H_P + Z_P)`` has one row per
    persona token, while the other two terms have one row per dialogue token, so eq. 4 cannot
    be summed as written. The authors' code pads both to one length and then keeps only the
    first ``len(dialogue)`` rows, silently dropping persona tokens beyond the dialogue length
    and mixing persona token ``i`` into dialogue token ``i`` for no reason. We instead carry
    the refined persona states onto dialogue positions with the *same* masked attention
    weights that produced Z_D: ``A_DP = softmax_masked(H_D . H_P^T)`` (rows: dialogue tokens,
    columns: real persona tokens), persona term at dialogue position ``i`` =
    ``sum_j A_DP[i, j] * H^_P[j]``. Why: (1) every persona token can contribute, none is
    truncated, and persona padding gets exactly zero weight; (2) dialogue token ``i`` receives
    the persona content it attends to, which is what eq. 2 already decided is relevant to it;
    (3) no new parameters, so eq. 4 keeps exactly three learned weights; (4) H_final keeps the
    dialogue length and the dialogue mask, so the persona-conditioned states and the
    persona-free states H_D have the same shape and mask; this is what lets strategy
    contrastive decoding run both decoder passes as one batch with one cache.

    **The other sound alignment** (``persona_alignment="concat"``): keep the persona term at its own
    positions and let the decoder cross-attend over the concatenation
    ``[l1 * LN_d(H_D + Z_D) + l3 * H_D ; l2 * LN_p(H_P + Z_P)]`` with the mask
    ``[dialogue mask ; persona mask]``. Every persona token is then a key of its own (the decoder
    can read a persona word directly instead of through the dialogue tokens that attended to it),
    at the price of ``len(persona)`` more keys per decoder step. The persona-free states are
    ``[H_D ; 0]`` with the persona part masked out, so the two passes of contrastive decoding
    still share one shape.

    Args:
        backbone (`dict` or `PreTrainedConfig`): config of the seq2seq backbone
            (any ``model_type`` known to ``AutoModelForSeq2SeqLM``; default ``encoder-decoder``).
        coattention_scale (`bool`, defaults to `False`): divide the co-attention scores by
            sqrt(hidden). The paper and the authors' code use the unscaled dot product.
        layer_norm_eps (`float`): epsilon of the two co-attention LayerNorms.
        mixture_init (`list[float]`, defaults to `[0, 0, 0]`): initial logits w of eq. 4, in the
            order (H^_D, aligned H^_P, H_D). Equal logits (the paper) start each term at 1/3;
            e.g. ``[0, 0, 2]`` starts with 79% of the plain dialogue states H_D, so the decoder
            first sees nearly what a persona-free model sees and learns how much persona to add.
        fusion_norm_init (`str`, defaults to `"fresh"`): how ``from_backbone`` starts the two
            co-attention LayerNorms: ``"fresh"`` (weight 1, bias 0; the paper's code) or
            ``"encoder"`` (a copy of the backbone encoder's last LayerNorm, so that
            LN(H + Z) starts on the scale of the encoder states the decoder was trained on).
        persona_alignment (`str`, defaults to `"coattention"`): how the persona term of eq. 4 meets
            the dialogue positions: ``"coattention"`` (carried onto them by A_DP, see above) or
            ``"concat"`` (appended as extra positions the decoder attends to).
        strategy_token_ids (`list[int]`): vocabulary ids of the eight strategy tokens, in the
            order of ``STRATEGY_NAMES``; set by ``PALForConditionalGeneration.from_backbone``.
        strategy_names (`list[str]`): the eight strategy names (``STRATEGY_NAMES``).
        strategy_alpha (`dict[str, float]`): default alpha per strategy for strategy
            contrastive decoding (paper Table 2).
        persona_placeholder (`str`): the token used as persona text while no persona is known.
        pad_token_id / eos_token_id / decoder_start_token_id (`int`): special ids used for
            label shifting and generation.
    """

    model_type = "pal"
    sub_configs_defaults = {"backbone": SubConfigSpec(config_class=AutoConfig, model_type="encoder-decoder")}

    backbone: PreTrainedConfig | dict | None = None
    coattention_scale: bool = False
    layer_norm_eps: float = 1e-5
    mixture_init: list | None = None
    fusion_norm_init: str = "fresh"
    persona_alignment: str = "coattention"
    strategy_token_ids: list | None = None
    strategy_names: list | None = None
    strategy_alpha: dict | None = None
    persona_placeholder: str = "[No persona]"
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    bos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_shared_fields(self)
        if self.fusion_norm_init not in FUSION_NORM_INITS:
            raise ValueError(
                f"PALConfig.fusion_norm_init must be one of {list(FUSION_NORM_INITS)}, got {self.fusion_norm_init!r}"
            )
        if self.persona_alignment not in PERSONA_ALIGNMENTS:
            raise ValueError(
                f"PALConfig.persona_alignment must be one of {list(PERSONA_ALIGNMENTS)}, got {self.persona_alignment!r}"
            )
        backbone = self.backbone
        if isinstance(backbone, PreTrainedConfig) and not getattr(backbone, "is_encoder_decoder", False):
            raise ValueError(
                "PALConfig.backbone must be a sequence-to-sequence config (is_encoder_decoder=True), got "
                f"model_type={backbone.model_type!r}"
            )

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The backbone's text config (generation sizes its caches from the decoder's)."""
        return self.backbone.get_text_config(decoder=decoder, encoder=encoder)

    @property
    def hidden_size(self) -> int:
        """Hidden size of the backbone encoder (the size the co-attention works in)."""
        backbone = self.backbone
        encoder = getattr(backbone, "encoder", None)
        if isinstance(encoder, PreTrainedConfig):
            return encoder.hidden_size
        return getattr(backbone, "d_model", None) or backbone.hidden_size

    @property
    def vocab_size(self) -> int:
        backbone = self.backbone
        decoder = getattr(backbone, "decoder", None)
        if isinstance(decoder, PreTrainedConfig):
            return decoder.vocab_size
        return backbone.vocab_size


#: the system turn of PAL over a causal LM (saved in the config, so training and inference agree)
DEFAULT_CAUSAL_SYSTEM_PROMPT = (
    "You are a warm, patient supporter talking with someone who is going through a hard time. "
    "Begin every reply with the support strategy you use, then answer in one or two sentences."
)


class PALCausalConfig(PreTrainedConfig):
    r"""Configuration of :class:`PALForCausalLM`: PAL over a decoder-only LM (Llama, Qwen, SmolLM2...).

    The dialogue is the LM's chat prompt; the reply starts with a strategy token. The persona
    enters at one decoder layer ``l`` (``fusion_layer``): with h_t the output of layer l at
    position t, H_P the same layer's states of the persona text and C the states of the prompt
    (the dialogue context),

        H^_P = LN_p(H_P + softmax_m(H_P C^T) C)                      (eq. 3, once per prompt)
        H^_D(t) = LN_d(h_t + softmax_m(h_t H_P^T) H_P)                (eq. 2, per position)
        f_t = l1 H^_D(t) + l2 A_DP(t) H^_P + l3 h_t                   (eq. 4)
        h_t <- h_t + g * (f_t - h_t),   g in R^hidden initialised to 0

    so the model *is* the pretrained LM at initialisation and learns how much persona to let in
    per channel. H^_P sees the prompt only, so training and incremental decoding agree (nothing
    reads a token that comes later); the persona-free model logits(d) is the same network with
    the gate path off.

    Args:
        backbone (`dict` or `PreTrainedConfig`): config of the causal LM (default ``llama``).
        fusion_layer (`int`): index of the decoder layer whose output is fused (default: the
            last layer, ``num_hidden_layers - 1``: strategy contrastive decoding then shares the whole
            trunk between the persona and persona-free rows and costs about what plain decoding does;
            fusing the middle layer measured 1.5-2x, see ``docs/decoding.md``).
        coattention_scale (`bool`, defaults to `True`): divide co-attention scores by sqrt(hidden);
            the residual stream of a pretrained LM is far larger than an encoder's output, and
            unscaled scores saturate the softmax.
        layer_norm_eps, mixture_init, strategy_token_ids, strategy_names, strategy_alpha,
        persona_placeholder: as in :class:`PALConfig`.
        system_prompt (`str`): the chat system turn used by ``build_pal_causal_example``.
    """

    model_type = "pal_causal"
    sub_configs_defaults = {"backbone": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    backbone: PreTrainedConfig | dict | None = None
    fusion_layer: int | None = None
    coattention_scale: bool = True
    layer_norm_eps: float = 1e-5
    mixture_init: list | None = None
    strategy_token_ids: list | None = None
    strategy_names: list | None = None
    strategy_alpha: dict | None = None
    persona_placeholder: str = "[No persona]"
    system_prompt: str = DEFAULT_CAUSAL_SYSTEM_PROMPT
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    bos_token_id: int | None = None
    is_encoder_decoder: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_shared_fields(self)
        backbone = self.backbone
        if isinstance(backbone, PreTrainedConfig):
            if getattr(backbone, "is_encoder_decoder", False):
                raise ValueError(
                    "PALCausalConfig.backbone must be a decoder-only LM config; use PALConfig for seq2seq "
                    f"backbones (got model_type={backbone.model_type!r})"
                )
            layers = backbone.get_text_config().num_hidden_layers
            if self.fusion_layer is None:
                self.fusion_layer = layers - 1
            if not isinstance(self.fusion_layer, int) or not 0 <= self.fusion_layer < layers:
                raise ValueError(
                    f"PALCausalConfig.fusion_layer must be a layer index in [0, {layers}), got {self.fusion_layer!r}"
                )

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        return self.backbone.get_text_config(decoder=decoder, encoder=encoder)

    @property
    def hidden_size(self) -> int:
        return self.backbone.get_text_config().hidden_size

    @property
    def vocab_size(self) -> int:
        return self.backbone.get_text_config().vocab_size


__all__ = [
    "PALConfig",
    "PALCausalConfig",
    "STRATEGY_NAMES",
    "STRATEGY_TOKENS",
    "ALPHA_LEVELS",
    "DEFAULT_STRATEGY_ALPHA",
    "DEFAULT_CAUSAL_SYSTEM_PROMPT",
]
