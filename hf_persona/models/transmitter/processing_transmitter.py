"""Input formatting for the P2Bot Transmitter: persona + dialogue history -> token ids.

A sequence reads::

    <persona> p_1 p_2 ... p_L <partner> x_1 <self> x_2 ... <partner> x_n <self> response <eos> <nup>

``<self>`` marks the speaker whose persona is given (the one who answers), ``<partner>`` the other
one. The response is followed by ``<eos>`` (where generation stops) and ``<nup>``, whose last-layer
hidden state feeds the next-utterance-prediction (NUP) head. Only the response and ``<eos>`` carry
language-modelling labels.

A tokenizer with a chat template (an instruction-tuned causal LM such as SmolLM2-Instruct) gets its
own conversation format instead, so the pretrained LM starts from what it already knows::

    <system>  CHAT_SYSTEM_PROMPT + "Your persona: p_1 p_2 ... p_L"
    <user>    x_n-2            (the partner speaks as the user; speakers alternate backwards
    <assistant> x_n-1           from the utterance being answered, which is always the user's)
    <user>    x_n
    <assistant>                 (generation prompt)  response <end-of-turn> <nup>

rendered by ``tokenizer.apply_chat_template``; the response is the plain text (no leading space)
and ends with the tokenizer's end-of-turn token (its ``eos_token``). ``<persona>``, ``<self>`` and
``<partner>`` are still added to the vocabulary but unused; ``<nup>`` closes every sequence.

The helpers are plain Python (``torch`` imported lazily); :class:`TransmitterProcessor` wraps them
for users of plain transformers. This module travels inside ``trust_remote_code`` checkpoints next
to the modeling file.
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
#: System message of the chat format (the persona sentences follow it).
CHAT_SYSTEM_PROMPT = ("You are chatting with someone you have just met. Stay in character, be friendly and "
                      "curious, and answer in one or two short sentences.")


def uses_chat_format(tokenizer) -> bool:
    """Whether sequences use the tokenizer's chat template (see the module docstring)."""
    return bool(getattr(tokenizer, "chat_template", None))


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
    if uses_chat_format(tokenizer):  # a reply starts its own turn: no leading space
        return list(tokenizer.encode(text.strip(), add_special_tokens=False))
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
    if uses_chat_format(tokenizer):
        return _chat_context_ids(tokenizer, persona, history, max_context_tokens, max_persona_tokens)
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


def _render_chat(tokenizer, system: str, turns: list) -> list:
    """Token ids of the chat: ``system`` then ``turns`` (oldest first, the last one the user's),
    ending with the assistant's generation prompt."""
    n = len(turns)
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user" if (n - 1 - i) % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def _chat_context_ids(tokenizer, persona, history, max_context_tokens, max_persona_tokens) -> list:
    """The chat-format context (module docstring). The persona keeps its first sentences within
    ``min(max_persona_tokens, max_context_tokens // 2)`` tokens; the oldest turns go first when the
    whole exceeds ``max_context_tokens``, then the head of the utterance being answered."""
    for sentence in persona:
        if not isinstance(sentence, str):
            raise TypeError(f"expected a string persona sentence, got {type(sentence).__name__}")
    persona_budget = min(max_persona_tokens, max_context_tokens // 2)
    kept, used = [], 0
    for sentence in persona:
        n = len(tokenizer.encode(" " + sentence.strip(), add_special_tokens=False))
        if used + n > persona_budget:
            break
        kept.append(sentence.strip())
        used += n
    system = CHAT_SYSTEM_PROMPT + (" Your persona: " + " ".join(kept) if kept else "")
    for utt in history:
        if not isinstance(utt, str):
            raise TypeError(f"expected a string utterance, got {type(utt).__name__}")
    turns = [u.strip() for u in history]
    ids = _render_chat(tokenizer, system, turns)
    while len(ids) > max_context_tokens and len(turns) > 1:
        turns = turns[1:]
        ids = _render_chat(tokenizer, system, turns)
    if len(ids) > max_context_tokens and turns:  # cut the head of the utterance being answered
        words = list(tokenizer.encode(turns[0], add_special_tokens=False))
        cut = len(ids) - max_context_tokens
        while cut < len(words) and len(ids) > max_context_tokens:
            ids = _render_chat(tokenizer, system, [tokenizer.decode(words[cut:], skip_special_tokens=True)])
            cut += max(1, len(ids) - max_context_tokens)
    if len(ids) > max_context_tokens:
        raise ValueError(f"max_context_tokens={max_context_tokens} cannot hold the chat frame and the persona "
                         f"({len(ids)} tokens); raise it")
    return ids


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


# ---------------------------------------------------------------------------------------------
# A processor for users of plain transformers (AutoProcessor, trust_remote_code=True)
# ---------------------------------------------------------------------------------------------
from transformers import BatchFeature, ProcessorMixin  # noqa: E402


def _batch_of_lists(value, name):
    """(batch, single): one list of strings becomes a batch of one."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of strings or a list of such lists, got {type(value).__name__}")
    items = list(value)
    if not items or all(isinstance(v, str) for v in items):
        return [items], True
    return [_check_list(name, v) for v in items], False


class TransmitterProcessor(ProcessorMixin):
    """Persona + dialogue history (raw text) -> the tensors the Transmitter takes.

    ``processor(persona, history)`` (one speaker's persona sentences and the history, whose last
    utterance is the partner's; or lists of both for a batch) returns left-padded ``input_ids`` and
    ``attention_mask`` ending with ``<self>``, ready for ``model.generate(**inputs,
    eos_token_id=processor.eos_token_id, pad_token_id=processor.pad_token_id)``.
    ``processor(persona, history, responses=[...])`` returns right-padded ``input_ids``,
    ``attention_mask``, ``labels`` and ``cls_index`` for ``model(**inputs)`` (language-modelling loss and
    the next-utterance-prediction logits ``nup_logits``). :meth:`decode_responses` cuts the prompt off
    ``generate``'s output and decodes up to ``<eos>``.
    """

    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, max_context_tokens: int = 256, max_response_tokens: int = 32, **kwargs):
        self.max_context_tokens = int(max_context_tokens)
        self.max_response_tokens = int(max_response_tokens)
        super().__init__(tokenizer, **kwargs)

    @staticmethod
    def settings_from_config(config) -> dict:
        """The processor settings matching a Transmitter config (used when a checkpoint is saved)."""
        return {"max_context_tokens": int(getattr(config, "max_context_tokens", 256)),
                "max_response_tokens": int(getattr(config, "max_response_tokens", 32))}

    @property
    def eos_token_id(self) -> int:
        return special_token_ids(self.tokenizer)["eos"]

    @property
    def pad_token_id(self) -> int:
        return special_token_ids(self.tokenizer)["pad"]

    def __call__(self, persona=None, history=None, responses=None, return_tensors: str = "pt",
                 **kwargs) -> BatchFeature:
        if kwargs:
            raise TypeError(f"TransmitterProcessor got unexpected arguments: {', '.join(sorted(kwargs))}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"TransmitterProcessor returns torch tensors (return_tensors='pt'), got {return_tensors!r}")
        if persona is None or history is None:
            raise ValueError("TransmitterProcessor needs persona and history")
        personas, single = _batch_of_lists(persona, "persona")
        histories, _ = _batch_of_lists(history, "history") if not single else ([_check_list("history", history)], True)
        if len(personas) != len(histories):
            raise ValueError(f"got {len(personas)} personas but {len(histories)} histories")
        ids = special_token_ids(self.tokenizer)
        if responses is None:
            rows = [{"input_ids": build_context_ids(self.tokenizer, p, h, self.max_context_tokens)}
                    for p, h in zip(personas, histories)]
            batch = pad_batch(rows, ids["pad"], padding_side="left")
            return BatchFeature(data={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        replies = [responses] if single and isinstance(responses, str) else list(responses)
        if len(replies) != len(personas):
            raise ValueError(f"got {len(replies)} responses for {len(personas)} dialogues")
        rows = [build_example(self.tokenizer, p, h, r, self.max_context_tokens, self.max_response_tokens)
                for p, h, r in zip(personas, histories, replies)]
        batch = pad_batch(rows, ids["pad"])
        return BatchFeature(data={k: batch[k] for k in ("input_ids", "attention_mask", "labels", "cls_index")})

    def decode_responses(self, sequences, inputs) -> list:
        """The response text of each row of ``generate``'s output (the prompt ``inputs`` cut off)."""
        ids = special_token_ids(self.tokenizer)
        start = int(inputs["input_ids"].shape[1])
        out = []
        for row in (sequences.tolist() if hasattr(sequences, "tolist") else sequences):
            reply = []
            for tok in row[start:]:
                if tok == ids["eos"] or (tok == ids["pad"] and ids["pad"] != ids["eos"]):
                    break
                reply.append(tok)
            out.append(self.tokenizer.decode(reply, skip_special_tokens=True).strip())
        return out

    @property
    def model_input_names(self) -> list:
        return ["input_ids", "attention_mask"]
