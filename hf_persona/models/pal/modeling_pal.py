"""PAL: persona-augmented encoder-decoder for emotional support (Cheng et al., 2023, section 3.3).

Self-contained: imports only torch, transformers and single-dot siblings, so a checkpoint saved
with ``save_pretrained`` (which copies this file, ``configuration_pal.py`` and
``generation_pal.py``) loads with ``AutoModelForSeq2SeqLM.from_pretrained(dir, trust_remote_code=True)``.

Public API (stable):

* ``PALForConditionalGeneration.from_backbone(name_or_path, tokenizer=None)`` builds a model
  from any seq2seq checkpoint, or warm-starts a BERT-to-BERT encoder-decoder from an encoder
  checkpoint (e.g. the packaged MiniLM folder); the tokenizer gets the PAL tokens first.
* ``model(input_ids, attention_mask, persona_input_ids=None, persona_attention_mask=None,
  decoder_input_ids=None, labels=None, ...)``: with ``persona_input_ids=None`` the decoder
  attends over the plain dialogue states H_D (the persona-free model ``logits(d)``); with a
  persona it attends over H_final (``logits(d, p)``). ``labels`` are shifted right with
  ``config.decoder_start_token_id`` to make ``decoder_input_ids`` when those are not given.
* ``model.encode(...)`` returns a :class:`PALEncoderOutput` with both H_final and H_D.
* ``model.generate(input_ids=..., attention_mask=..., persona_input_ids=..., persona_attention_mask=...)``
  works with and without persona; ``model.strategies_of(sequences)`` names the strategy each
  generated sequence chose (its first decoded token).
* ``model.strategy_contrast_processor(alpha=...)`` builds the strategy contrastive
  LogitsProcessor (paper section 3.4) that ships in ``generation_pal.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from .configuration_pal import PERSONA_ALIGNMENTS, STRATEGY_NAMES, STRATEGY_TOKENS, PALConfig
from .generation_pal import (
    StrategyContrastCache,
    StrategyContrastiveLogitsProcessor,
    cache_argument_name,
    output_cache,
    prepare_pal_generate,
)


@dataclass
class PALEncoderOutput(ModelOutput):
    """Output of the PAL encoder stage.

    Attributes:
        last_hidden_state: the states the decoder cross-attends over, ``[batch, keys, hidden]``:
            H_final when a persona was given, H_D otherwise. ``keys`` is the dialogue length, or
            dialogue + persona length with ``PALConfig.persona_alignment="concat"``.
        dialogue_hidden_state: H_D, the plain encoder states of the dialogue ``[batch, dialogue_len, hidden]``.
            Strategy contrastive decoding uses them for ``logits(d)``.
        attention_mask: the mask of ``last_hidden_state`` (1 = a key the decoder may attend to); the
            model uses it in place of the dialogue mask when it is set.
        persona_hidden_state: H^_P = LN_p(H_P + Z_P), ``[batch, persona_len, hidden]`` (None without persona).
        coattention_weights: A_DP, ``[batch, dialogue_len, persona_len]``, the masked softmax of
            eq. 2 (None without persona).

    The mixture weights (l1, l2, l3) of eq. 4 are ``model.mixture_weights()``.
    """

    last_hidden_state: torch.FloatTensor | None = None
    dialogue_hidden_state: torch.FloatTensor | None = None
    persona_hidden_state: torch.FloatTensor | None = None
    coattention_weights: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class PALSeq2SeqLMOutput(ModelOutput):
    """Output of :class:`PALForConditionalGeneration`.

    Attributes:
        loss: mean token cross-entropy over the labels that are not -100 (paper eq. 5).
        logits: ``[batch, target_len, vocab]``.
        cache: the decoder cache (also readable as ``past_key_values``, its name before
            transformers 5.25).
        encoder_last_hidden_state: the states the decoder attended over (H_final or H_D).
        dialogue_hidden_state: H_D.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    dialogue_hidden_state: torch.FloatTensor | None = None

    @property
    def past_key_values(self):
        return self.cache


def _masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``key_mask`` (``[batch, keys]``, 1 = real) is 0 gets weight 0."""
    keep = key_mask[:, None, :].to(torch.bool)
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    # exact zeros on padding, even when every key of a row is padding (then the row is all zero)
    return weights * keep.to(weights.dtype)


class PALPersonaFusion(nn.Module):
    """Masked co-attention (paper eq. 2-3) and the learned mixture (eq. 4).

    Z_D = softmax_m(H_D H_P^T) H_P,   H^_D = LN_d(H_D + Z_D)
    Z_P = softmax_m(H_P H_D^T) H_D,   H^_P = LN_p(H_P + Z_P)
    H_final = l1 H^_D + l2 (A_DP H^_P) + l3 H_D,  (l1, l2, l3) = softmax(w)      (alignment "coattention")
    H_final = [l1 H^_D + l3 H_D ; l2 H^_P], mask [dialogue ; persona]            (alignment "concat")

    ``softmax_m`` gives padded keys exactly zero weight (the authors' code lets padding take
    part in both softmaxes). ``A_DP`` is the eq. 2 attention matrix; it carries the refined
    persona states onto dialogue positions (see ``PALConfig`` for why). ``forward`` returns
    ``(H_final, its mask, H^_P, A_DP, (l1, l2, l3))``.
    """

    def __init__(self, hidden_size: int, layer_norm_eps: float = 1e-5, scale: bool = False,
                 alignment: str = "coattention"):
        super().__init__()
        if alignment not in PERSONA_ALIGNMENTS:
            raise ValueError(f"PALPersonaFusion alignment must be one of {list(PERSONA_ALIGNMENTS)}, got {alignment!r}")
        self.alignment = alignment
        self.dialogue_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.persona_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mixture_logits = nn.Parameter(torch.zeros(3))
        self.scale = 1.0 / math.sqrt(hidden_size) if scale else 1.0

    def forward(self, dialogue_states, dialogue_mask, persona_states, persona_mask):
        scores = torch.matmul(dialogue_states, persona_states.transpose(1, 2)) * self.scale  # [B, n, m]
        attn_dp = _masked_softmax(scores, persona_mask)  # dialogue queries over persona keys
        attn_pd = _masked_softmax(scores.transpose(1, 2), dialogue_mask)  # persona queries over dialogue keys
        refined_dialogue = self.dialogue_norm(dialogue_states + torch.matmul(attn_dp, persona_states))
        refined_persona = self.persona_norm(persona_states + torch.matmul(attn_pd, dialogue_states))
        lam = torch.softmax(self.mixture_logits, dim=0)
        if self.alignment == "concat":
            fused = torch.cat([lam[0] * refined_dialogue + lam[2] * dialogue_states, lam[1] * refined_persona], dim=1)
            mask = torch.cat([dialogue_mask, persona_mask.to(dialogue_mask.dtype)], dim=1)
            return fused, mask, refined_persona, attn_dp, lam
        persona_on_dialogue = torch.matmul(attn_dp, refined_persona)  # [B, n, h]
        fused = lam[0] * refined_dialogue + lam[1] * persona_on_dialogue + lam[2] * dialogue_states
        return fused, dialogue_mask, refined_persona, attn_dp, lam

    @torch.no_grad()
    def reset_fusion(self, mixture_init) -> None:
        """Initial state: mixture logits ``mixture_init`` (eq. 4) and identity LayerNorms."""
        self.mixture_logits.copy_(torch.tensor(mixture_init, dtype=self.mixture_logits.dtype))
        for norm in (self.dialogue_norm, self.persona_norm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()

    # The two halves of ``forward`` (alignment "coattention"), for decoders that see the dialogue one
    # token at a time (PAL over a causal LM): H^_P needs the whole context once, then each new
    # position is fused on its own. ``fuse_positions(refine_persona(...))`` equals ``forward``.
    def refine_persona(self, persona_states, persona_mask, context_states, context_mask):
        """H^_P = LN_p(H_P + softmax_m(H_P C^T) C) over the context states C (eq. 3, P side)."""
        scores = torch.matmul(persona_states, context_states.transpose(1, 2)) * self.scale  # [B, m, n]
        return self.persona_norm(persona_states + torch.matmul(_masked_softmax(scores, context_mask), context_states))

    def fuse_positions(self, states, persona_states, persona_mask, refined_persona):
        """Eq. 2-4 for each row of ``states`` on its own: returns (H_final rows, A_DP rows)."""
        scores = torch.matmul(states, persona_states.transpose(1, 2)) * self.scale  # [B, t, m]
        attn = _masked_softmax(scores, persona_mask)
        refined = self.dialogue_norm(states + torch.matmul(attn, persona_states))
        lam = torch.softmax(self.mixture_logits, dim=0)
        fused = lam[0] * refined + lam[1] * torch.matmul(attn, refined_persona) + lam[2] * states
        return fused, attn


def _last_layer_norm(module: nn.Module, hidden_size: int):
    """The last ``nn.LayerNorm`` over ``hidden_size`` features with weight and bias in ``module`` (None if none)."""
    found = None
    for sub in module.modules():
        if (isinstance(sub, nn.LayerNorm) and tuple(sub.normalized_shape) == (hidden_size,)
                and sub.weight is not None and sub.bias is not None):
            found = sub
    return found


def _few_rows_linear_forward(self, hidden):
    """Forward of the LM-head ``nn.Linear`` used while generating on CPU.

    For a handful of rows, PyTorch's CPU ``linear`` packs the whole (vocab x hidden) weight at
    every call, so 2 rows cost about twice 1 row; ``W @ h^T`` streams the weight once. Same
    math (up to float summation order); other devices, training and larger batches take the
    usual path."""
    rows = hidden.numel() // hidden.shape[-1] if hidden.dim() >= 2 else 0
    if (
        hidden.device.type == "cpu"
        and 0 < rows <= 16
        and not (torch.is_grad_enabled() and (hidden.requires_grad or self.weight.requires_grad))
    ):
        flat = hidden.reshape(rows, hidden.shape[-1])
        out = torch.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*hidden.shape[:-1], out.shape[-1])
    return nn.functional.linear(hidden, self.weight, self.bias)


def _combine_halves(module, args, alpha):
    """Forward pre-hook of the output projection during contrastive decoding: rows [0, R) are
    persona-conditioned, rows [R, 2R) persona-free; returns (1 + a) * first - a * second."""
    hidden = args[0]
    rows = hidden.shape[0] // 2
    a = alpha.to(device=hidden.device, dtype=hidden.dtype).view(rows, *([1] * (hidden.dim() - 1)))
    return ((1 + a) * hidden[:rows] - a * hidden[rows:],) + tuple(args[1:])


class _PALEncoderView:
    """What ``get_encoder()`` returns: runs the backbone encoder on dialogue (and persona) and fuses.

    Not an ``nn.Module`` on purpose: it owns no weights (they live in the model), so it must not
    be registered a second time in the module tree.
    """

    main_input_name = "input_ids"

    def __init__(self, model: "PALForConditionalGeneration"):
        self._model = model

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        persona_input_ids=None,
        persona_attention_mask=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=True,
    ):
        return self._model.encode(
            input_ids=input_ids,
            attention_mask=attention_mask,
            persona_input_ids=persona_input_ids,
            persona_attention_mask=persona_attention_mask,
            inputs_embeds=inputs_embeds,
        )

    __call__ = forward


class PALPreTrainedModel(PreTrainedModel):
    config_class = PALConfig
    config: PALConfig
    base_model_prefix = "pal"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # forward returns a mean loss and ignores num_items_in_batch: transformers' Trainer must scale it
    # for gradient accumulation and multi-process training itself (it reads this attribute)
    accepts_loss_kwargs = False
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, PALPersonaFusion):
            module.reset_fusion(self.config.mixture_init)  # [0, 0, 0] by default: equal weights (eq. 4)
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class PALForConditionalGeneration(PALPreTrainedModel, GenerationMixin):
    """PAL over a seq2seq backbone; see the module docstring for the API."""

    def __init__(self, config: PALConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if backbone is None:
            backbone = AutoModelForSeq2SeqLM.from_config(config.backbone)
        self.backbone = backbone
        self.fusion = PALPersonaFusion(config.hidden_size, config.layer_norm_eps, config.coattention_scale,
                                       config.persona_alignment)
        self.post_init()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, name_or_path: str, tokenizer=None, **config_kwargs) -> "PALForConditionalGeneration":
        """Build PAL from a backbone checkpoint (local folder or Hub id).

        * a seq2seq checkpoint (``facebook/blenderbot_small-90M``, BART, T5) is used as is;
        * an encoder-only checkpoint (BERT, e.g. the packaged MiniLM folder) becomes a
          BERT-to-BERT encoder-decoder whose encoder and decoder both start from it
          (``is_decoder=True``, cross-attention layers freshly initialised).

        ``tokenizer`` (loaded from ``name_or_path`` when None) receives the PAL special tokens
        (``processing_pal.add_pal_tokens``) and the embeddings are resized to it. Keep using
        that same tokenizer with the model. Extra ``config_kwargs`` go to :class:`PALConfig`.
        """
        from transformers import AutoTokenizer, EncoderDecoderModel

        from .processing_pal import add_pal_tokens

        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        add_pal_tokens(tokenizer)
        base_config = AutoConfig.from_pretrained(name_or_path)
        if getattr(base_config, "is_encoder_decoder", False):
            backbone = AutoModelForSeq2SeqLM.from_pretrained(name_or_path)
            backbone.resize_token_embeddings(len(tokenizer))
            start = backbone.config.decoder_start_token_id
            if start is None:
                start = getattr(backbone.generation_config, "decoder_start_token_id", None)
            if start is None:
                start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
            eos = tokenizer.eos_token_id
        else:
            backbone = EncoderDecoderModel.from_encoder_decoder_pretrained(name_or_path, name_or_path)
            backbone.encoder.resize_token_embeddings(len(tokenizer))
            backbone.decoder.resize_token_embeddings(len(tokenizer))
            backbone.config.encoder.vocab_size = len(tokenizer)
            backbone.config.decoder.vocab_size = len(tokenizer)
            start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
            eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if start is None or eos is None or tokenizer.pad_token_id is None:
            raise ValueError(
                f"PAL needs a decoder start, an end-of-sequence and a padding token; the tokenizer of "
                f"{name_or_path!r} gives start={start}, eos={eos}, pad={tokenizer.pad_token_id}"
            )
        backbone.config.decoder_start_token_id = start
        backbone.config.pad_token_id = tokenizer.pad_token_id
        config = PALConfig(
            backbone=backbone.config,
            strategy_token_ids=tokenizer.convert_tokens_to_ids(list(STRATEGY_TOKENS)),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
            decoder_start_token_id=start,
            **config_kwargs,
        )
        model = cls(config, backbone=backbone)
        if config.fusion_norm_init == "encoder":
            norm = _last_layer_norm(backbone.get_encoder(), config.hidden_size)
            if norm is None:
                raise ValueError(
                    f"fusion_norm_init='encoder' needs a LayerNorm of size {config.hidden_size} in the encoder of "
                    f"{name_or_path!r}; none found (use 'fresh')"
                )
            with torch.no_grad():
                for target in (model.fusion.dialogue_norm, model.fusion.persona_norm):
                    target.weight.copy_(norm.weight)
                    target.bias.copy_(norm.bias)
        model.generation_config.decoder_start_token_id = start
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = None
        return model

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        return self.backbone.set_output_embeddings(new_embeddings)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, **kwargs):
        """Resize encoder and decoder vocabularies (both halves of a BERT-to-BERT backbone)."""
        backbone = self.backbone
        if hasattr(backbone, "encoder") and hasattr(backbone, "decoder") and hasattr(backbone.config, "encoder"):
            backbone.encoder.resize_token_embeddings(new_num_tokens, **kwargs)
            out = backbone.decoder.resize_token_embeddings(new_num_tokens, **kwargs)
            backbone.config.encoder.vocab_size = new_num_tokens
            backbone.config.decoder.vocab_size = new_num_tokens
            return out
        return backbone.resize_token_embeddings(new_num_tokens, **kwargs)

    def get_encoder(self, modality: str | None = None):
        return _PALEncoderView(self)

    # ------------------------------------------------------------------ encoder stage
    def _backbone_encode(self, input_ids, attention_mask, inputs_embeds=None):
        encoder = self.backbone.get_encoder()
        positions = getattr(encoder.config, "max_position_embeddings", None)
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if positions is not None and length > positions:
            raise ValueError(
                f"PAL input of {length} tokens, but the backbone encoder has {positions} positions; build inputs "
                f"with max_source_length / max_persona_length <= {positions} (build_pal_example drops the oldest "
                "turns to fit)"
            )
        out = encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, return_dict=True)
        return out.last_hidden_state

    def encode(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        persona_input_ids: torch.LongTensor | None = None,
        persona_attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
    ) -> PALEncoderOutput:
        """Encode the dialogue (H_D) and, when ``persona_input_ids`` is given, fuse the persona.

        Without persona the decoder states are H_D itself (the persona-free model of eq. 6).
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("PAL.encode needs the dialogue: pass input_ids (or inputs_embeds)")
        ref = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        dialogue = self._backbone_encode(input_ids, attention_mask, inputs_embeds)
        if persona_input_ids is None:
            return PALEncoderOutput(
                last_hidden_state=dialogue, dialogue_hidden_state=dialogue, attention_mask=attention_mask
            )
        if persona_input_ids.shape[0] != dialogue.shape[0]:
            raise ValueError(
                f"persona_input_ids has batch size {persona_input_ids.shape[0]} but the dialogue has "
                f"{dialogue.shape[0]}; give one persona per dialogue (a placeholder when none is known)"
            )
        if persona_attention_mask is None:
            persona_attention_mask = torch.ones_like(persona_input_ids)
        if (persona_attention_mask.sum(dim=1) == 0).any():
            raise ValueError(
                "a persona row has no real token (persona_attention_mask all zero); use the "
                "placeholder persona from processing_pal when no persona is known"
            )
        persona = self._backbone_encode(persona_input_ids, persona_attention_mask)
        fused, fused_mask, refined_persona, attn_dp, lam = self.fusion(
            dialogue, attention_mask, persona, persona_attention_mask
        )
        return PALEncoderOutput(
            last_hidden_state=fused,
            dialogue_hidden_state=dialogue,
            persona_hidden_state=refined_persona,
            coattention_weights=attn_dp,
            attention_mask=fused_mask,
        )

    # ------------------------------------------------------------------ forward
    def _shift_right(self, labels: torch.LongTensor) -> torch.LongTensor:
        start = self.config.decoder_start_token_id
        pad = self.config.pad_token_id
        if start is None or pad is None:
            raise ValueError("PALConfig needs decoder_start_token_id and pad_token_id to shift labels")
        shifted = labels.new_full(labels.shape, pad)
        shifted[:, 1:] = labels[:, :-1]
        shifted[:, 0] = start
        return shifted.masked_fill(shifted == -100, pad)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        persona_input_ids: torch.LongTensor | None = None,
        persona_attention_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        encoder_outputs: PALEncoderOutput | tuple | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> PALSeq2SeqLMOutput:
        """Teacher-forced or incremental decoding.

        ``persona_input_ids=None`` gives the persona-free distribution logits(d) (decoder over H_D);
        a persona gives logits(d, p) (decoder over H_final). ``labels`` use -100 for ignored
        positions; ``labels = [strategy] + response + eos`` in PAL's format.

        ``cache`` (or ``past_key_values``, its name before transformers 5.25) is the decoder KV
        cache; with a cache, ``decoder_input_ids`` holds only the new tokens. A
        :class:`StrategyContrastCache` (what ``generate`` uses with the strategy contrastive
        processor) makes this call run the persona-free rows in the same batch and return the
        eq. 6 combination. Other keyword arguments that ``generate`` passes are ignored.
        """
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("PAL.forward got two different caches (cache= and past_key_values=); pass one")
        if cache is None:
            cache = past_key_values
        if encoder_outputs is None:
            encoder_outputs = self.encode(
                input_ids=input_ids,
                attention_mask=attention_mask,
                persona_input_ids=persona_input_ids,
                persona_attention_mask=persona_attention_mask,
                inputs_embeds=inputs_embeds,
            )
        elif not isinstance(encoder_outputs, PALEncoderOutput):
            states = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list)) else encoder_outputs.last_hidden_state
            encoder_outputs = PALEncoderOutput(last_hidden_state=states)
        states = encoder_outputs.last_hidden_state
        if encoder_outputs.attention_mask is not None:
            attention_mask = encoder_outputs.attention_mask  # covers the persona keys of the concat alignment
        elif attention_mask is None:
            attention_mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("PAL.forward needs decoder_input_ids or labels")
            decoder_input_ids = self._shift_right(labels)

        paired = isinstance(cache, StrategyContrastCache)
        rows = states.shape[0]
        hook = alpha = None
        if paired:
            # strategy contrastive decoding: the persona-free pass rides in the same batch;
            # rows [0, R) attend over H_final, rows [R, 2R) over H_D; one cache of 2R rows
            if encoder_outputs.dialogue_hidden_state is None:
                raise ValueError(
                    "strategy contrastive decoding needs the plain dialogue states H_D: let generate() run PAL's "
                    "encoder (pass input_ids), or pass encoder_outputs=model.encode(...)"
                )
            alpha = cache.track_strategy_tokens(decoder_input_ids, cache.get_seq_length())
            states, attention_mask = cache.paired_encoder_states(
                states, encoder_outputs.dialogue_hidden_state, attention_mask
            )
            decoder_input_ids = torch.cat([decoder_input_ids, decoder_input_ids], dim=0)
            if decoder_attention_mask is not None:
                decoder_attention_mask = torch.cat([decoder_attention_mask, decoder_attention_mask], dim=0)
            if cache.combine_before_lm_head:
                # (1+a)(W h_p + b) - a(W h_d + b) = W((1+a) h_p - a h_d) + b: combine the two halves
                # on the input of the output projection, which then runs once per row
                head = self.backbone.get_output_embeddings()
                hook = head.register_forward_pre_hook(partial(_combine_halves, alpha=alpha))
        try:
            out = self.backbone(
                encoder_outputs=(states,),
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                use_cache=use_cache,
                return_dict=True,
                **{cache_argument_name(self.backbone.forward): cache},
            )
        finally:
            if hook is not None:
                hook.remove()
        logits = out.logits
        if paired:
            if hook is None:
                logits = StrategyContrastiveLogitsProcessor.combine(logits[:rows], logits[rows:], alpha)
            elif logits.shape[0] != rows:
                raise RuntimeError("the output projection did not see the paired rows; use combine_before_lm_head=False")
            cache.processor.record_model_step(alpha)

        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device), ignore_index=-100
            )
        return PALSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=output_cache(out),
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            dialogue_hidden_state=encoder_outputs.dialogue_hidden_state,
        )

    # ------------------------------------------------------------------ generation
    def generate(self, inputs=None, generation_config=None, logits_processor=None, *args, **kwargs):
        """``GenerationMixin.generate`` plus strategy contrastive decoding.

        With a :class:`StrategyContrastiveLogitsProcessor` in ``logits_processor``, generation runs
        on a :class:`StrategyContrastCache` passed as the user cache (the public ``cache=`` /
        ``past_key_values=`` argument), so that every forward carries the persona-free rows and
        returns the combined logits; see ``generation_pal.py``. Greedy, sampling, beam search and
        ``num_return_sequences`` work; a cache of your own cannot be combined with the processor.
        """
        contrast, _ = prepare_pal_generate(logits_processor, kwargs)
        if contrast is not None:
            contrast.reset()
            kwargs[cache_argument_name()] = StrategyContrastCache(contrast)
        head = self.backbone.get_output_embeddings()
        patched = type(head) is nn.Linear and "forward" not in head.__dict__
        if patched:  # only for the duration of this call; the module is left as it was
            head.forward = _few_rows_linear_forward.__get__(head, nn.Linear)
        try:
            return super().generate(inputs, generation_config, logits_processor, *args, **kwargs)
        finally:
            if patched:
                del head.forward

    # ------------------------------------------------------------------ helpers
    def mixture_weights(self) -> torch.Tensor:
        """(l1, l2, l3) = softmax(w) of eq. 4: weights of H^_D, the aligned H^_P and H_D."""
        return torch.softmax(self.fusion.mixture_logits, dim=0)

    def strategies_of(self, sequences: torch.LongTensor, position: int = 1) -> list:
        """Name of the strategy each generated sequence chose: its token at ``position``
        (1 = first token after the decoder start). ``None`` where that token is not a strategy token."""
        ids = list(self.config.strategy_token_ids or [])
        names = list(self.config.strategy_names or STRATEGY_NAMES)
        lookup = dict(zip(ids, names))
        if sequences.shape[1] <= position:
            return [None] * sequences.shape[0]
        return [lookup.get(int(t)) for t in sequences[:, position].tolist()]

    def strategy_contrast_processor(self, alpha=None, **kwargs) -> StrategyContrastiveLogitsProcessor:
        """The strategy contrastive LogitsProcessor for this model (ships with the checkpoint).

        ``alpha``: None (the config's per-strategy table, paper Table 2), a number or level name
        ("low", "medium", "high") for every strategy, or a dict strategy -> number/level.
        """
        return StrategyContrastiveLogitsProcessor(
            strategy_token_ids=self.config.strategy_token_ids,
            alpha=alpha,
            base_table=self.config.strategy_alpha,
            **kwargs,
        )


__all__ = ["PALForConditionalGeneration", "PALPreTrainedModel", "PALPersonaFusion", "PALEncoderOutput", "PALSeq2SeqLMOutput"]


PALConfig.register_for_auto_class()
PALForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
