"""P2Bot's Receiver (Liu et al., 2020, "You Impress Me", section 4): a persona-perception scorer.

Given the utterances ``x_1..x_N`` of one speaker and a persona ``w = (w_1..w_L)``, the Receiver

1. encodes every utterance and every persona sentence separately and mean-pools the last hidden
   layer over the real tokens only (padding is masked out of the mean);
2. builds the relevance grid ``U = H · Wᵀ / √d`` (``N × L``);
3. aggregates each row with ``Agg(U_n) = Σ_k softmax_k(U_n/τ) · U_nk`` where padded persona slots get
   exactly zero weight, and averages the rows over the real utterances: ``c = mean_n Agg(U_n)``.

Training uses the margin loss ``max(0, m + c_Z - c_A)`` between the true persona ``A`` and a sampled
distractor persona ``Z`` plus ``β · |U|₁`` to keep the grid sparse (``loss_type="softmax"`` replaces the
hinge by the cross-entropy of the true persona among the distractors, an option the paper does not have).

This file imports only torch, transformers and its sibling configuration module, so checkpoints
saved with ``save_pretrained`` load with ``AutoModel.from_pretrained(dir, trust_remote_code=True)``.
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_receiver import ReceiverConfig


@dataclass
class ReceiverOutput(ModelOutput):
    """Output of [`ReceiverModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Ranking loss (margin, or softmax with ``loss_type="softmax"``) + β·L1, returned when negative personas
            are given and ``return_loss`` is true.
        scores (`torch.FloatTensor` of shape `(batch,)`):
            Cumulative score ``c`` of every dialogue side against its (true) persona.
        negative_scores (`torch.FloatTensor` of shape `(batch, num_negatives)`, *optional*):
            Cumulative scores against the distractor personas.
        pairwise_scores (`torch.FloatTensor` of shape `(batch, batch)`, *optional*):
            With ``in_batch_negative_mask``: the score of side ``i`` against the persona of item ``j``.
        relevance (`torch.FloatTensor` of shape `(batch, utterances, persona_sentences)`):
            The grid ``U = H·Wᵀ/√d`` against the true persona (padded cells are 0).
        weights (`torch.FloatTensor` of shape `(batch, utterances, persona_sentences)`):
            The aggregation weights ``softmax(U/τ)`` (padded persona slots and padded utterances are 0).
        utterance_scores (`torch.FloatTensor` of shape `(batch, utterances)`):
            ``Agg(U_n)`` per utterance (the paper's per-utterance ``score``, eq. 15); 0 for padded slots.
        utterance_embeddings (`torch.FloatTensor` of shape `(batch, utterances, hidden)`):
            Pooled impression encodings ``H``.
        persona_embeddings (`torch.FloatTensor` of shape `(batch, persona_sentences, hidden)`):
            Pooled persona encodings ``W``.
    """

    loss: Optional[torch.FloatTensor] = None
    scores: Optional[torch.FloatTensor] = None
    negative_scores: Optional[torch.FloatTensor] = None
    pairwise_scores: Optional[torch.FloatTensor] = None
    relevance: Optional[torch.FloatTensor] = None
    weights: Optional[torch.FloatTensor] = None
    utterance_scores: Optional[torch.FloatTensor] = None
    utterance_embeddings: Optional[torch.FloatTensor] = None
    persona_embeddings: Optional[torch.FloatTensor] = None


def masked_mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden_states`` ([S, T, d]) over the positions where ``attention_mask`` ([S, T]) is 1.

    Rows without any real token give a zero vector (never NaN).
    """
    mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    summed = (hidden_states * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1.0)
    return summed / counts


def relevance_grid(utterance_embeddings: torch.Tensor, persona_embeddings: torch.Tensor) -> torch.Tensor:
    """``U = H · Wᵀ / √d`` for ``H`` [..., N, d] and ``W`` [..., L, d] -> [..., N, L]."""
    d = utterance_embeddings.shape[-1]
    return torch.matmul(utterance_embeddings, persona_embeddings.transpose(-1, -2)) / math.sqrt(d)


def aggregate(
    relevance: torch.Tensor,
    utterance_mask: torch.Tensor,
    persona_mask: torch.Tensor,
    temperature: float,
):
    """Masked Agg (paper eq. 13-14).

    Args:
        relevance: ``U`` [B, N, L].
        utterance_mask: [B, N], 1 for real utterances.
        persona_mask: [B, L], 1 for real persona sentences.
        temperature: ``τ > 0``.

    Returns:
        ``(scores [B], utterance_scores [B, N], weights [B, N, L])``. Padded persona slots get exactly
        zero weight, padded utterances do not enter the mean, and a side with no persona sentence or no
        utterance scores 0.
    """
    if temperature <= 0:
        raise ValueError(f"aggregate: temperature must be > 0, got {temperature}")
    pmask = persona_mask.to(torch.bool).unsqueeze(-2)  # [B, 1, L]
    umask = utterance_mask.to(relevance.dtype)  # [B, N]
    logits = (relevance / temperature).masked_fill(~pmask, torch.finfo(relevance.dtype).min)
    weights = torch.softmax(logits, dim=-1) * pmask.to(relevance.dtype)  # exact zeros on padding
    weights = weights * umask.unsqueeze(-1)
    utterance_scores = (weights * relevance.masked_fill(~pmask, 0.0)).sum(dim=-1)  # [B, N]
    scores = utterance_scores.sum(dim=-1) / umask.sum(dim=-1).clamp(min=1.0)
    return scores, utterance_scores, weights


def _slot_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A sentence slot is real when its token mask has at least one 1."""
    return attention_mask.sum(dim=-1) > 0


class ReceiverPreTrainedModel(PreTrainedModel):
    config_class = ReceiverConfig
    base_model_prefix = "receiver"
    supports_gradient_checkpointing = True
    # forward returns a mean loss and ignores num_items_in_batch: transformers' Trainer must scale it
    # for gradient accumulation and multi-process training itself (it reads this attribute)
    accepts_loss_kwargs = False
    _supports_sdpa = True

    def _init_weights(self, module):
        # The encoders are transformers sub-models and initialise themselves; the Receiver has no own
        # parameters beyond them, so only the generic rules apply.
        super()._init_weights(module)


class ReceiverModel(ReceiverPreTrainedModel):
    """P2Bot Receiver. See the module docstring for the computation.

    Tensor inputs are 3-D: ``[batch, sentences, tokens]``. A slot whose attention mask is all zero is a
    padding slot (a shorter dialogue or a shorter persona in the batch) and takes no part in the score.
    Negative personas may be ``[batch, sentences, tokens]`` (one distractor each) or
    ``[batch, negatives, sentences, tokens]``. Alternatively ``in_batch_negative_mask`` ([batch, batch],
    True where item ``j``'s persona is a valid distractor for side ``i``) uses the other personas of the
    batch as distractors: no extra encoding, ``batch - 1`` distractors per side, the hinge loss averaged
    over the valid pairs.
    """

    _is_p2bot_receiver = True

    def __init__(self, config: ReceiverConfig):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder)
        self.encoder.config = self.config.encoder
        if config.share_encoders:
            self.persona_encoder = None
        else:
            self.persona_encoder = AutoModel.from_config(config.encoder)
            self.persona_encoder.config = self.config.encoder
        self._use_segments = bool(config.share_encoders and config.segment_ids)
        if self._use_segments and getattr(config.encoder, "type_vocab_size", 0) < 2:
            # Backbones without token types (DistilBERT, RoBERTa with type_vocab_size=1) cannot tell the
            # sides apart by segment ids; they still work as a shared encoder without them.
            self._use_segments = False
        self.tau = float(config.tau)
        self.tokenizer = None
        self.post_init()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_encoder_pretrained(
        cls, encoder_name_or_path: str, share_encoders: bool = True, **config_kwargs
    ) -> "ReceiverModel":
        """Build a Receiver whose encoder(s) start from a pretrained ``AutoModel`` checkpoint.

        The tokenizer of that checkpoint is attached as ``model.tokenizer`` when it can be loaded.
        """
        encoder = AutoModel.from_pretrained(encoder_name_or_path)
        config_kwargs.setdefault("encoder_name_or_path", str(encoder_name_or_path))
        config = cls.config_class(encoder=encoder.config.to_dict(), share_encoders=share_encoders, **config_kwargs)
        model = cls(config)
        state = encoder.state_dict()
        model.encoder.load_state_dict(state)
        if model.persona_encoder is not None:
            model.persona_encoder.load_state_dict(state)
        try:
            model.tokenizer = AutoTokenizer.from_pretrained(encoder_name_or_path)
        except (OSError, ValueError):
            model.tokenizer = None
        return model

    def set_tau(self, tau: float) -> None:
        """Set the aggregation temperature τ (also stored in the config so ``save_pretrained`` keeps it)."""
        tau = float(tau)
        if not tau > 0:
            raise ValueError(f"ReceiverModel.set_tau: τ must be > 0, got {tau}")
        self.tau = tau
        self.config.tau = tau

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    # ------------------------------------------------------------------ tensor-level API
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, kind: str = "utterance") -> torch.Tensor:
        """Encode sentences ([S, T] token ids and mask) into pooled vectors [S, d].

        ``kind`` is ``"utterance"`` (impression encoder) or ``"persona"`` (persona encoder / segment 1).
        """
        if kind not in ("utterance", "persona"):
            raise ValueError(f"ReceiverModel.encode: kind must be 'utterance' or 'persona', got {kind!r}")
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                "ReceiverModel.encode: expected input_ids and attention_mask of the same shape [sentences, tokens], "
                f"got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        encoder = self.encoder
        kwargs = {}
        if kind == "persona" and self.persona_encoder is not None:
            encoder = self.persona_encoder
        if self._use_segments:
            kwargs["token_type_ids"] = torch.full_like(input_ids, 1 if kind == "persona" else 0)
        if input_ids.shape[0] == 0:
            return torch.zeros(0, self.config.encoder.hidden_size, device=input_ids.device, dtype=self.dtype)
        out = encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return masked_mean_pool(out.last_hidden_state, attention_mask)

    def _encode_slots(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, kind: str):
        """Encode [B, S, T] slots, running the encoder on the real slots only. Returns ([B, S, d], [B, S])."""
        b, s, t = input_ids.shape
        slot_mask = _slot_mask(attention_mask)
        flat_ids = input_ids.reshape(b * s, t)
        flat_mask = attention_mask.reshape(b * s, t)
        real_index = slot_mask.reshape(-1).nonzero(as_tuple=True)[0]
        # Sort the real sentences by length and encode them in chunks cut to each chunk's longest
        # sentence: the pooled vectors are the same (padding is masked), the padding compute is not spent.
        # extent = position of the last real token + 1 (correct for right and left padding alike)
        positions = torch.arange(1, t + 1, device=flat_mask.device)
        lengths = (flat_mask[real_index].to(torch.bool) * positions).max(dim=-1).values if t else flat_mask.new_zeros(0)
        order = torch.argsort(lengths, descending=True)
        real_index, lengths = real_index[order], lengths[order]
        chunk = max(1, int(self.config.encode_chunk_size))
        pieces = []
        for start in range(0, real_index.shape[0], chunk):
            idx = real_index[start : start + chunk]
            width = max(int(lengths[start]), 1)
            pieces.append(self.encode(flat_ids[idx, :width], flat_mask[idx, :width], kind=kind))
        hidden = self.config.encoder.hidden_size
        pooled = torch.cat(pieces) if pieces else flat_ids.new_zeros(0, hidden, dtype=self.dtype)
        out = pooled.new_zeros(b * s, hidden)
        out = out.index_copy(0, real_index, pooled)
        return out.reshape(b, s, -1), slot_mask

    def forward(
        self,
        utterance_input_ids: torch.LongTensor,
        utterance_attention_mask: torch.LongTensor,
        persona_input_ids: torch.LongTensor,
        persona_attention_mask: torch.LongTensor,
        negative_persona_input_ids: Optional[torch.LongTensor] = None,
        negative_persona_attention_mask: Optional[torch.LongTensor] = None,
        in_batch_negative_mask: Optional[torch.BoolTensor] = None,
        return_loss: bool = True,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[ReceiverOutput, tuple]:
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        for name, ids, mask in (
            ("utterance", utterance_input_ids, utterance_attention_mask),
            ("persona", persona_input_ids, persona_attention_mask),
        ):
            if ids.dim() != 3 or mask is None or mask.shape != ids.shape:
                raise ValueError(
                    f"ReceiverModel.forward: {name}_input_ids and {name}_attention_mask must both have shape "
                    f"[batch, sentences, tokens], got {tuple(ids.shape)} and "
                    f"{None if mask is None else tuple(mask.shape)}"
                )
        if persona_input_ids.shape[0] != utterance_input_ids.shape[0]:
            raise ValueError(
                f"ReceiverModel.forward: batch sizes differ (utterances {utterance_input_ids.shape[0]}, "
                f"personas {persona_input_ids.shape[0]})"
            )

        H, umask = self._encode_slots(utterance_input_ids, utterance_attention_mask, "utterance")
        batch = H.shape[0]
        if in_batch_negative_mask is not None:
            if negative_persona_input_ids is not None:
                raise ValueError("ReceiverModel.forward: give either negative personas or in_batch_negative_mask, not both")
            return self._forward_in_batch(H, umask, persona_input_ids, persona_attention_mask,
                                          in_batch_negative_mask, return_loss, return_dict)

        # All persona sentences (true and distractors) go through the persona encoder in one pass.
        num_neg = 0
        if negative_persona_input_ids is not None:
            if negative_persona_attention_mask is None or negative_persona_attention_mask.shape != negative_persona_input_ids.shape:
                raise ValueError(
                    "ReceiverModel.forward: negative_persona_attention_mask must be given with the shape of "
                    "negative_persona_input_ids"
                )
            neg_ids, neg_mask = negative_persona_input_ids, negative_persona_attention_mask
            if neg_ids.dim() == 3:
                neg_ids, neg_mask = neg_ids.unsqueeze(1), neg_mask.unsqueeze(1)
            if neg_ids.dim() != 4 or neg_ids.shape[0] != batch:
                raise ValueError(
                    "ReceiverModel.forward: negative personas must have shape [batch, sentences, tokens] or "
                    f"[batch, negatives, sentences, tokens] with batch={batch}, got {tuple(negative_persona_input_ids.shape)}"
                )
            num_neg = neg_ids.shape[1]
            L = max(persona_input_ids.shape[1], neg_ids.shape[2])
            T = max(persona_input_ids.shape[2], neg_ids.shape[3])
            pos_ids = _pad_to(persona_input_ids, L, T).unsqueeze(1)
            pos_mask = _pad_to(persona_attention_mask, L, T).unsqueeze(1)
            all_ids = torch.cat([pos_ids, _pad_to(neg_ids, L, T)], dim=1)  # [B, 1+K, L, T]
            all_mask = torch.cat([pos_mask, _pad_to(neg_mask, L, T)], dim=1)
        else:
            all_ids = persona_input_ids.unsqueeze(1)
            all_mask = persona_attention_mask.unsqueeze(1)
        K1, L, T = all_ids.shape[1], all_ids.shape[2], all_ids.shape[3]
        W, pmask = self._encode_slots(all_ids.reshape(batch, K1 * L, T), all_mask.reshape(batch, K1 * L, T), "persona")
        W = W.reshape(batch, K1, L, -1)
        pmask = pmask.reshape(batch, K1, L)

        U = relevance_grid(H.unsqueeze(1), W)  # [B, 1+K, N, L]
        cell_mask = umask[:, None, :, None] & pmask[:, :, None, :]
        U = U * cell_mask.to(U.dtype)
        flat_scores, flat_utt, flat_w = aggregate(
            U.reshape(batch * K1, U.shape[2], L),
            umask.unsqueeze(1).expand(batch, K1, -1).reshape(batch * K1, -1),
            pmask.reshape(batch * K1, L),
            self.tau,
        )
        all_scores = flat_scores.reshape(batch, K1)
        scores = all_scores[:, 0]
        negative_scores = all_scores[:, 1:] if num_neg else None

        loss = None
        if num_neg and return_loss:
            rank_loss = self._ranking_loss(scores, negative_scores)
            # Entry-wise L1 norm of every scored grid (true + distractors), averaged over grids and batch.
            l1 = U.abs().sum(dim=(-1, -2)).mean()
            loss = rank_loss + self.config.l1_weight * l1

        weights = flat_w.reshape(batch, K1, U.shape[2], L)[:, 0]
        utt_scores = flat_utt.reshape(batch, K1, -1)[:, 0]
        output = ReceiverOutput(
            loss=loss,
            scores=scores,
            negative_scores=negative_scores,
            relevance=U[:, 0],
            weights=weights,
            utterance_scores=utt_scores,
            utterance_embeddings=H,
            persona_embeddings=W[:, 0],
        )
        return output if return_dict else output.to_tuple()

    def _ranking_loss(self, scores, negative_scores, valid=None):
        """The ranking part of the loss for true scores ``[B]`` against distractor scores ``[B, K]``
        (``valid[b, k]``: whether column ``k`` is a distractor for row ``b``; all when ``None``).

        ``margin``: the mean hinge ``max(0, m + c_Z - c_A)`` over the valid pairs. ``softmax``: the mean
        over rows with at least one distractor of ``-log softmax([c_A, c_Z...] / T)[0]``."""
        if valid is None:
            valid = torch.ones_like(negative_scores, dtype=torch.bool)
        if self.config.loss_type == "softmax":
            temperature = self.config.loss_temperature
            neg = negative_scores.float().masked_fill(~valid, float("-inf")) / temperature
            logits = torch.cat([scores.float().unsqueeze(1) / temperature, neg], dim=1)
            rows = valid.any(dim=1)
            per_row = torch.logsumexp(logits, dim=1) - logits[:, 0]
            return (per_row * rows).sum() / rows.sum().clamp(min=1)
        hinge = torch.relu(self.config.margin + negative_scores - scores.unsqueeze(1))
        weight = valid.to(hinge.dtype)
        return (hinge * weight).sum() / weight.sum().clamp(min=1.0)

    def _forward_in_batch(self, H, umask, persona_input_ids, persona_attention_mask, neg_mask, return_loss, return_dict):
        """Score every side against every persona of the batch; ``neg_mask[i, j]`` marks persona ``j`` as a
        valid distractor for side ``i`` (another dialogue's persona, not equal to side ``i``'s own)."""
        batch = H.shape[0]
        if neg_mask.shape != (batch, batch):
            raise ValueError(
                f"ReceiverModel.forward: in_batch_negative_mask must have shape [{batch}, {batch}], got {tuple(neg_mask.shape)}"
            )
        neg_mask = neg_mask.to(torch.bool) & ~torch.eye(batch, dtype=torch.bool, device=neg_mask.device)
        W, pmask = self._encode_slots(persona_input_ids, persona_attention_mask, "persona")  # [B, L, d]
        N, L = H.shape[1], W.shape[1]
        U = relevance_grid(H.unsqueeze(1), W.unsqueeze(0))  # [B (sides), B (personas), N, L]
        U = U * (umask[:, None, :, None] & pmask[None, :, None, :]).to(U.dtype)
        flat_scores, flat_utt, flat_w = aggregate(
            U.reshape(batch * batch, N, L),
            umask.unsqueeze(1).expand(batch, batch, N).reshape(batch * batch, N),
            pmask.unsqueeze(0).expand(batch, batch, L).reshape(batch * batch, L),
            self.tau,
        )
        pairwise = flat_scores.reshape(batch, batch)
        scores = pairwise.diagonal()
        loss = None
        if return_loss:
            rank_loss = self._ranking_loss(scores, pairwise, neg_mask)
            used = (neg_mask | torch.eye(batch, dtype=torch.bool, device=neg_mask.device)).to(U.dtype)
            l1 = (U.abs().sum(dim=(-1, -2)) * used).sum() / used.sum()
            loss = rank_loss + self.config.l1_weight * l1
        idx = torch.arange(batch, device=H.device)
        output = ReceiverOutput(
            loss=loss,
            scores=scores,
            pairwise_scores=pairwise,
            relevance=U[idx, idx],
            weights=flat_w.reshape(batch, batch, N, L)[idx, idx],
            utterance_scores=flat_utt.reshape(batch, batch, N)[idx, idx],
            utterance_embeddings=H,
            persona_embeddings=W,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------ text-level API
    def _get_tokenizer(self, tokenizer=None):
        if tokenizer is not None:
            return tokenizer
        if self.tokenizer is None:
            source = self.name_or_path or self.config.name_or_path
            # AutoTokenizer reads config.json; make our model type known so it does not ask for remote code.
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            if self.config.model_type not in CONFIG_MAPPING:
                AutoConfig.register(self.config.model_type, type(self.config))
            try:
                # with our config passed, AutoTokenizer does not load config.json (and ask about its remote code)
                self.tokenizer = AutoTokenizer.from_pretrained(source, config=self.config) if source else None
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"ReceiverModel: no tokenizer could be loaded from {source!r} ({err}); pass `tokenizer=` "
                    "or set `model.tokenizer`"
                ) from err
            if self.tokenizer is None:
                raise ValueError("ReceiverModel: no tokenizer attached; pass `tokenizer=` or set `model.tokenizer`")
        return self.tokenizer

    @torch.no_grad()
    def encode_texts(
        self, texts: Sequence[str], kind: str = "utterance", tokenizer=None, batch_size: int = 64
    ) -> torch.Tensor:
        """Pooled vectors [len(texts), d] for a list of strings, batched by similar length."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"ReceiverModel.encode_texts: item {i} is {type(t).__name__}, expected str")
        if batch_size < 1:
            raise ValueError(f"ReceiverModel.encode_texts: batch_size must be >= 1, got {batch_size}")
        tok = self._get_tokenizer(tokenizer)
        max_len = self.config.max_persona_length if kind == "persona" else self.config.max_utterance_length
        out = torch.zeros(len(texts), self.config.encoder.hidden_size, device=self.device, dtype=self.dtype)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=max_len,
                    return_tensors="pt",
                )
                vec = self.encode(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device), kind=kind)
                out[torch.tensor(idx, device=self.device)] = vec.to(out.dtype)
        finally:
            self.train(was_training)
        return out

    @torch.no_grad()
    def score_grids(self, utterances: Sequence[Sequence[str]], personas: Sequence[Sequence[str]], tokenizer=None, batch_size: int = 64):
        """Relevance grids for a batch of (utterances, persona) pairs with one encoder pass per side.

        Identical strings are encoded once. Returns ``(U [B, N, L], utterance_mask [B, N], persona_mask [B, L])``.
        """
        utterances = [_as_list(u, "utterances", i) for i, u in enumerate(utterances)]
        personas = [_as_list(p, "persona", i) for i, p in enumerate(personas)]
        if len(utterances) != len(personas):
            raise ValueError(
                f"ReceiverModel: got {len(utterances)} utterance lists but {len(personas)} personas; expected one persona per item"
            )
        u_vocab = {t: None for seq in utterances for t in seq}
        p_vocab = {t: None for seq in personas for t in seq}
        u_index = {t: i for i, t in enumerate(u_vocab)}
        p_index = {t: i for i, t in enumerate(p_vocab)}
        u_vec = self.encode_texts(list(u_vocab), "utterance", tokenizer=tokenizer, batch_size=batch_size)
        p_vec = self.encode_texts(list(p_vocab), "persona", tokenizer=tokenizer, batch_size=batch_size)
        return grids_from_vectors(utterances, personas, u_vec, u_index, p_vec, p_index)

    def score_batch(
        self, utterances: Sequence[Sequence[str]], personas: Sequence[Sequence[str]], tokenizer=None, batch_size: int = 64
    ) -> torch.Tensor:
        """Cumulative Receiver scores ``c`` [B] for a batch of (utterances of one speaker, persona) pairs."""
        U, umask, pmask = self.score_grids(utterances, personas, tokenizer=tokenizer, batch_size=batch_size)
        return aggregate(U, umask, pmask, self.tau)[0]

    def utterance_scores_batch(
        self, utterances: Sequence[Sequence[str]], personas: Sequence[Sequence[str]], tokenizer=None, batch_size: int = 64
    ) -> list:
        """Per-utterance scores ``Agg(U_n)`` (paper eq. 15) for a batch; a list of lists of floats."""
        U, umask, pmask = self.score_grids(utterances, personas, tokenizer=tokenizer, batch_size=batch_size)
        per_utt = aggregate(U, umask, pmask, self.tau)[1]
        return [per_utt[i, : len(u)].tolist() for i, u in enumerate(utterances)]

    def score(self, utterances: Union[str, Sequence[str]], persona: Sequence[str], tokenizer=None) -> float:
        """Receiver score of one speaker's utterances (a string or a list) against one persona."""
        if isinstance(utterances, str):
            utterances = [utterances]
        return float(self.score_batch([utterances], [persona], tokenizer=tokenizer)[0])

    def relevance(self, utterances: Union[str, Sequence[str]], persona: Sequence[str], tokenizer=None) -> torch.Tensor:
        """The relevance grid ``U`` [N, L] (utterances × persona sentences) for one pair."""
        if isinstance(utterances, str):
            utterances = [utterances]
        U, _, _ = self.score_grids([utterances], [persona], tokenizer=tokenizer)
        return U[0, : len(utterances), : len(persona)].detach().cpu()


def grids_from_vectors(utterances, personas, u_vec, u_index, p_vec, p_index):
    """Assemble padded ``H`` / ``W`` from pre-computed sentence vectors and return ``(U, umask, pmask)``."""
    B = len(utterances)
    N = max([len(u) for u in utterances] + [1])
    L = max([len(p) for p in personas] + [1])
    device = u_vec.device if u_vec.numel() else p_vec.device
    d = u_vec.shape[-1] if u_vec.numel() else p_vec.shape[-1]
    H = torch.zeros(B, N, d, device=device, dtype=u_vec.dtype)
    W = torch.zeros(B, L, d, device=device, dtype=p_vec.dtype)
    umask = torch.zeros(B, N, dtype=torch.bool, device=device)
    pmask = torch.zeros(B, L, dtype=torch.bool, device=device)
    for b, (utts, pers) in enumerate(zip(utterances, personas)):
        if utts:
            H[b, : len(utts)] = u_vec[[u_index[t] for t in utts]]
            umask[b, : len(utts)] = True
        if pers:
            W[b, : len(pers)] = p_vec[[p_index[t] for t in pers]]
            pmask[b, : len(pers)] = True
    U = relevance_grid(H, W) * (umask[:, :, None] & pmask[:, None, :]).to(H.dtype)
    return U, umask, pmask


def _as_list(value, what, index):
    if isinstance(value, str):
        raise TypeError(
            f"ReceiverModel: {what} #{index} is a single string; expected a list of strings (wrap it in a list)"
        )
    value = list(value)
    for j, t in enumerate(value):
        if not isinstance(t, str):
            raise TypeError(f"ReceiverModel: {what} #{index} item {j} is {type(t).__name__}, expected str")
    return value


def _pad_to(x: torch.Tensor, sentences: int, tokens: int) -> torch.Tensor:
    """Zero-pad the last two dims of ``x`` to ``(sentences, tokens)``."""
    pad_t = tokens - x.shape[-1]
    pad_s = sentences - x.shape[-2]
    if pad_t == 0 and pad_s == 0:
        return x
    return nn.functional.pad(x, (0, pad_t, 0, pad_s), value=0)


ReceiverConfig.register_for_auto_class()
ReceiverModel.register_for_auto_class("AutoModel")

__all__ = [
    "ReceiverModel",
    "ReceiverPreTrainedModel",
    "ReceiverOutput",
    "aggregate",
    "masked_mean_pool",
    "relevance_grid",
    "grids_from_vectors",
]
