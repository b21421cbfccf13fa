"""CoBERT (Zhong et al., 2020, "Towards Persona-Based Empathetic Conversational Models") and the
Bi-encoder baseline it is compared with, as Hugging Face models.

Both models share one text encoder for context, persona and candidate response. CoBERT matches the
context (and the persona) against each response with multi-hop co-attention; the Bi-encoder scores
mean-pooled vectors with a dot product.

This file imports only torch, transformers and its sibling ``configuration_cobert`` so that a saved
checkpoint loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)`` without hf_persona.
"""

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_cobert import BiEncoderConfig, CoBERTConfig

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------
# Outputs and candidate cache
# ----------------------------------------------------------------------------------------------


@dataclass
class ResponseSelectionOutput(ModelOutput):
    """Output of the response-selection models.

    Args:
        loss: cross-entropy of the gold candidate against all candidates of its row (when requested).
        scores: ``[batch, num_candidates]`` matching scores. With in-batch negatives the candidates are
            the batch's gold responses followed by the row's own sampled negatives, and the gold
            candidate of row ``i`` is column ``i``; without them the gold response is column 0.
        labels: index of the gold candidate of each row.
    """

    loss: Optional[torch.FloatTensor] = None
    scores: Optional[torch.FloatTensor] = None
    labels: Optional[torch.LongTensor] = None


@dataclass
class CandidateCache:
    """Encoded candidate responses, reusable across queries.

    ``hidden_states``/``attention_mask`` hold the encoder's token states (CoBERT needs them for the
    co-attention); ``embeddings`` holds mean-pooled vectors (Bi-encoder). ``texts`` keeps the
    candidates in order so that scores can be mapped back to strings.
    """

    texts: list
    attention_mask: torch.Tensor
    hidden_states: Optional[torch.Tensor] = None
    embeddings: Optional[torch.Tensor] = None
    buckets: Optional[list] = None  # CoBERT: length-sorted groups, built on first use by rank()

    def __len__(self):
        return len(self.texts)

    def nbytes(self):
        total = self.attention_mask.numel() * self.attention_mask.element_size()
        for t in (self.hidden_states, self.embeddings):
            if t is not None:
                total += t.numel() * t.element_size()
        return total


# ----------------------------------------------------------------------------------------------
# Input validation and text -> tensor building (shared by both models, usable by training code)
# ----------------------------------------------------------------------------------------------


def normalize_context(context, name="context"):
    """Return the context as a list of utterances; raise on empty or badly typed input."""
    if isinstance(context, str):
        context = [context]
    if not isinstance(context, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings (utterances, oldest first), "
                        f"got {type(context).__name__}")
    for i, utt in enumerate(context):
        if not isinstance(utt, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(utt).__name__}")
    if not any(u.strip() for u in context):
        raise ValueError(f"{name} is empty: expected at least one non-empty utterance")
    return [u for u in context if u.strip()]


def normalize_persona(persona, max_sentences, name="persona"):
    """Return the persona as a list of at most ``max_sentences`` non-empty sentences.

    ``None`` or an empty list means "no persona". Extra sentences are dropped with a warning.
    """
    if persona is None:
        return []
    if isinstance(persona, str):
        persona = [persona]
    if not isinstance(persona, (list, tuple)):
        raise TypeError(f"{name} must be None, a string or a list of strings, got {type(persona).__name__}")
    for i, sent in enumerate(persona):
        if not isinstance(sent, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(sent).__name__}")
    persona = [s for s in persona if s.strip()]
    if len(persona) > max_sentences:
        logger.warning(
            f"{name} has {len(persona)} sentences; only the first {max_sentences} are used "
            f"(max_persona_sentences={max_sentences})"
        )
        persona = persona[:max_sentences]
    return persona


def normalize_candidates(candidates, name="candidates"):
    """Check that candidates are a non-empty list of strings."""
    if isinstance(candidates, str):
        raise TypeError(f"{name} must be a list of strings, got a single string; wrap it in a list")
    if not isinstance(candidates, (list, tuple)):
        raise TypeError(f"{name} must be a list of strings, got {type(candidates).__name__}")
    if len(candidates) == 0:
        raise ValueError(f"{name} is empty: expected at least one candidate response")
    for i, c in enumerate(candidates):
        if not isinstance(c, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(c).__name__}")
    return list(candidates)


def _special_ids(tokenizer):
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer needs a CLS/BOS and a SEP/EOS token to build CoBERT inputs")
    return cls_id, sep_id, pad_id


def _tokenize(tokenizer, texts):
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


def _pad(rows, types, pad_id, empty_rows=()):
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    tt = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, types)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        tt[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        if i not in empty_rows:
            mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


def build_context_inputs(tokenizer, contexts, max_length, max_turns=6):
    """``[CLS] u_1 [SEP] u_2 [SEP] ... u_k [SEP]`` per context, keeping the most recent utterances.

    The last utterance is taken to be the other speaker's (the message being answered); segment ids
    alternate backwards from it: other speaker = 0, respondent = 1. When the budget runs out, the
    oldest kept utterance loses its first tokens.
    """
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    rows, types = [], []
    for context in contexts:
        turns = normalize_context(context)[-max_turns:]
        pieces = _tokenize(tokenizer, turns)
        budget = max_length - 1
        ids, tts = [], []
        for back, toks in enumerate(reversed(pieces)):
            seg = back % 2  # 0: the message answered, 1: respondent's previous turn, ...
            if budget <= 1:
                break
            toks = toks[-(budget - 1):] if len(toks) + 1 > budget else toks
            ids = toks + [sep_id] + ids
            tts = [seg] * (len(toks) + 1) + tts
            budget -= len(toks) + 1
        rows.append([cls_id] + ids)
        types.append([tts[0] if tts else 0] + tts)
    return _pad(rows, types, pad_id)


def build_persona_inputs(tokenizer, personas, max_length, max_sentences=10):
    """``[CLS] p_1 [SEP] p_2 [SEP] ...`` per persona. Rows without persona get an all-zero attention
    mask (the models treat them as "no persona")."""
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    rows, types, empty = [], [], set()
    for i, persona in enumerate(personas):
        sents = normalize_persona(persona, max_sentences)
        ids = [cls_id]
        if not sents:
            empty.add(i)
            ids.append(sep_id)
        for toks in _tokenize(tokenizer, sents):
            room = max_length - len(ids) - 1
            if room <= 0:
                break
            ids += toks[:room] + [sep_id]
        rows.append(ids)
        types.append([0] * len(ids))
    return _pad(rows, types, pad_id, empty_rows=empty)


def build_response_inputs(tokenizer, responses, max_length):
    """``[CLS] response [SEP]`` per response, truncated to ``max_length`` tokens."""
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    responses = normalize_candidates(responses, name="responses")
    rows = [[cls_id] + toks[: max_length - 2] + [sep_id] for toks in _tokenize(tokenizer, responses)]
    return _pad(rows, [[0] * len(r) for r in rows], pad_id)


# ----------------------------------------------------------------------------------------------
# Masked helpers and the co-attention matching
# ----------------------------------------------------------------------------------------------


def masked_max(values, mask, dim):
    """Max over ``dim`` ignoring positions where ``mask`` is False (mask broadcast to ``values``)."""
    return values.masked_fill(~mask, torch.finfo(values.dtype).min).amax(dim)


def masked_mean(values, mask, dim):
    """Mean over ``dim`` of the positions where ``mask`` is True (padded positions excluded)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def _first_valid(mask):
    """Index of the first True position along the last dim (0 for rows without any)."""
    return mask.to(torch.uint8).argmax(-1)


def co_attention_match(x, x_mask, y, y_mask, num_hops=2, use_hop1=True, pooling="max", scale=1.0,
                       global_match=False):
    """Multi-hop co-attention between every query sequence ``x`` and candidate sequences ``y``.

    Args:
        x: ``[B, m, d]`` query token states (context or persona), ``x_mask``: ``[B, m]`` (bool).
        y: ``[C, n, d]`` candidate token states shared by all queries, or ``[B, C, n, d]`` per query;
            ``y_mask``: ``[C, n]`` or ``[B, C, n]``.
    Returns:
        ``(x_features, y_features)``, both ``[B, C, k * d]``; the matching score is their dot product.

    Hop 1 (paper eq. 1-3): affinity ``A = X Y^T``; ``x2y`` = softmax over response positions,
    ``y2x`` = softmax over query positions; attended sequences ``X' = x2y Y`` and ``Y' = y2x^T X`` are
    pooled over their valid positions. Hop 2 (eq. 4-5): the mean over valid query rows of ``x2y``
    (a distribution over Y) is sent through ``y2x`` to give attention over X, and symmetrically; hop 3
    sends the hop-2 distributions through the other attention matrix once more. Padded positions are
    masked out of both softmaxes, the pooling and every mean. ``global_match`` appends the masked means
    of ``X`` and ``Y`` themselves (the Bi-encoder's vectors) to the two sides.

    All matrix products run as a few large (batched) GEMMs over every candidate at once. For the
    max-pooling, the attention row (column) of a padded position is replaced by that of the first
    valid position, so the padded rows of ``X'`` (``Y'``) duplicate a valid row and cannot change the
    maximum; this avoids masking the large ``[B, C, length, d]`` tensors. Mean pooling is linear, so
    ``mean(X') = mean(x2y) Y`` is computed from the (masked) mean attention directly.
    """
    x_mask = x_mask.bool()
    y_mask = y_mask.bool()
    bsz, m, d = x.shape
    shared = y.dim() == 3
    if shared:
        c, n = y.shape[0], y.shape[1]
        logits = (x.reshape(bsz * m, d) @ y.reshape(c * n, d).T).view(bsz, m, c, n).transpose(1, 2)
        ym = y_mask.unsqueeze(0)  # [1, C, n]
    else:
        c, n = y.shape[1], y.shape[2]
        logits = torch.bmm(x, y.reshape(bsz, c * n, d).transpose(1, 2)).view(bsz, m, c, n).transpose(1, 2)
        ym = y_mask  # [B, C, n]
    if scale != 1.0:
        logits = logits * scale
    xm = x_mask.unsqueeze(1)  # [B, 1, m]
    x_all, y_all = bool(x_mask.all()), bool(y_mask.all())
    neg = torch.finfo(logits.dtype).min
    x2y = torch.softmax(logits if y_all else logits.masked_fill(~ym.unsqueeze(-2), neg), dim=-1)  # [B,C,m,n]
    y2x = torch.softmax(logits if x_all else logits.masked_fill(~xm.unsqueeze(-1), neg), dim=-2)  # [B,C,m,n]

    def y_weighted(weights):  # [B, C, k, n] -> [B, C, k, d]: sum_j w[..., j] Y[c, j]
        if shared:
            k = weights.shape[2]
            out = torch.bmm(weights.transpose(0, 1).reshape(c, bsz * k, n), y)  # [C, B*k, d]
            return out.view(c, bsz, k, d).transpose(0, 1)
        return torch.matmul(weights, y)

    def x_weighted(weights):  # [B, C, k, m] -> [B, C, k, d]: sum_i w[..., i] X[b, i]
        k = weights.shape[2]
        return torch.bmm(weights.reshape(bsz, c * k, m), x).view(bsz, c, k, d)

    mean_x2y = mean_y2x = None
    if num_hops >= 2 or pooling in ("mean", "max+mean"):
        mean_x2y = x2y.mean(-2) if x_all else masked_mean(x2y, xm.unsqueeze(-1), -2)  # [B, C, n]
        mean_y2x = y2x.mean(-1) if y_all else masked_mean(y2x, ym.unsqueeze(-2), -1)  # [B, C, m]

    fx, fy = [], []
    if use_hop1:
        if pooling in ("max", "max+mean"):
            rows = x2y
            if not x_all:  # padded x rows -> copy of the first valid row
                first = _first_valid(x_mask).view(bsz, 1, 1, 1).expand(bsz, c, 1, n)
                rows = torch.where(xm.unsqueeze(-1), x2y, x2y.gather(2, first))
            cols = y2x
            if not y_all:  # padded y columns -> copy of the first valid column
                first = _first_valid(ym)[..., None, None].expand(-1, -1, m, 1)
                if first.shape[0] != bsz:
                    first = first.expand(bsz, -1, -1, -1)
                cols = torch.where(ym.unsqueeze(-2), y2x, y2x.gather(3, first))
            fx.append(y_weighted(rows).amax(-2))  # max over positions of X' = x2y Y
            fy.append(x_weighted(cols.transpose(-1, -2)).amax(-2))  # max over positions of Y' = y2x^T X
        if pooling in ("mean", "max+mean"):
            fx.append(y_weighted(mean_x2y.unsqueeze(-2)).squeeze(-2))
            fy.append(x_weighted(mean_y2x.unsqueeze(-2)).squeeze(-2))
    if num_hops >= 2:
        att_x = (mean_x2y.unsqueeze(-2) @ y2x.transpose(-1, -2)).squeeze(-2)  # eq. 4: [B, C, m]
        att_y = (mean_y2x.unsqueeze(-2) @ x2y).squeeze(-2)  # eq. 5: [B, C, n]
        hops = [(att_x, att_y)]
        if num_hops >= 3:
            hops.append(((att_y.unsqueeze(-2) @ y2x.transpose(-1, -2)).squeeze(-2),
                         (att_x.unsqueeze(-2) @ x2y).squeeze(-2)))
        for ax, ay in hops:
            fx.append(torch.bmm(ax, x))  # [B, C, d]
            fy.append(y_weighted(ay.unsqueeze(-2)).squeeze(-2))
    if global_match:
        fx.append(masked_mean(x, x_mask.unsqueeze(-1), 1).unsqueeze(1).expand(bsz, c, d))
        y_mean = masked_mean(y, y_mask.unsqueeze(-1), -2)  # [C, d] or [B, C, d]
        fy.append(y_mean.expand(bsz, c, d))
    return torch.cat(fx, dim=-1), torch.cat(fy, dim=-1)


# ----------------------------------------------------------------------------------------------
# Shared base: encoder, input building, loss, inference API
# ----------------------------------------------------------------------------------------------


class _ResponseSelectionBase(PreTrainedModel):
    base_model_prefix = "selector"
    supports_gradient_checkpointing = True
    # forward returns a mean loss and ignores num_items_in_batch: transformers' Trainer must scale it
    # for gradient accumulation and multi-process training itself (it reads this attribute)
    accepts_loss_kwargs = False
    _supports_sdpa = True
    _supports_flash_attn = True
    main_input_name = "context_input_ids"

    def __init__(self, config, encoder=None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder)
        params = inspect.signature(self.encoder.forward).parameters
        self._encoder_takes_token_types = "token_type_ids" in params and (
            getattr(config.encoder, "type_vocab_size", 0) or 0
        ) >= 2
        self._tokenizer = None
        self.post_init()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_encoder(cls, name_or_path, **config_kwargs):
        """Build the model around a pretrained encoder checkpoint (local folder or Hub id)."""
        encoder = AutoModel.from_pretrained(name_or_path)
        impl = encoder.config._attn_implementation
        config = cls.config_class(encoder=encoder.config, **config_kwargs)
        model = cls(config, encoder=encoder)
        if impl:
            model.set_attn_implementation(impl)
        return model

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    # -- tokenizer ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            source = getattr(self, "name_or_path", None) or self.config._name_or_path
            if not source:
                raise ValueError("this model has no tokenizer attached; pass tokenizer=... or set model.tokenizer")
            try:
                # passing our config stops AutoTokenizer from re-reading config.json (and its auto_map)
                self._tokenizer = AutoTokenizer.from_pretrained(source, config=self.config)
            except (OSError, ValueError) as err:
                raise ValueError(f"could not load a tokenizer from {source!r}; pass tokenizer=...") from err
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value):
        self._tokenizer = value

    def _limit(self, wanted):
        limit = getattr(self.config.encoder, "max_position_embeddings", None)
        return min(wanted, limit) if isinstance(limit, int) and limit > 0 else wanted

    def build_inputs(self, contexts, personas=None, responses=None, tokenizer=None):
        """Tokenize raw texts into the tensors ``forward`` takes (truncated to the config limits and to
        the encoder's maximum length)."""
        tok = tokenizer if tokenizer is not None else self.tokenizer
        c = self.config
        batch = {}
        ctx = build_context_inputs(tok, contexts, self._limit(c.max_context_length), c.max_context_turns)
        batch["context_input_ids"] = ctx["input_ids"]
        batch["context_attention_mask"] = ctx["attention_mask"]
        if c.use_token_type_ids:
            batch["context_token_type_ids"] = ctx["token_type_ids"]
        if personas is not None:
            if len(personas) != len(contexts):
                raise ValueError(f"got {len(contexts)} contexts but {len(personas)} personas; expected one each")
            per = build_persona_inputs(tok, personas, self._limit(c.max_persona_length), c.max_persona_sentences)
            batch["persona_input_ids"] = per["input_ids"]
            batch["persona_attention_mask"] = per["attention_mask"]
        if responses is not None:
            res = build_response_inputs(tok, responses, self._limit(c.max_response_length))
            batch["response_input_ids"] = res["input_ids"]
            batch["response_attention_mask"] = res["attention_mask"]
        return batch

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """Last-layer token states ``[batch, length, hidden]`` of the shared encoder."""
        kwargs = {}
        if token_type_ids is not None and self._encoder_takes_token_types and self.config.use_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out[0]

    def _encode_persona(self, persona_input_ids, persona_attention_mask):
        """Encode personas; rows with an all-zero mask ("no persona") are encoded with their first
        token visible so the encoder never sees a fully masked row. Returns states, mask, has_persona."""
        if persona_input_ids is None or not self.config.use_persona:
            return None, None, None
        if persona_attention_mask is None:
            persona_attention_mask = torch.ones_like(persona_input_ids)
        has_persona = persona_attention_mask.bool().any(-1)
        if not bool(has_persona.any()):
            return None, None, None
        mask = persona_attention_mask.clone()
        mask[~has_persona, 0] = 1
        states = self.encode(persona_input_ids, mask)
        return states, mask.bool(), has_persona

    def _candidate_states(self, input_ids, attention_mask):
        raise NotImplementedError

    def _scale(self, scores):
        scale = self.config.effective_score_scale
        return scores * scale if scale != 1.0 else scores

    def _loss(self, scores, labels):
        return nn.functional.cross_entropy(scores.float(), labels)

    def forward(
        self,
        context_input_ids=None,
        context_attention_mask=None,
        context_token_type_ids=None,
        persona_input_ids=None,
        persona_attention_mask=None,
        response_input_ids=None,
        response_attention_mask=None,
        negative_input_ids=None,
        negative_attention_mask=None,
        in_batch_negatives=True,
        return_loss=True,
        return_dict=None,
        **kwargs,
    ):
        r"""Score each row's gold response against negatives and (optionally) return the loss.

        Args:
            context_input_ids / context_attention_mask / context_token_type_ids: ``[B, m]`` contexts.
            persona_input_ids / persona_attention_mask: ``[B, q]`` personas (all-zero mask = none).
            response_input_ids / response_attention_mask: ``[B, n]`` gold responses.
            negative_input_ids / negative_attention_mask: ``[B, K, n']`` sampled negatives per row.
            in_batch_negatives: also use the other rows' gold responses as negatives (scores
                ``[B, B + K]``, gold at column ``i``); otherwise scores are ``[B, 1 + K]``, gold at 0.
            return_loss: compute the cross-entropy over each row's candidates.
        """
        if context_input_ids is None or response_input_ids is None:
            raise ValueError("forward needs context_input_ids and response_input_ids")
        if context_attention_mask is None:
            context_attention_mask = torch.ones_like(context_input_ids)
        if response_attention_mask is None:
            response_attention_mask = torch.ones_like(response_input_ids)
        bsz = context_input_ids.shape[0]
        if response_input_ids.shape[0] != bsz:
            raise ValueError(f"got {bsz} contexts but {response_input_ids.shape[0]} responses")
        query = self.encode_query(context_input_ids, context_attention_mask, context_token_type_ids,
                                  persona_input_ids, persona_attention_mask)
        pos = self._candidate_states(response_input_ids, response_attention_mask)
        device = context_input_ids.device
        blocks, dup_masks = [], []
        if in_batch_negatives:
            blocks.append(self.score_query_states(query, pos))  # [B, B]
            labels = torch.arange(bsz, device=device)
            if self.config.mask_duplicate_candidates:
                same = _same_rows(response_input_ids, response_attention_mask, response_input_ids,
                                  response_attention_mask)
                dup_masks.append(same & ~torch.eye(bsz, dtype=torch.bool, device=device))
            else:
                dup_masks.append(torch.zeros(bsz, bsz, dtype=torch.bool, device=device))
        else:
            blocks.append(self.score_query_states(query, pos, paired=True).unsqueeze(1))  # [B, 1]
            labels = torch.zeros(bsz, dtype=torch.long, device=device)
            dup_masks.append(torch.zeros(bsz, 1, dtype=torch.bool, device=device))
        if negative_input_ids is not None:
            if negative_input_ids.dim() != 3 or negative_input_ids.shape[0] != bsz:
                raise ValueError(
                    f"negative_input_ids must be [batch={bsz}, K, length], got {tuple(negative_input_ids.shape)}"
                )
            k = negative_input_ids.shape[1]
            if negative_attention_mask is None:
                negative_attention_mask = torch.ones_like(negative_input_ids)
            flat_ids = negative_input_ids.reshape(bsz * k, -1)
            flat_mask = negative_attention_mask.reshape(bsz * k, -1)
            neg = self._candidate_states(flat_ids, flat_mask)
            neg = {key: v.reshape(bsz, k, *v.shape[1:]) for key, v in neg.items()}
            blocks.append(self.score_query_states(query, neg))  # grouped: [B, K]
            same = _same_rows(response_input_ids, response_attention_mask, flat_ids, flat_mask).reshape(bsz, bsz, k)
            dup_masks.append(same[torch.arange(bsz, device=device), torch.arange(bsz, device=device)])
        scores = torch.cat(blocks, dim=1)
        dup = torch.cat(dup_masks, dim=1)
        if bool(dup.any()):
            scores = scores.masked_fill(dup, torch.finfo(scores.dtype).min)
        loss = self._loss(scores, labels) if return_loss else None
        return ResponseSelectionOutput(loss=loss, scores=scores, labels=labels)

    # -- inference API -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_candidates(self, candidates, tokenizer=None, batch_size=64):
        """Encode candidate responses once; the returned :class:`CandidateCache` is reused by
        :meth:`rank` and :meth:`score_candidates` for any number of queries."""
        candidates = normalize_candidates(candidates)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        tok = tokenizer if tokenizer is not None else self.tokenizer
        was_training = self.training
        self.eval()
        try:
            device = self.device
            limit = self._limit(self.config.max_response_length)
            chunks = []
            for start in range(0, len(candidates), batch_size):
                res = build_response_inputs(tok, candidates[start:start + batch_size], limit)
                chunks.append(self._candidate_states(res["input_ids"].to(device), res["attention_mask"].to(device)))
        finally:
            self.train(was_training)
        return self._merge_candidate_chunks(candidates, chunks)

    @torch.no_grad()
    def encode_query_texts(self, contexts, personas=None, tokenizer=None):
        batch = self.build_inputs(contexts, personas, tokenizer=tokenizer)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.encode_query(
            batch["context_input_ids"], batch["context_attention_mask"], batch.get("context_token_type_ids"),
            batch.get("persona_input_ids"), batch.get("persona_attention_mask"),
        )

    @torch.no_grad()
    def rank(self, context, persona, candidates, tokenizer=None):
        """Scores ``[num_candidates]`` of the candidates for one query (higher = better).

        Args:
            context: list of utterances, oldest first (the last one is the message being answered),
                or a single string.
            persona: the respondent's persona sentences (``None``/``[]`` for none); at most
                ``config.max_persona_sentences`` are used, extra ones are dropped with a warning.
            candidates: list of strings, or a :class:`CandidateCache` from :meth:`encode_candidates`.
        Over-long texts are truncated to the config limits and the encoder's maximum length.
        """
        context = normalize_context(context)
        persona = normalize_persona(persona, self.config.max_persona_sentences)
        if not isinstance(candidates, CandidateCache):
            candidates = self.encode_candidates(candidates, tokenizer=tokenizer)
        was_training = self.training
        self.eval()
        try:
            query = self.encode_query_texts([context], [persona], tokenizer=tokenizer)
            return self.score_query_states(query, self._cache_states(candidates, bucketed=True))[0]
        finally:
            self.train(was_training)

    @torch.no_grad()
    def score_candidates(self, contexts, personas, cache, candidate_indices=None, tokenizer=None, batch_size=32):
        """Scores for many queries against a :class:`CandidateCache`.

        ``candidate_indices`` (``[N, C]`` ints into the cache) gives each query its own candidate list;
        without it every query is scored against every cached candidate. Returns ``[N, C]`` scores.
        ``candidate_indices`` must hold integers (Python ints, or an integer tensor / array), never
        floats or bools, each in ``[0, len(cache))``; anything else raises a ``TypeError`` /
        ``ValueError`` naming the argument, the offending entry and what was expected.
        """
        if personas is None:
            personas = [[] for _ in contexts]
        if len(personas) != len(contexts):
            raise ValueError(f"got {len(contexts)} contexts but {len(personas)} personas; expected one each")
        if not isinstance(cache, CandidateCache):
            raise TypeError(f"cache must be a CandidateCache from encode_candidates(), got {type(cache).__name__}")
        if isinstance(batch_size, bool) or not (isinstance(batch_size, int) or _is_integer_scalar(batch_size)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if candidate_indices is not None:
            candidate_indices = _index_matrix(candidate_indices, len(contexts), len(cache))
        states = self._cache_states(cache)
        was_training = self.training
        self.eval()
        out = []
        try:
            for start in range(0, len(contexts), batch_size):
                stop = min(start + batch_size, len(contexts))
                query = self.encode_query_texts(contexts[start:stop], personas[start:stop], tokenizer=tokenizer)
                # match in slices small enough that the [rows, C, length, hidden] tensors stay modest
                num_cand = len(cache) if candidate_indices is None else candidate_indices.shape[1]
                step = self._match_rows(query, states, num_cand)
                for s0 in range(0, stop - start, step):
                    s1 = min(s0 + step, stop - start)
                    q = {k: (v[s0:s1] if torch.is_tensor(v) else v) for k, v in query.items()}
                    if candidate_indices is None:
                        cand = states
                    else:
                        idx = candidate_indices[start + s0:start + s1].to(self.device)
                        cand = {k: v[idx] for k, v in states.items()}
                    out.append(self.score_query_states(q, cand))
        finally:
            self.train(was_training)
        return torch.cat(out, dim=0)

    def _match_rows(self, query, states, num_candidates):
        return max(1, len(next(v for v in query.values() if torch.is_tensor(v))))


def _index_matrix(candidate_indices, num_queries, num_candidates):
    """Validation of ``score_candidates(candidate_indices=...)``: a ``[num_queries, C]`` long tensor of
    integers in ``[0, num_candidates)``, or a TypeError / ValueError saying what is wrong."""
    what = "candidate_indices"
    expected = f"[num_queries={num_queries}, C] integer indices into the cache"
    if torch.is_tensor(candidate_indices) or hasattr(candidate_indices, "__array__"):
        try:
            tensor = candidate_indices if torch.is_tensor(candidate_indices) else torch.as_tensor(candidate_indices)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{what} must hold {expected}, got an array that is not numeric ({err})") from None
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise TypeError(f"{what} must hold {expected}, got a tensor/array of {tensor.dtype}")
        tensor = tensor.long()
    else:
        if isinstance(candidate_indices, (str, bytes)) or not isinstance(candidate_indices, (list, tuple)):
            raise TypeError(f"{what} must be a list of lists of {expected}, got {type(candidate_indices).__name__}")
        rows = []
        for i, row in enumerate(candidate_indices):
            if torch.is_tensor(row) or hasattr(row, "__array__"):
                row = row.tolist() if hasattr(row, "tolist") else list(row)
            if not isinstance(row, (list, tuple)):
                raise TypeError(f"{what}[{i}] must be a list of integer indices, got {type(row).__name__} {row!r}")
            for j, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, int) and not _is_integer_scalar(value):
                    raise TypeError(f"{what}[{i}][{j}] must be an integer index into the cache, got "
                                    f"{type(value).__name__} {value!r}")
            rows.append([int(v) for v in row])
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise ValueError(f"{what} must be {expected} with the same number C of candidates per query, "
                             f"got rows of lengths {sorted(widths)}")
        tensor = torch.tensor(rows, dtype=torch.long) if rows else torch.empty(0, 0, dtype=torch.long)
    if tensor.dim() != 2 or tensor.shape[0] != num_queries:
        raise ValueError(f"{what} must be {expected}, got shape {tuple(tensor.shape)}")
    bad = (tensor < 0) | (tensor >= num_candidates)
    if bad.any():
        i, j = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"{what} must lie in [0, {num_candidates}) (the cache has {num_candidates} candidates), "
                         f"got {int(tensor[i, j])} at [{i}][{j}]")
    return tensor


def _is_integer_scalar(value):
    """A numpy / torch integer scalar (not a bool, not a float)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or getattr(value, "ndim", 0) != 0:
        return False
    if torch.is_tensor(value):
        return not (value.dtype == torch.bool or value.is_floating_point() or value.is_complex())
    return getattr(dtype, "kind", "") in ("i", "u")


def _same_rows(ids_a, mask_a, ids_b, mask_b):
    """``[A, B]`` bool: token sequences a_i and b_j are identical (padding ignored)."""
    la, lb = ids_a.shape[1], ids_b.shape[1]
    length = max(la, lb)
    a = (ids_a * mask_a).long()
    b = (ids_b * mask_b).long()
    a = nn.functional.pad(a, (0, length - la), value=0)
    b = nn.functional.pad(b, (0, length - lb), value=0)
    return (a.unsqueeze(1) == b.unsqueeze(0)).all(-1)


# ----------------------------------------------------------------------------------------------
# CoBERT
# ----------------------------------------------------------------------------------------------


class CoBERTPreTrainedModel(_ResponseSelectionBase):
    config_class = CoBERTConfig

    def _init_weights(self, module):
        # The co-attention matching has no parameters; the encoder initialises its own modules.
        super()._init_weights(module)


class CoBERTForResponseSelection(CoBERTPreTrainedModel):
    """CoBERT: shared encoder + hop-1/hop-2 co-attention between context-response and
    persona-response; score = dot product of the concatenated matching vectors (paper eq. 6).

    Example::

        model = CoBERTForResponseSelection.from_encoder("sentence-transformers/all-MiniLM-L6-v2")
        model.tokenizer = AutoTokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
        cache = model.encode_candidates(["i love dogs .", "my favorite color is blue ."])
        scores = model.rank(["hi , do you have pets ?"], ["i have two dogs ."], cache)
    """

    def encode_query(self, context_input_ids, context_attention_mask, context_token_type_ids=None,
                     persona_input_ids=None, persona_attention_mask=None):
        x = self.encode(context_input_ids, context_attention_mask, context_token_type_ids)
        p, p_mask, has_p = self._encode_persona(persona_input_ids, persona_attention_mask)
        return {"x": x, "x_mask": context_attention_mask.bool(), "p": p, "p_mask": p_mask, "has_p": has_p}

    def _candidate_states(self, input_ids, attention_mask):
        return {"y": self.encode(input_ids, attention_mask), "y_mask": attention_mask.bool()}

    def _match(self, q_states, q_mask, y, y_mask):
        c = self.config
        fx, fy = co_attention_match(q_states, q_mask, y, y_mask, num_hops=c.num_hops, use_hop1=c.use_hop1,
                                    pooling=c.hop1_pooling, scale=float(c.attention_scale),
                                    global_match=c.global_match)
        return (fx * fy).sum(-1)

    def score_query_states(self, query, cand, paired=False):
        """Scores of encoded queries against encoded candidates.

        ``cand["y"]``: ``[C, n, d]`` shared by all queries -> ``[B, C]``; ``[B, C, n, d]`` per query ->
        ``[B, C]``; with ``paired=True`` and ``[B, n, d]`` (one candidate per query) -> ``[B]``.
        A ``cand["buckets"]`` entry (from a :class:`CandidateCache`) scores shared candidates in
        length buckets, each trimmed to its longest member, which skips most padded positions.
        """
        if not paired and cand.get("buckets"):
            scores = None
            for idx, y, y_mask in cand["buckets"]:
                part = self._score(query, y, y_mask)
                if scores is None:
                    scores = part.new_empty(part.shape[0], len(cand["y"]))
                scores[:, idx] = part
            return self._scale(scores)
        y, y_mask = cand["y"], cand["y_mask"]
        if paired:
            y, y_mask = y.unsqueeze(1), y_mask.unsqueeze(1)
        longest = int(y_mask.sum(-1).max())  # drop trailing columns that are padding everywhere
        if 0 < longest < y.shape[-2]:
            y, y_mask = y[..., :longest, :], y_mask[..., :longest]
        scores = self._scale(self._score(query, y, y_mask))
        return scores[:, 0] if paired else scores

    def _score(self, query, y, y_mask):
        # context and persona are matched in separate calls: padding the shorter one to the longer
        # one's length to batch them costs more (padded rows still flow through X' = x2y Y)
        scores = self._match(query["x"], query["x_mask"], y, y_mask)
        if query["p"] is not None:
            persona_scores = self._match(query["p"], query["p_mask"], y, y_mask)
            scores = scores + torch.where(query["has_p"].unsqueeze(1), persona_scores, torch.zeros_like(persona_scores))
        return scores

    def _match_rows(self, query, states, num_candidates, budget=1 << 23):
        # query rows per matching call so that rows * C * max(m, n) * d stays under ``budget`` elements
        _, n, d = states["y"].shape
        m = max(query["x"].shape[1], query["p"].shape[1] if query["p"] is not None else 0, n)
        per_row = num_candidates * m * d
        return max(1, budget // per_row)

    def _merge_candidate_chunks(self, texts, chunks):
        length = max(ch["y"].shape[1] for ch in chunks)
        ys, masks = [], []
        for ch in chunks:
            pad = length - ch["y"].shape[1]
            ys.append(nn.functional.pad(ch["y"], (0, 0, 0, pad)))
            masks.append(nn.functional.pad(ch["y_mask"], (0, pad), value=False))
        return CandidateCache(texts=list(texts), hidden_states=torch.cat(ys), attention_mask=torch.cat(masks))

    def _cache_states(self, cache, bucketed=False):
        if cache.hidden_states is None:
            raise ValueError("this CandidateCache holds pooled vectors (Bi-encoder); CoBERT needs token states: "
                             "build it with this model's encode_candidates()")
        states = {"y": cache.hidden_states.to(self.device), "y_mask": cache.attention_mask.to(self.device)}
        if bucketed:
            if cache.buckets is None:
                cache.buckets = _length_buckets(cache.hidden_states, cache.attention_mask)
            states["buckets"] = [(i.to(self.device), y.to(self.device), m.to(self.device)) for i, y, m in cache.buckets]
        return states


def _length_buckets(states, mask, size=16):
    """Split cached candidates into groups of similar length (``size`` per group), each trimmed to
    its longest member: ``[(indices, states[indices, :L], mask[indices, :L]), ...]``."""
    lengths = mask.sum(-1)
    order = torch.argsort(lengths, descending=True, stable=True)
    buckets = []
    for idx in torch.split(order, size):
        longest = max(1, int(lengths[idx].max()))
        buckets.append((idx, states[idx, :longest].contiguous(), mask[idx, :longest].contiguous()))
    return buckets


# ----------------------------------------------------------------------------------------------
# Bi-encoder baseline
# ----------------------------------------------------------------------------------------------


class BiEncoderPreTrainedModel(_ResponseSelectionBase):
    config_class = BiEncoderConfig

    def _init_weights(self, module):
        super()._init_weights(module)


class BiEncoderForResponseSelection(BiEncoderPreTrainedModel):
    """Bi-encoder (the paper's Tri-encoder) baseline: query vector = average of the mean-pooled
    context and persona vectors (context alone when there is no persona), candidate vector =
    mean-pooled response, score = dot product."""

    def encode_query(self, context_input_ids, context_attention_mask, context_token_type_ids=None,
                     persona_input_ids=None, persona_attention_mask=None):
        mask = context_attention_mask.bool()
        x = masked_mean(self.encode(context_input_ids, context_attention_mask, context_token_type_ids),
                        mask.unsqueeze(-1), 1)
        p, p_mask, has_p = self._encode_persona(persona_input_ids, persona_attention_mask)
        if p is not None:
            pv = masked_mean(p, p_mask.unsqueeze(-1), 1)
            x = torch.where(has_p.unsqueeze(-1), (x + pv) / 2, x)
        return {"q": x}

    def _candidate_states(self, input_ids, attention_mask):
        y = masked_mean(self.encode(input_ids, attention_mask), attention_mask.bool().unsqueeze(-1), 1)
        return {"v": y}

    def score_query_states(self, query, cand, paired=False):
        q, v = query["q"], cand["v"]
        if paired:
            return self._scale((q * v).sum(-1))
        if v.dim() == 2:
            return self._scale(q @ v.T)
        return self._scale(torch.einsum("bd,bcd->bc", q, v))

    def _merge_candidate_chunks(self, texts, chunks):
        v = torch.cat([ch["v"] for ch in chunks])
        return CandidateCache(texts=list(texts), embeddings=v,
                              attention_mask=torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device))

    def _cache_states(self, cache, bucketed=False):
        if cache.embeddings is None:
            raise ValueError("this CandidateCache holds token states (CoBERT); the Bi-encoder needs pooled vectors: "
                             "build it with this model's encode_candidates()")
        return {"v": cache.embeddings.to(self.device)}


CoBERTConfig.register_for_auto_class()
CoBERTForResponseSelection.register_for_auto_class("AutoModel")
BiEncoderConfig.register_for_auto_class()
BiEncoderForResponseSelection.register_for_auto_class("AutoModel")

__all__ = [
    "BiEncoderForResponseSelection",
    "BiEncoderPreTrainedModel",
    "CandidateCache",
    "CoBERTForResponseSelection",
    "CoBERTPreTrainedModel",
    "ResponseSelectionOutput",
    "build_context_inputs",
    "build_persona_inputs",
    "build_response_inputs",
    "co_attention_match",
    "masked_max",
    "masked_mean",
]
