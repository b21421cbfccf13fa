"""P2Bot Transmitter (Liu et al., 2020, section 3): a causal LM with a next-utterance-prediction head.

The backbone is any causal transformer body (GPT, GPT-2/DialoGPT) or a BERT switched to a causal
decoder (``is_decoder=True``, the offline warm start from MiniLM). On top sit

* an LM head (a linear layer over the last hidden states, initialised from the input embeddings),
* a next-utterance-prediction (NUP) head: dropout then ``Linear(d, 2)`` on the hidden state of the
  ``<nup>`` token that closes a (context, response) sequence; class 1 means "this response is the
  real next utterance".

Training loss (``labels`` and ``nup_labels`` given): ``w * LM + (1 - w) * NUP`` with label
smoothing on the LM term. Inference helpers: candidate ranking by the NUP head (Hits@1) and beam
re-ranking by ``alpha * length-normalised log p(response) + (1 - alpha) * log p(next)`` (eq. 3).

Imports only torch, transformers and single-dot siblings, so checkpoints load with
``trust_remote_code=True`` where hf_persona is not installed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_transmitter import _ENCODER_TYPES, TransmitterConfig
from .processing_transmitter import (
    IGNORE_INDEX,
    build_context_ids,
    encode_response,
    pad_batch,
    special_token_ids,
)


@dataclass
class TransmitterOutput(ModelOutput):
    """Output of :class:`TransmitterForDialogue`.

    Args:
        loss: ``lm_weight * lm_loss + (1 - lm_weight) * nup_loss`` (or whichever part was asked for).
        lm_loss: label-smoothed next-token cross-entropy over the labelled tokens.
        nup_loss: cross-entropy of the NUP head against ``nup_labels``.
        logits: next-token logits ``[batch, seq, vocab]``.
        nup_logits: ``[batch, 2]`` NUP logits read at ``cls_index`` (default: last attended token).
        label_logprobs: with ``labels``, ``[batch, seq - 1]`` log-probability (no smoothing) of each
            next-token label, 0 where the label is ignored.
        cache: the KV cache (also readable as ``past_key_values``, its name before transformers 5.25).
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    nup_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    nup_logits: torch.FloatTensor | None = None
    label_logprobs: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    @property
    def past_key_values(self):
        return self.cache


def _cache_kwarg(function) -> str:
    """The keyword ``function`` takes the KV cache under: ``cache`` from transformers 5.25 on,
    ``past_key_values`` before (read from its public signature; with ``_output_cache``, the only
    version-dependent spots of this folder)."""
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def _output_cache(output):
    """The KV cache of a model output: field ``cache`` from transformers 5.25 on, ``past_key_values`` before."""
    fields = getattr(output, "__dataclass_fields__", {})
    return getattr(output, "cache" if "cache" in fields else "past_key_values", None)


class TransmitterPreTrainedModel(PreTrainedModel):
    config_class = TransmitterConfig
    config: TransmitterConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    # forward returns a mean loss and ignores num_items_in_batch: transformers' Trainer must scale it
    # for gradient accumulation and multi-process training itself (it reads this attribute)
    accepts_loss_kwargs = False
    _no_split_modules = []

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)


class TransmitterForDialogue(TransmitterPreTrainedModel, GenerationMixin):
    """Causal LM + NUP head. See the module docstring."""

    def __init__(self, config: TransmitterConfig):
        super().__init__(config)
        backbone_config = config.backbone_config
        kwargs = {"add_pooling_layer": False} if backbone_config.model_type in _ENCODER_TYPES else {}
        self.transformer = AutoModel.from_config(backbone_config, **kwargs)
        hidden = config.hidden_size
        self.lm_head = nn.Linear(hidden, backbone_config.vocab_size, bias=False)
        self.nup_dropout = nn.Dropout(config.nup_dropout)
        self.nup_head = nn.Linear(hidden, 2)
        self.post_init()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, name_or_path: str, tokenizer=None, **config_kwargs) -> "TransmitterForDialogue":
        """Warm-start from a pretrained body (``gpt2``, ``microsoft/DialoGPT-small``, a BERT folder).

        The LM head starts as a copy of the input embeddings. When ``tokenizer`` is given (already
        prepared with ``prepare_tokenizer``), the embeddings are resized to it and the special-token
        ids are written into the config and the generation config.
        """
        from transformers import AutoConfig

        backbone_config = AutoConfig.from_pretrained(name_or_path)
        if hasattr(backbone_config, "text_config") and backbone_config.model_type not in _ENCODER_TYPES:
            backbone_config = backbone_config.get_text_config()
        config = TransmitterConfig(backbone_config=backbone_config, **config_kwargs)
        model = cls(config)
        kwargs = {"add_pooling_layer": False} if config.backbone_config.model_type in _ENCODER_TYPES else {}
        body = AutoModel.from_pretrained(name_or_path, config=config.backbone_config, **kwargs)
        model.transformer = body
        with torch.no_grad():
            model.lm_head.weight.copy_(body.get_input_embeddings().weight)
        if tokenizer is not None:
            model.adapt_to_tokenizer(tokenizer)
        return model

    def adapt_to_tokenizer(self, tokenizer) -> None:
        """Resize embeddings to ``len(tokenizer)`` and record its special-token ids."""
        ids = special_token_ids(tokenizer)
        if len(tokenizer) != self.config.vocab_size:
            self.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        self.config.persona_token_id = ids["persona"]
        self.config.self_token_id = ids["self"]
        self.config.partner_token_id = ids["partner"]
        self.config.nup_token_id = ids["nup"]
        self.config.eos_token_id = ids["eos"]
        self.config.pad_token_id = ids["pad"]
        self.generation_config.eos_token_id = ids["eos"]
        self.generation_config.pad_token_id = ids["pad"]
        self.generation_config.bos_token_id = None

    # -- embeddings ---------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.transformer.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.transformer.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        nup_labels: torch.LongTensor | None = None,
        cls_index: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_logits: bool = True,
        past_key_values=None,
        **kwargs,
    ) -> TransmitterOutput:
        r"""
        cache: the KV cache (``past_key_values``, its name before transformers 5.25, is accepted too).
        labels: token ids to predict (``-100`` = ignored), shifted inside, as for any causal LM.
        return_logits: ``False`` skips the full ``[batch, seq, vocab]`` logits (the LM head then runs
            on the labelled positions only: training and scoring stay cheap).
        nup_labels: ``[batch]`` 1 for a real next utterance, 0 for a distractor.
        cls_index: ``[batch]`` position of the ``<nup>`` token; default the last attended token.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("TransmitterForDialogue needs input_ids or inputs_embeds")
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("TransmitterForDialogue got two different caches (cache= and past_key_values=); pass one")
        if cache is None:
            cache = past_key_values
        seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if position_ids is None and attention_mask is not None:
            # positions count attended tokens only, so left padding does not shift them
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
        for unused in ("cache_position", "return_dict", "num_items_in_batch"):
            kwargs.pop(unused, None)
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{_cache_kwarg(self.transformer.forward): cache},
            **kwargs,
        )
        hidden = outputs[0]
        logits = None
        if return_logits:
            logits = self.lm_head(hidden[:, -logits_to_keep:] if (labels is None and logits_to_keep) else hidden)

        lm_loss = label_logprobs = None
        if labels is not None:
            shift_labels = labels[:, 1:].to(hidden.device)
            selected = shift_labels != IGNORE_INDEX
            label_logprobs = hidden.new_zeros(shift_labels.shape, dtype=torch.float32)
            if bool(selected.any()):
                sel_logits = self.lm_head(hidden[:, :-1][selected]).float()
                sel_labels = shift_labels[selected]
                lm_loss = F.cross_entropy(sel_logits, sel_labels, label_smoothing=self.config.label_smoothing)
                label_logprobs = label_logprobs.masked_scatter(
                    selected, torch.log_softmax(sel_logits, -1).gather(-1, sel_labels[:, None]).squeeze(-1)
                )
            else:  # a batch of distractors only: no LM term, but keep the graph
                lm_loss = hidden.sum() * 0.0

        # NUP head on the <nup> token (or the last attended token)
        if cls_index is None:
            if attention_mask is not None and attention_mask.shape[1] == seq_len:
                positions = torch.arange(seq_len, device=hidden.device)
                cls_index = (attention_mask.to(hidden.device).long() * positions).argmax(-1)
            else:
                cls_index = torch.full((hidden.shape[0],), seq_len - 1, device=hidden.device, dtype=torch.long)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        nup_hidden = hidden[rows, cls_index.to(hidden.device)]
        nup_logits = self.nup_head(self.nup_dropout(nup_hidden))
        nup_loss = None
        if nup_labels is not None:
            nup_loss = F.cross_entropy(nup_logits.float(), nup_labels.to(nup_logits.device))

        if lm_loss is not None and nup_loss is not None:
            loss = self.config.lm_weight * lm_loss + (1.0 - self.config.lm_weight) * nup_loss
        else:
            loss = lm_loss if lm_loss is not None else nup_loss
        return TransmitterOutput(
            loss=loss,
            lm_loss=lm_loss,
            nup_loss=nup_loss,
            logits=logits,
            nup_logits=nup_logits,
            label_logprobs=label_logprobs,
            cache=_output_cache(outputs),
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )

    # -- scoring helpers ----------------------------------------------------------------------
    @torch.no_grad()
    def score_batch(self, batch: dict) -> dict:
        """Per sequence: summed log-prob of the labelled tokens, their count, and log p(next).

        ``batch`` comes from ``processing_transmitter.pad_batch`` (``input_ids``, ``attention_mask``,
        ``labels``, ``cls_index``). Log-probs are the model's own (no label smoothing).
        """
        device = self.device
        labels = batch["labels"].to(device)
        out = self(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            cls_index=batch["cls_index"].to(device),
            labels=labels,
            return_logits=False,
        )
        return {
            "logprob_sum": out.label_logprobs.sum(-1).cpu(),
            "n_tokens": (labels[:, 1:] != IGNORE_INDEX).sum(-1).cpu(),
            "nup_logprob": torch.log_softmax(out.nup_logits.float(), dim=-1)[:, 1].cpu(),
        }

    def _examples_from_ids(self, context_ids, response_ids_list, nup_id, eos_id):
        examples = []
        for resp in response_ids_list:
            resp = list(resp)
            if not resp or resp[-1] != eos_id:
                resp = resp + [eos_id]
            input_ids = list(context_ids) + resp + [nup_id]
            labels = [IGNORE_INDEX] * len(context_ids) + resp + [IGNORE_INDEX]
            examples.append({"input_ids": input_ids, "labels": labels, "cls_index": len(input_ids) - 1})
        return examples

    @torch.no_grad()
    def score_continuations(self, context_ids, response_ids_list, ids: dict, need_lm: bool = True,
                            batch_size: int = 20) -> dict:
        """Score several replies to ONE context, encoding the context once (its key/value cache is
        shared by all replies). Same numbers as :meth:`score_batch` on the full sequences.

        Each reply is scored as ``reply + <eos> + <nup>`` (``<eos>`` added when missing). Returns
        ``logprob_sum`` / ``n_tokens`` over reply + ``<eos>`` (when ``need_lm``) and ``nup_logprob``.
        """
        import copy

        device = self.device
        context = torch.tensor([list(context_ids)], device=device)
        ctx_out = self(input_ids=context, use_cache=True, logits_to_keep=1, return_logits=need_lm)
        past = ctx_out.past_key_values
        first_logp = torch.log_softmax(ctx_out.logits[0, -1].float(), -1) if need_lm else None
        n_ctx = context.shape[1]
        sums, counts, nups = [], [], []
        responses = []
        for resp in response_ids_list:
            resp = list(resp)
            if not resp or resp[-1] != ids["eos"]:
                resp = resp + [ids["eos"]]
            responses.append(resp)
        for start in range(0, len(responses), batch_size):
            chunk = responses[start:start + batch_size]
            rows = [r + [ids["nup"]] for r in chunk]
            width = max(len(r) for r in rows)
            b = len(rows)
            input_ids = torch.full((b, width), ids["pad"], dtype=torch.long)
            mask = torch.zeros((b, n_ctx + width), dtype=torch.long)
            mask[:, :n_ctx] = 1
            labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, : len(r)] = torch.tensor(r)
                mask[i, n_ctx: n_ctx + len(r)] = 1
                if len(r) > 2:  # reply tokens after the first; the first is predicted by the context
                    labels[i, 1: len(r) - 1] = torch.tensor(r[1:-1])
            cache = copy.deepcopy(past)
            cache.batch_repeat_interleave(b)
            out = self(input_ids=input_ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                       use_cache=True, cls_index=torch.tensor([len(r) - 1 for r in rows], device=device),
                       labels=labels.to(device) if need_lm else None, return_logits=False)
            nups.extend(torch.log_softmax(out.nup_logits.float(), -1)[:, 1].cpu().tolist())
            if need_lm:
                tail = out.label_logprobs.sum(-1).cpu()
                for i, r in enumerate(chunk):
                    sums.append(float(first_logp[r[0]]) + float(tail[i]))
                    counts.append(len(r))
        result = {"nup_logprob": torch.tensor(nups)}
        if need_lm:
            result["logprob_sum"] = torch.tensor(sums)
            result["n_tokens"] = torch.tensor(counts)
        return result

    @torch.no_grad()
    def rerank_scores(self, context_ids, response_ids_list, ids: dict, alpha: float) -> torch.Tensor:
        """Eq. 3 score of each response: ``alpha * log p(r)/|r| + (1 - alpha) * log p(next)``.

        ``|r|`` counts the response tokens plus ``<eos>``; ``ids`` is ``special_token_ids(tokenizer)``.
        """
        s = self.score_continuations(context_ids, response_ids_list, ids, need_lm=True)
        lp_norm = s["logprob_sum"] / s["n_tokens"].clamp(min=1)
        return alpha * lp_norm + (1.0 - alpha) * s["nup_logprob"]

    @torch.no_grad()
    def rank_candidates(self, tokenizer, persona, history, candidates, batch_size: int = 20) -> list:
        """``log p(next = 1)`` of each candidate response under the NUP head (higher ranks first)."""
        if isinstance(candidates, str) or not candidates:
            raise ValueError("candidates must be a non-empty list of strings")
        ids = special_token_ids(tokenizer)
        was_training = self.training
        self.eval()
        try:
            context = build_context_ids(tokenizer, persona, history, self.config.max_context_tokens)
            resp_ids = [encode_response(tokenizer, c, self.config.max_response_tokens) for c in candidates]
            out = self.score_continuations(context, resp_ids, ids, need_lm=False, batch_size=batch_size)
            return out["nup_logprob"].tolist()
        finally:
            self.train(was_training)

    @torch.no_grad()
    def respond_batch(self, tokenizer, personas, histories, num_beams: int = 2, max_new_tokens: int | None = None,
                      alpha: float | None = None, do_sample: bool = False, return_ids: bool = False, **gen_kwargs):
        """Generate one response per (persona, history) pair.

        With beam search (``do_sample=False``) all ``num_beams`` beams are re-scored and the one
        maximising ``alpha * log p(r)/|r| + (1 - alpha) * log p(next)`` (paper eq. 3) is returned;
        ``alpha=1`` is the plain length-normalised choice of eq. 2. With ``do_sample=True`` one
        multinomial sample per input is drawn (self-play). ``return_ids`` also returns the context
        ids and the response ids (ending with ``<eos>`` unless cut at ``max_new_tokens``).
        """
        if len(personas) != len(histories):
            raise ValueError(f"got {len(personas)} personas but {len(histories)} histories")
        if not personas:
            return ([], [], []) if return_ids else []
        alpha = self.config.rerank_alpha if alpha is None else float(alpha)
        max_new_tokens = max_new_tokens or self.config.max_response_tokens
        ids = special_token_ids(tokenizer)
        was_training = self.training
        self.eval()
        try:
            contexts = [build_context_ids(tokenizer, p, h, self.config.max_context_tokens)
                        for p, h in zip(personas, histories)]
            batch = pad_batch([{"input_ids": c} for c in contexts], ids["pad"], padding_side="left")
            n_ret = 1 if do_sample else max(1, num_beams)
            gen = dict(
                max_new_tokens=max_new_tokens,
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
                do_sample=do_sample,
                num_return_sequences=n_ret,
            )
            if do_sample:
                gen.update(num_beams=1, top_k=0, top_p=1.0, temperature=1.0)
            else:
                gen.update(num_beams=max(1, num_beams),
                           suppress_tokens=[ids["persona"], ids["self"], ids["partner"], ids["nup"]])
            gen.update(gen_kwargs)
            device = self.device
            out = self.generate(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device), **gen)
            width = batch["input_ids"].shape[1]
            sequences = out[:, width:].tolist()
            responses = []
            for seq in sequences:
                resp = []
                for tok in seq:
                    if tok == ids["eos"]:
                        resp.append(tok)
                        break
                    if tok == ids["pad"] and ids["pad"] != ids["eos"]:
                        break
                    resp.append(tok)
                responses.append(resp)
            if n_ret == 1:
                chosen = responses
            else:
                chosen = []
                for i, context in enumerate(contexts):
                    cands = responses[i * n_ret:(i + 1) * n_ret]
                    total = self.rerank_scores(context, cands, ids, alpha)
                    chosen.append(cands[int(total.argmax())])
            texts = [tokenizer.decode([t for t in r if t != ids["eos"]], skip_special_tokens=True).strip()
                     for r in chosen]
            if return_ids:
                return texts, contexts, chosen
            return texts
        finally:
            self.train(was_training)

    def respond(self, tokenizer, persona, history, **kwargs) -> str:
        """One response to ``history`` as the speaker with ``persona`` (see :meth:`respond_batch`)."""
        return self.respond_batch(tokenizer, [persona], [history], **kwargs)[0]


__all__ = ["TransmitterForDialogue", "TransmitterOutput", "TransmitterPreTrainedModel"]
