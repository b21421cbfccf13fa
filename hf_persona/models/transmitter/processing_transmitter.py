"""Input formatting for the P2Bot Transmitter: persona + dialogue history -> token ids.

A sequence reads::

    <persona> p_1 p_2 ... p_L <partner> x_1 <self> x_2 ... <partner> x_n <self> response <eos> <nup>

``<self>`` marks the speaker whose persona is given (the one who answers), ``<partner>`` the other
one. The response is followed by ``<eos>`` (where generation stops) and ``<nup>``, whose last-layer
hidden state feeds the next-utterance-prediction (NUP) head. Only the response and ``<eos>`` carry
language-modelling labels.

This module imports only ``transformers``-free Python so it travels inside ``trust_remote_code``
checkpoints next to the modeling file.
"""

from __future__ import annotations

from typing import Sequence

PERSONA_TOKEN = "<persona>"
SELF_TOKEN = "<self>"
PARTNER_TOKEN = "<partner>"
NUP_TOKEN = "<nup>"
EOS_TOKEN = "<eos>"
SPEAKER_TOKENS = (PERSONA_TOKEN, SELF_TOKEN, PARTNER_TOKEN, NUP_TOKEN)
IGNORE_INDEX = -100


def prepare_tokenizer(tokenizer) -> int:
    """Add the Transmitter's special tokens (and an end-of-sequence / padding token when missing).

    Returns how many tokens were added; resize the model's embeddings to ``len(tokenizer)`` after.
    Idempotent: a tokenizer that already has them gains nothing.
    """
    special = {}
    if tokenizer.eos_token is None:
        special["eos_token"] = EOS_TOKEN
    existing = set(getattr(tokenizer, "additional_special_tokens", None) or [])
    vocab = tokenizer.get_vocab()
    extra = [t for t in SPEAKER_TOKENS if t not in vocab and t not in existing]
    added = 0
    if special:
        added += tokenizer.add_special_tokens(special)
    if extra:
        added += tokenizer.add_special_tokens({"additional_special_tokens": extra},
                                              replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def special_token_ids(tokenizer) -> dict:
    """Ids of the special tokens, checked to exist (call :func:`prepare_tokenizer` first)."""
    ids = {}
    for name, tok in (("persona", PERSONA_TOKEN), ("self", SELF_TOKEN), ("partner", PARTNER_TOKEN),
                      ("nup", NUP_TOKEN)):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(
                f"tokenizer has no {tok!r} token; call prepare_tokenizer(tokenizer) and resize the model's "
                "embeddings first"
            )
        ids[name] = tid
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("tokenizer needs eos and pad tokens; call prepare_tokenizer(tokenizer) first")
    ids["eos"] = tokenizer.eos_token_id
    ids["pad"] = tokenizer.pad_token_id
    return ids


def _encode(tokenizer, text: str) -> list:
    if not isinstance(text, str):
        raise TypeError(f"expected a string utterance or persona sentence, got {type(text).__name__}")
    # the leading space gives byte-level BPE (GPT-2) word-initial tokens; WordPiece ignores it
    return list(tokenizer.encode(" " + text.strip(), add_special_tokens=False))


def _check_list(name: str, value) -> list:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}")
    return list(value)


def build_context_ids(tokenizer, persona, history, max_context_tokens: int = 256,
                      max_persona_tokens: int = 96) -> list:
    """Token ids of ``persona`` + ``history`` ending with ``<self>`` (the answerer's turn starts).

    ``history`` is in speaking order and its LAST utterance is the partner's (the one being
    answered); speakers alternate backwards from there. An empty history means the answerer opens.
    The oldest turns are dropped first when the context exceeds ``max_context_tokens``; the persona
    is cut to ``max_persona_tokens``.
    """
    persona = _check_list("persona", persona)
    history = _check_list("history", history)
    if max_context_tokens < 8:
        raise ValueError(f"max_context_tokens must be at least 8, got {max_context_tokens}")
    ids = special_token_ids(tokenizer)
    persona_ids = [ids["persona"]]
    for sentence in persona:
        persona_ids.extend(_encode(tokenizer, sentence))
    persona_ids = persona_ids[: min(max_persona_tokens, max_context_tokens // 2)]
    budget = max_context_tokens - len(persona_ids) - 1
    turns = []
    for back, utt in enumerate(reversed(history)):
        speaker = ids["partner"] if back % 2 == 0 else ids["self"]
        turn = [speaker] + _encode(tokenizer, utt)
        if len(turn) > budget:
            if not turns and budget > 1:  # keep the tail of the utterance being answered
                turns.append([speaker] + turn[1:][-(budget - 1):])
            break
        turns.append(turn)
        budget -= len(turn)
    out = list(persona_ids)
    for turn in reversed(turns):
        out.extend(turn)
    out.append(ids["self"])
    return out


def encode_response(tokenizer, response: str, max_response_tokens: int = 32) -> list:
    """Response token ids followed by ``<eos>`` (truncated to ``max_response_tokens`` before it)."""
    ids = special_token_ids(tokenizer)
    return _encode(tokenizer, response)[:max_response_tokens] + [ids["eos"]]


def build_example(tokenizer, persona, history, response, max_context_tokens: int = 256,
                  max_response_tokens: int = 32, with_labels: bool = True) -> dict:
    """``input_ids`` (context + response + ``<eos>`` + ``<nup>``), ``labels`` and ``cls_index``.

    ``labels`` copy the response and ``<eos>`` ids and are ``-100`` elsewhere (all ``-100`` when
    ``with_labels`` is false, as for a distractor). ``cls_index`` is the position of ``<nup>``.
    """
    ids = special_token_ids(tokenizer)
    context = build_context_ids(tokenizer, persona, history, max_context_tokens)
    resp = encode_response(tokenizer, response, max_response_tokens)
    input_ids = context + resp + [ids["nup"]]
    if with_labels:
        labels = [IGNORE_INDEX] * len(context) + resp + [IGNORE_INDEX]
    else:
        labels = [IGNORE_INDEX] * len(input_ids)
    return {"input_ids": input_ids, "labels": labels, "cls_index": len(input_ids) - 1,
            "context_length": len(context)}


def pad_batch(examples, pad_token_id: int, padding_side: str = "right") -> dict:
    """Pad a list of :func:`build_example` dicts into tensors (``torch`` imported lazily)."""
    import torch

    if not examples:
        raise ValueError("cannot pad an empty batch")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e["input_ids"]) for e in examples)
    input_ids, mask, labels, cls_index = [], [], [], []
    for e in examples:
        n = len(e["input_ids"])
        pad = width - n
        if padding_side == "right":
            input_ids.append(list(e["input_ids"]) + [pad_token_id] * pad)
            mask.append([1] * n + [0] * pad)
            labels.append(list(e.get("labels", [IGNORE_INDEX] * n)) + [IGNORE_INDEX] * pad)
            cls_index.append(e.get("cls_index", n - 1))
        else:
            input_ids.append([pad_token_id] * pad + list(e["input_ids"]))
            mask.append([0] * pad + [1] * n)
            labels.append([IGNORE_INDEX] * pad + list(e.get("labels", [IGNORE_INDEX] * n)))
            cls_index.append(e.get("cls_index", n - 1) + pad)
    batch = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "cls_index": torch.tensor(cls_index, dtype=torch.long),
    }
    if "nup_label" in examples[0]:
        batch["nup_labels"] = torch.tensor([e["nup_label"] for e in examples], dtype=torch.long)
    return batch
