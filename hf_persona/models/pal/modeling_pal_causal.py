"""PAL over a decoder-only LM (``PALForCausalLM``): the persona fused into one decoder layer.

Self-contained like ``modeling_pal.py`` (imports only torch, transformers and single-dot
siblings), so a saved checkpoint loads with
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``.

Design (see :class:`PALCausalConfig` for the equations). A seq2seq PAL fuses the persona into the
encoder states the decoder cross-attends to; a decoder-only LM has no such states, so the fusion
acts on the residual stream of one decoder layer (``fusion_layer``), through a forward hook on
that layer (a public torch mechanism, independent of the LM's internals):

* the persona text runs through the same LM once; its states at the fusion layer are H_P;
* the refined persona H^_P attends over the *prompt* positions only, computed once per prompt;
* every position t (prompt and reply alike) is fused with the persona on its own (eq. 2 and 4),
  so a token never sees a later one: teacher-forced training and incremental decoding agree;
* the result enters through a per-channel gate initialised to zero: at initialisation the model
  is exactly the pretrained LM, with or without a persona.

Alternatives considered: gated cross-attention from every layer to the fused persona-dialogue
states (Flamingo style) adds a full attention block per layer and many parameters to learn from
ESConv's 14k replies; feeding the persona as a prefix of the prompt is the Hard Prompt baseline,
with no fusion to ablate or to contrast. One fused layer keeps the paper's eq. 2-4 with its three
mixture weights and adds only the gate.

Generation: ``generate`` hands transformers a :class:`PALCausalCache` (the public user-cache
argument), which keeps the persona states across steps. With a
``StrategyContrastiveLogitsProcessor`` the cache holds 2R rows and the persona-free rows (the
gate path off, i.e. the pretrained-LM pathway of the same model) run in the same batch, combined
before the output projection, exactly as in the seq2seq PAL (``generation_pal.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from .configuration_pal import STRATEGY_NAMES, STRATEGY_TOKENS, PALCausalConfig
from .generation_pal import (
    PALCausalCache,
    StrategyContrastiveLogitsProcessor,
    cache_argument_name,
    output_cache,
    prepare_pal_generate,
)
from .modeling_pal import PALPersonaFusion, _combine_halves


@dataclass
class PALCausalLMOutput(ModelOutput):
    """Output of :class:`PALForCausalLM`.

    Attributes:
        loss: mean next-token cross-entropy over the labels that are not -100.
        logits: ``[batch, length, vocab]`` (the last position only when ``logits_to_keep=1``).
        cache: the KV cache (also readable as ``past_key_values``).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None

    @property
    def past_key_values(self):
        return self.cache


def _decoder_layers(model: nn.Module, count: int) -> nn.ModuleList:
    """The decoder's list of layers: the first ``nn.ModuleList`` with ``count`` entries."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"could not find the {count} decoder layers of {type(model).__name__}")


def _sync_attention_implementation(model: PreTrainedModel, backbone: PreTrainedModel) -> None:
    """Give the wrapped LM the attention implementation of the wrapper.

    ``PreTrainedModel.__init__`` of the wrapper resolves the attention implementation of its own
    config but leaves the sub-config it shares with the backbone at None; a llama backbone then
    builds no causal mask and attends to later tokens (measured: changing the last token moved
    every earlier logit). Set it through the public ``set_attn_implementation``."""
    wanted = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if getattr(backbone.config, "_attn_implementation", None) is None:
        backbone.set_attn_implementation(wanted)


class _FusionStep:
    """What the fusion hook needs during one forward call."""

    def __init__(self, rows, persona_states=None, persona_mask=None, refined=None, context_mask=None,
                 cache=None, capture=False):
        self.rows = rows
        self.persona_states, self.persona_mask, self.refined = persona_states, persona_mask, refined
        self.context_mask = context_mask
        self.cache = cache
        self.capture = capture
        self.captured = None
        self.branch = False  # top-layer fusion in contrastive decoding: emit [fused; unfused] rows


class PALCausalPreTrainedModel(PreTrainedModel):
    config_class = PALCausalConfig
    config: PALCausalConfig
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
            module.reset_fusion(self.config.mixture_init)
        elif isinstance(module, PALForCausalLM):
            module.fusion_gate.zero_()


class PALForCausalLM(PALCausalPreTrainedModel, GenerationMixin):
    """PAL over any causal LM.

    * ``PALForCausalLM.from_backbone(name_or_path, tokenizer=None)`` wraps a pretrained causal LM
      (the packaged SmolLM2 via ``hf_persona.backbones.resolve("smollm2")``, Llama, Qwen...); the
      tokenizer gets the PAL tokens and the embeddings are resized.
    * ``model(input_ids, attention_mask, persona_input_ids=None, persona_attention_mask=None,
      labels=None, context_mask=None)``: without a persona, the pretrained LM's pathway
      ``logits(d)``; with one, ``logits(d, p)``. ``context_mask`` (1 = prompt position) says which
      positions H^_P may read; by default the positions whose label is -100 (training) or all
      attended positions (a prompt).
    * ``model.generate(input_ids=..., attention_mask=..., persona_input_ids=..., persona_attention_mask=...,
      logits_processor=[model.strategy_contrast_processor()])``; prompts left-padded
      (``PALCollator(tokenizer, padding_side="left")``).
    """

    def __init__(self, config: PALCausalConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if backbone is None:
            backbone = AutoModelForCausalLM.from_config(config.backbone)
        self.backbone = backbone
        _sync_attention_implementation(self, backbone)
        self.fusion = PALPersonaFusion(config.hidden_size, config.layer_norm_eps, config.coattention_scale)
        self.fusion_gate = nn.Parameter(torch.zeros(config.hidden_size))
        layers = _decoder_layers(backbone, config.get_text_config().num_hidden_layers)
        self._step = None
        layers[config.fusion_layer].register_forward_hook(self._fusion_hook)
        self.post_init()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, name_or_path: str, tokenizer=None, **config_kwargs) -> "PALForCausalLM":
        """Build PAL from a causal LM checkpoint (local folder or Hub id). ``tokenizer`` (loaded from
        ``name_or_path`` when None) receives the PAL tokens; keep using it with the model. A
        tokenizer without a pad token pads with its eos token. Extra ``config_kwargs`` go to
        :class:`PALCausalConfig` (``fusion_layer``, ``system_prompt``...)."""
        from transformers import AutoTokenizer

        from .processing_pal import add_pal_tokens

        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if tokenizer.eos_token_id is None:
            raise ValueError(f"PAL needs an end-of-turn token; the tokenizer of {name_or_path!r} has no eos token")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        add_pal_tokens(tokenizer)
        backbone = AutoModelForCausalLM.from_pretrained(name_or_path)
        if getattr(backbone.config, "is_encoder_decoder", False):
            raise ValueError(f"{name_or_path!r} is a seq2seq model; use PALForConditionalGeneration.from_backbone")
        backbone.resize_token_embeddings(len(tokenizer))
        backbone.config.pad_token_id = tokenizer.pad_token_id
        config = PALCausalConfig(
            backbone=backbone.config,
            strategy_token_ids=tokenizer.convert_tokens_to_ids(list(STRATEGY_TOKENS)),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **config_kwargs,
        )
        model = cls(config, backbone=backbone)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.backbone.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        return self.backbone.set_output_embeddings(new_embeddings)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, **kwargs):
        return self.backbone.resize_token_embeddings(new_num_tokens, **kwargs)

    # ------------------------------------------------------------------ fusion
    def _fusion_hook(self, module, args, output):
        """Forward hook of the fusion layer: rows [0, rows) get the persona (eq. 2-4 and the gate);
        other rows (the persona-free half of contrastive decoding) pass unchanged."""
        step = self._step
        if step is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        if step.capture:  # encoding the persona text: keep this layer's states
            step.captured = hidden
            return output
        rows = step.rows
        own = hidden[:rows]
        if step.refined is None:
            step.refined = self.fusion.refine_persona(step.persona_states, step.persona_mask, own, step.context_mask)
            if step.cache is not None:
                step.cache.persona = (step.persona_states, step.persona_mask, step.refined)
        fused, _ = self.fusion.fuse_positions(own, step.persona_states, step.persona_mask, step.refined)
        fused = own + self.fusion_gate.to(own.dtype) * (fused - own)
        if step.branch:  # the persona-free rows are this layer's own output: one trunk serves both
            own = torch.cat([fused, hidden], dim=0)
        elif rows < hidden.shape[0]:
            own = torch.cat([fused, hidden[rows:]], dim=0)
        else:
            own = fused
        return (own,) + tuple(output[1:]) if isinstance(output, tuple) else own

    def encode_persona(self, persona_input_ids, persona_attention_mask=None):
        """H_P: the fusion layer's states of the persona text ``[batch, persona_len, hidden]``."""
        if persona_attention_mask is None:
            persona_attention_mask = torch.ones_like(persona_input_ids)
        if (persona_attention_mask.sum(dim=1) == 0).any():
            raise ValueError(
                "a persona row has no real token (persona_attention_mask all zero); use the placeholder "
                "persona from processing_pal when no persona is known"
            )
        outer, self._step = self._step, _FusionStep(persona_input_ids.shape[0], capture=True)
        try:
            self.backbone.base_model(input_ids=persona_input_ids, attention_mask=persona_attention_mask, use_cache=False)
            states = self._step.captured
        finally:
            self._step = outer
        return states, persona_attention_mask

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        persona_input_ids: torch.LongTensor | None = None,
        persona_attention_mask: torch.LongTensor | None = None,
        context_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        cache=None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values=None,
        **kwargs,
    ) -> PALCausalLMOutput:
        """See the class docstring. ``cache`` (or ``past_key_values``, its name before transformers
        5.25): with a cache, ``input_ids`` holds the new tokens only. Other keywords that
        ``generate`` passes are ignored."""
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("PALForCausalLM.forward got two different caches (cache= and past_key_values=); pass one")
        if cache is None:
            cache = past_key_values
        if input_ids is None:
            raise ValueError("PALForCausalLM.forward needs input_ids")
        rows = input_ids.shape[0]
        own_cache = cache if isinstance(cache, PALCausalCache) else None
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is None:  # every cached and new position is attended
            attention_mask = torch.ones((rows, past + input_ids.shape[1]), dtype=torch.long, device=input_ids.device)

        step = None
        if own_cache is not None and own_cache.persona is not None and past > 0:
            step = _FusionStep(rows, *own_cache.persona, cache=own_cache)
        elif persona_input_ids is not None:
            if persona_input_ids.shape[0] != rows:
                raise ValueError(
                    f"persona_input_ids has batch size {persona_input_ids.shape[0]} but the dialogue has {rows}; "
                    "give one persona per dialogue (a placeholder when none is known)"
                )
            states, pmask = self.encode_persona(persona_input_ids, persona_attention_mask)
            if context_mask is None:
                new = input_ids.shape[1]
                context_mask = attention_mask[:, -new:]
                if labels is not None:
                    context_mask = context_mask * (labels == -100).to(context_mask.dtype)
            step = _FusionStep(rows, states, pmask, None, context_mask, cache=own_cache)

        paired = own_cache is not None and own_cache.processor is not None
        hook = alpha = None
        if paired:
            alpha = own_cache.track_strategy_tokens(input_ids, past)
            if self.fuses_last_layer and step is not None:
                # everything below the fused output is the same for both passes: run it once and
                # let the hook emit the persona rows and the persona-free rows
                step.branch = True
                own_cache.doubled = False
            else:
                input_ids = torch.cat([input_ids, input_ids], dim=0)
                attention_mask = torch.cat([attention_mask, attention_mask], dim=0)
                if position_ids is not None and position_ids.shape[0] == rows:
                    position_ids = torch.cat([position_ids, position_ids], dim=0)
                own_cache.doubled = True
            if own_cache.processor.combine_before_lm_head:
                head = self.backbone.get_output_embeddings()
                hook = head.register_forward_pre_hook(partial(_combine_halves, alpha=alpha))
        self._step = step
        try:
            out = self.backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                labels=None if paired else labels,
                use_cache=use_cache,
                **({"logits_to_keep": logits_to_keep} if logits_to_keep else {}),
                **{cache_argument_name(self.backbone.forward): cache},
            )
        finally:
            self._step = None
            if hook is not None:
                hook.remove()
        logits = out.logits
        if paired:
            if hook is None:
                logits = StrategyContrastiveLogitsProcessor.combine(logits[:rows], logits[rows:], alpha)
            elif logits.shape[0] != rows:
                raise RuntimeError("the output projection did not see the paired rows; use combine_before_lm_head=False")
            own_cache.processor.record_model_step(alpha)
        return PALCausalLMOutput(loss=out.get("loss"), logits=logits, cache=output_cache(out))

    # ------------------------------------------------------------------ generation
    def generate(self, inputs=None, generation_config=None, logits_processor=None, *args, **kwargs):
        """``GenerationMixin.generate`` with PAL's cache (see the module docstring).

        With a persona or a :class:`StrategyContrastiveLogitsProcessor`, generation runs on a
        :class:`PALCausalCache` passed as the user cache; a cache of your own cannot be combined
        with them. The strategy slot is the first generated token (or the prompt's last token
        when every prompt already ends with a strategy token, i.e. a forced strategy)."""
        contrast, own_cache = prepare_pal_generate(logits_processor, kwargs, kwargs.get("persona_input_ids") is not None)
        if own_cache:
            prompt = inputs if inputs is not None else kwargs.get("input_ids")
            if prompt is None:
                raise ValueError("PALForCausalLM.generate needs input_ids (the chat prompt)")
            position = self.strategy_position(prompt)
            if contrast is not None:
                contrast.reset(strategy_position=position)
            kwargs[cache_argument_name()] = PALCausalCache(contrast, position)
        return super().generate(inputs, generation_config, logits_processor, *args, **kwargs)

    def strategy_position(self, prompt_ids: torch.LongTensor) -> int:
        """Index of the strategy slot in sequences that start with ``prompt_ids`` (left-padded)."""
        width = prompt_ids.shape[1]
        ids = set(self.config.strategy_token_ids or [])
        forced = [int(t) in ids for t in prompt_ids[:, -1].tolist()]
        if all(forced):
            return width - 1
        if any(forced):
            raise ValueError("either every prompt of the batch ends with a strategy token (forced) or none does")
        return width

    # ------------------------------------------------------------------ helpers
    @property
    def fuses_last_layer(self) -> bool:
        """True when the persona enters at the output of the last decoder layer: then only
        position-wise maps (final norm, output projection) follow, so contrastive decoding takes
        the persona-free rows from the same pass (no second trunk, no second cache)."""
        return self.config.fusion_layer == self.config.get_text_config().num_hidden_layers - 1

    def mixture_weights(self) -> torch.Tensor:
        """(l1, l2, l3) = softmax(w) of eq. 4."""
        return torch.softmax(self.fusion.mixture_logits, dim=0)

    def strategies_of(self, sequences: torch.LongTensor, position: int) -> list:
        """Name of the strategy in each sequence's slot ``position`` (``model.strategy_position(prompt)``);
        ``None`` where that token is not a strategy token."""
        lookup = dict(zip(self.config.strategy_token_ids or [], self.config.strategy_names or STRATEGY_NAMES))
        if sequences.shape[1] <= position:
            return [None] * sequences.shape[0]
        return [lookup.get(int(t)) for t in sequences[:, position].tolist()]

    def strategy_contrast_processor(self, alpha=None, **kwargs) -> StrategyContrastiveLogitsProcessor:
        """The strategy contrastive LogitsProcessor for this model (ships with the checkpoint)."""
        return StrategyContrastiveLogitsProcessor(
            strategy_token_ids=self.config.strategy_token_ids,
            alpha=alpha,
            base_table=self.config.strategy_alpha,
            **kwargs,
        )


__all__ = ["PALForCausalLM", "PALCausalPreTrainedModel", "PALCausalLMOutput"]


PALCausalConfig.register_for_auto_class()
PALForCausalLM.register_for_auto_class("AutoModelForCausalLM")
