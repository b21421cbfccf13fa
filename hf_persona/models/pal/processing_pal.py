"""The ONE input format of PAL, shared by training and inference.

Imports only torch and transformers (this file ships with PAL checkpoints).

Encoder input (dialogue): the turns, oldest first, each as ``speaker marker [+ strategy token] text``
(seeker turns start with ``[Seeker]``; supporter turns with ``[Supporter]`` followed by the
turn's strategy token), joined with the tokenizer's separator, ending with the supporter cue
``[Supporter]`` (the model answers as the supporter), wrapped in the tokenizer's own special
tokens (``[CLS] ... [SEP]`` for BERT). Too long: the oldest tokens are dropped (the end of the
dialogue and the cue are always kept).

Persona input: the persona sentences joined with the separator, wrapped the same way. No
persona sentence yet (the first seeker turns): the placeholder token ``[No persona]``. Too long
for ``max_persona_length``: the OLDEST sentences are dropped whole (new inferences accumulate at
the end and are kept); a single sentence longer than the limit keeps its first tokens.
``persona_truncated`` in the returned dict says whether anything was dropped.

Target: ``labels = [strategy token] + response tokens + eos`` (the response truncated to fit
``max_target_length``).

Bad input: a history without any seeker turn, an unknown speaker, an unknown strategy label,
lengths that do not match, an empty / whitespace-only response, a response without its
strategy: ``ValueError`` naming the problem and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .configuration_pal import DEFAULT_CAUSAL_SYSTEM_PROMPT, STRATEGY_NAMES, STRATEGY_TOKENS

SEEKER_TOKEN = "[Seeker]"
SUPPORTER_TOKEN = "[Supporter]"
PERSONA_PLACEHOLDER = "[No persona]"
PAL_SPECIAL_TOKENS = (*STRATEGY_TOKENS, SEEKER_TOKEN, SUPPORTER_TOKEN, PERSONA_PLACEHOLDER)

SEEKER_NAMES = ("usr", "seeker", "user")
SUPPORTER_NAMES = ("sys", "supporter", "system")


def add_pal_tokens(tokenizer) -> int:
    """Add the eight strategy tokens, the two speaker markers and the persona placeholder as
    special tokens (never split, never lower-cased). Idempotent; returns how many were new.
    Resize the model's embeddings afterwards (``from_backbone`` does it)."""
    vocab = tokenizer.get_vocab()
    new = [t for t in PAL_SPECIAL_TOKENS if t not in vocab]
    if not new:
        return 0
    return tokenizer.add_tokens(new, special_tokens=True)


def strategy_token_id(tokenizer, strategy: str) -> int:
    """Vocabulary id of a strategy given by name (case-insensitive, brackets optional)."""
    token = STRATEGY_TOKENS[_strategy_index(strategy)]
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no token {token!r}; call add_pal_tokens(tokenizer) first")
    return tid


def _pal_token_ids(tokenizer) -> dict:
    """``{PAL token: id}``; raises when the tokenizer has not been through :func:`add_pal_tokens`.
    (``convert_tokens_to_ids`` is cheap; a fast tokenizer rebuilds ``get_vocab()`` on every call.)"""
    ids = tokenizer.convert_tokens_to_ids(list(PAL_SPECIAL_TOKENS))
    unk = tokenizer.unk_token_id
    missing = [t for t, i in zip(PAL_SPECIAL_TOKENS, ids) if i is None or (unk is not None and i == unk)]
    if missing:
        raise ValueError(f"the tokenizer lacks the PAL tokens {missing}; call add_pal_tokens(tokenizer) first")
    return dict(zip(PAL_SPECIAL_TOKENS, ids))


def _strategy_index(strategy) -> int:
    if isinstance(strategy, str):
        key = strategy.strip()
        if key.startswith("[") and key.endswith("]"):
            key = key[1:-1].strip()
        for i, name in enumerate(STRATEGY_NAMES):
            if name.lower() == key.lower():
                return i
    raise ValueError(f"unknown strategy label {strategy!r}; expected one of {list(STRATEGY_NAMES)}")


def _speaker_role(speaker) -> str:
    key = str(speaker).strip().lower()
    if key in SEEKER_NAMES:
        return "seeker"
    if key in SUPPORTER_NAMES:
        return "supporter"
    raise ValueError(
        f"unknown speaker {speaker!r}; expected a seeker name {list(SEEKER_NAMES)} or a supporter name {list(SUPPORTER_NAMES)}"
    )


def special_frame(tokenizer):
    """Ids the tokenizer puts before and after a single text (e.g. [CLS] / [SEP] for BERT)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def _separator_id(tokenizer) -> int:
    for tid in (tokenizer.sep_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    raise ValueError("the tokenizer has neither a sep nor an eos token to separate turns")


def _ids(tokenizer, text: str) -> list:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def build_pal_example(
    history_utterances,
    history_speakers,
    history_strategies=None,
    persona_sentences=None,
    response: str | None = None,
    strategy: str | None = None,
    tokenizer=None,
    max_source_length: int = 512,
    max_persona_length: int = 128,
    max_target_length: int = 50,
) -> dict:
    """Build one PAL example.

    Args:
        history_utterances: the dialogue so far, oldest first (``list[str]``).
        history_speakers: one speaker per utterance: ``"usr"``/``"seeker"`` or ``"sys"``/``"supporter"``.
        history_strategies: one label per utterance (``""`` or None for seeker turns; an ESConv
            strategy name for supporter turns). None: supporter turns get no strategy token.
        persona_sentences: the seeker persona inferred so far (``list[str]``; empty/None = placeholder).
        response: the supporter response to learn (None at inference).
        strategy: the strategy of ``response`` (required with a response; optional otherwise).
        tokenizer: a tokenizer that went through :func:`add_pal_tokens`.
        max_source_length / max_persona_length / max_target_length: token limits (including
            the tokenizer's special tokens; labels include the strategy token and eos).

    Returns:
        ``{"input_ids", "persona_input_ids", "persona_truncated"}`` plus ``"labels"`` and
        ``"strategy_id"`` (0-7, index into ``STRATEGY_NAMES``) when a response is given, or
        ``"strategy_id"`` alone when only ``strategy`` is given.
    """
    if tokenizer is None:
        raise ValueError("build_pal_example needs the tokenizer (after add_pal_tokens)")
    special_ids = _pal_token_ids(tokenizer)
    utterances = list(history_utterances)
    speakers = list(history_speakers)
    if len(utterances) != len(speakers):
        raise ValueError(
            f"history_utterances has {len(utterances)} turns but history_speakers has {len(speakers)}; give one speaker per turn"
        )
    strategies = [None] * len(utterances) if history_strategies is None else list(history_strategies)
    if len(strategies) != len(utterances):
        raise ValueError(
            f"history_strategies has {len(strategies)} labels for {len(utterances)} turns; give one per turn ('' for seeker turns)"
        )
    roles = [_speaker_role(s) for s in speakers]
    if "seeker" not in roles:
        raise ValueError(
            "the dialogue history has no seeker turn; PAL answers a seeker, so the history needs at least one "
            f"turn by {list(SEEKER_NAMES)}"
        )
    for name, limit in (("max_source_length", max_source_length), ("max_persona_length", max_persona_length)):
        if limit < 4:
            raise ValueError(f"{name} must be at least 4 tokens, got {limit}")
    if max_target_length < 3:
        raise ValueError(f"max_target_length must be at least 3 (strategy, one token, eos), got {max_target_length}")

    prefix, suffix = special_frame(tokenizer)
    sep = _separator_id(tokenizer)
    seeker_id, supporter_id = special_ids[SEEKER_TOKEN], special_ids[SUPPORTER_TOKEN]

    body: list = []
    for text, role, label in zip(utterances, roles, strategies):
        if not isinstance(text, str):
            raise TypeError(f"utterances must be strings, got {type(text).__name__}")
        turn = [seeker_id] if role == "seeker" else [supporter_id]
        if role == "supporter" and label:
            turn.append(strategy_token_id(tokenizer, label))
        elif role == "seeker" and label:
            raise ValueError(f"a seeker turn carries the strategy label {label!r}; only supporter turns have strategies")
        turn.extend(_ids(tokenizer, text))
        turn.append(sep)
        body.extend(turn)
    body.append(supporter_id)  # the cue: the next turn is the supporter's
    room = max_source_length - len(prefix) - len(suffix)
    if len(body) > room:
        body = body[len(body) - room :]  # keep the most recent tokens
    input_ids = prefix + body + suffix

    if isinstance(persona_sentences, str) or (
        persona_sentences is not None and any(not isinstance(s, str) for s in persona_sentences)
    ):
        raise TypeError("persona_sentences must be a list of strings (one persona sentence each)")
    sentences = [s.strip() for s in (persona_sentences or []) if s.strip()]
    room = max_persona_length - len(prefix) - len(suffix)
    truncated = False
    if sentences:
        pieces = [_ids(tokenizer, s) for s in sentences]
        kept: list = []
        used = 0
        for piece in reversed(pieces):  # newest first
            cost = len(piece) + (1 if kept else 0)
            if used + cost > room:
                if not kept:  # a single sentence longer than the limit: keep its beginning
                    kept.insert(0, piece[:room])
                truncated = True
                break
            kept.insert(0, piece)
            used += cost
        persona_body: list = []
        for i, piece in enumerate(kept):
            if i:
                persona_body.append(sep)
            persona_body.extend(piece)
    else:
        persona_body = [special_ids[PERSONA_PLACEHOLDER]]
    example = {
        "input_ids": input_ids,
        "persona_input_ids": prefix + persona_body + suffix,
        "persona_truncated": truncated,
    }

    if response is not None:
        if not isinstance(response, str) or not response.strip():
            raise ValueError("the response is empty; a training example needs a non-empty supporter response")
        if strategy is None:
            raise ValueError(
                f"a response needs its strategy (labels = [strategy] + response + eos); expected one of {list(STRATEGY_NAMES)}"
            )
    if strategy is not None:
        index = _strategy_index(strategy)
        example["strategy_id"] = index
        if response is not None:
            eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            if eos is None:
                raise ValueError("the tokenizer has neither a sep nor an eos token to end the response")
            words = _ids(tokenizer, response.strip())[: max_target_length - 2]
            example["labels"] = [strategy_token_id(tokenizer, strategy)] + words + [eos]
    return example


def _chat_messages(system_prompt, utterances, roles, strategies):
    messages = [{"role": "system", "content": system_prompt}]
    for text, role, label in zip(utterances, roles, strategies):
        text = " ".join(text.split())
        if role == "supporter":
            messages.append({"role": "assistant", "content": f"{STRATEGY_TOKENS[_strategy_index(label)]} {text}" if label else text})
        else:
            messages.append({"role": "user", "content": text})
    return messages


def build_pal_causal_example(
    history_utterances,
    history_speakers,
    history_strategies=None,
    persona_sentences=None,
    response: str | None = None,
    strategy: str | None = None,
    tokenizer=None,
    system_prompt: str = DEFAULT_CAUSAL_SYSTEM_PROMPT,
    max_source_length: int = 512,
    max_persona_length: int = 128,
    max_target_length: int = 50,
) -> dict:
    """One example of PAL over a causal LM (:class:`PALForCausalLM`).

    The prompt is the tokenizer's chat template over ``system_prompt``, the seeker turns as
    ``user`` and the supporter turns as ``assistant`` (each opened by its strategy token when
    known), ending with the opening of the assistant turn. ``max_source_length`` is the dialogue
    window: the prompt's tokens after the system turn (which comes on top, so a Hard Prompt persona
    in it does not shorten the window). Too long, the oldest turns are dropped first (the last turn
    always stays; cut from its start if needed).
    The reply is ``[strategy] + response + eos`` (eos = the tokenizer's end-of-turn token).

    Returns ``input_ids`` (prompt, plus the reply when ``response`` is given), ``prompt_length``,
    ``persona_input_ids`` and ``persona_truncated`` (exactly as :func:`build_pal_example`), and
    with a response ``labels`` (-100 over the prompt) and ``strategy_id``. Arguments and errors
    are those of :func:`build_pal_example`; the tokenizer needs a chat template and an eos token.
    """
    base = build_pal_example(history_utterances, history_speakers, history_strategies, persona_sentences,
                             response, strategy, tokenizer, max_source_length=max_source_length,
                             max_persona_length=max_persona_length, max_target_length=max_target_length)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("build_pal_causal_example needs a tokenizer with a chat template (an instruction-tuned LM)")
    if tokenizer.eos_token_id is None:
        raise ValueError("build_pal_causal_example needs a tokenizer with an eos (end-of-turn) token")
    utterances = [str(u) for u in history_utterances]
    roles = [_speaker_role(s) for s in history_speakers]
    strategies = [None] * len(utterances) if history_strategies is None else list(history_strategies)

    def render(start, first_text=None):
        texts = list(utterances[start:])
        if first_text is not None:
            texts[0] = first_text
        messages = _chat_messages(system_prompt, texts, roles[start:], strategies[start:])
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _ids(tokenizer, text)

    # the window counts the dialogue only: the system turn (a Hard Prompt persona included) comes on top
    system_turn = tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}], tokenize=False)
    limit = max_source_length + len(_ids(tokenizer, system_turn))
    start = 0
    prompt = render(start)
    while len(prompt) > limit and start < len(utterances) - 1:
        start += 1
        prompt = render(start)
    if len(prompt) > limit:
        words = _ids(tokenizer, utterances[start])
        cut = len(prompt) - limit
        if cut >= len(words):
            raise ValueError(f"max_source_length {max_source_length} cannot hold the chat frame around the last turn")
        prompt = render(start, tokenizer.decode(words[cut:], skip_special_tokens=True))
        while len(prompt) > limit and cut < len(words) - 1:  # re-tokenising can merge differently
            cut += 1
            prompt = render(start, tokenizer.decode(words[cut:], skip_special_tokens=True))
    example = {
        "input_ids": list(prompt),
        "prompt_length": len(prompt),
        "persona_input_ids": base["persona_input_ids"],
        "persona_truncated": base["persona_truncated"],
    }
    if "strategy_id" in base:
        example["strategy_id"] = base["strategy_id"]
    if response is not None:
        words = _ids(tokenizer, " ".join(response.split()))[: max_target_length - 2]
        reply = [strategy_token_id(tokenizer, strategy)] + words + [tokenizer.eos_token_id]
        example["input_ids"] = prompt + reply
        example["labels"] = [-100] * len(prompt) + reply
    return example


@dataclass
class PALCollator:
    """Pad a list of :func:`build_pal_example` / :func:`build_pal_causal_example` dicts into tensors.

    Returns ``input_ids``/``attention_mask``, ``persona_input_ids``/``persona_attention_mask``
    (padding with the tokenizer's pad id; the persona always on the right) and, when present,
    ``labels`` padded with -100 and ``strategy_id``. Other keys are dropped. The seq2seq model
    shifts ``labels`` into ``decoder_input_ids`` itself. ``padding_side="left"`` pads the
    dialogue on the left, as a causal LM's prompts need for batched generation.
    """

    tokenizer: object
    label_pad_id: int = -100
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"

    def _pad(self, rows, value, side=None):
        side = side or "right"
        longest = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = ((longest + m - 1) // m) * m
        ids = torch.full((len(rows), longest), value, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            where = slice(0, len(r)) if side == "right" else slice(longest - len(r), longest)
            ids[i, where] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, where] = 1
        return ids, mask

    def __call__(self, features) -> dict:
        if not features:
            raise ValueError("PALCollator got an empty batch")
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"PALCollator padding_side must be 'right' or 'left', got {self.padding_side!r}")
        batch = {}
        batch["input_ids"], batch["attention_mask"] = self._pad([f["input_ids"] for f in features], pad,
                                                                self.padding_side)
        batch["persona_input_ids"], batch["persona_attention_mask"] = self._pad(
            [f["persona_input_ids"] for f in features], pad
        )
        if any("labels" in f for f in features):
            if not all("labels" in f for f in features):
                raise ValueError("some examples of the batch have labels and some do not")
            batch["labels"], _ = self._pad([f["labels"] for f in features], self.label_pad_id, self.padding_side)
        if all("strategy_id" in f for f in features):
            batch["strategy_id"] = torch.tensor([int(f["strategy_id"]) for f in features], dtype=torch.long)
        return batch



# ---------------------------------------------------------------------------------------------
# A processor for users of plain transformers (AutoProcessor, trust_remote_code=True)
# ---------------------------------------------------------------------------------------------
from transformers import BatchFeature, ProcessorMixin  # noqa: E402


def _as_batch(value, name):
    """``value`` (one dialogue's list of strings, or a list of such lists) as a batch of lists;
    returns (batch, True when a single dialogue was given)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of strings (one dialogue) or a list of such lists, got a string")
    items = list(value)
    if not items or all(isinstance(v, str) or v is None for v in items):
        return [items], True
    return [list(v) if v is not None else None for v in items], False


class PALProcessor(ProcessorMixin):
    """Raw dialogue text -> the tensors PAL's ``forward`` and ``generate`` take.

    ``processor(utterances, speakers, strategies=None, persona=None)`` takes one dialogue (lists of
    strings, oldest turn first; speakers ``"usr"``/``"seeker"`` or ``"sys"``/``"supporter"``;
    strategies an ESConv strategy name for supporter turns, ``""`` for seeker turns; ``persona`` the
    seeker's persona sentences, empty for the placeholder) or a batch of them (lists of such lists).
    It returns ``input_ids``, ``attention_mask``, ``persona_input_ids`` and ``persona_attention_mask``
    (a :class:`~transformers.BatchFeature` of tensors), built with :func:`build_pal_example`
    (``causal=False``, PAL over a seq2seq backbone) or :func:`build_pal_causal_example`
    (``causal=True``, the chat prompt with ``system_prompt``, dialogues padded on the left).
    ``responses=`` (with ``response_strategies=``) also returns ``labels`` for training.

    :meth:`decode_responses` turns ``generate``'s output into ``(strategy, text)`` pairs. Saved next to
    PAL checkpoints (``processor_config.json``), so ``AutoProcessor.from_pretrained(folder,
    trust_remote_code=True)`` returns it configured for that checkpoint.
    """

    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, causal: bool = False, system_prompt: str | None = None,
                 max_source_length: int = 512, max_persona_length: int = 128, max_target_length: int = 50,
                 **kwargs):
        self.causal = bool(causal)
        self.system_prompt = DEFAULT_CAUSAL_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.max_source_length = int(max_source_length)
        self.max_persona_length = int(max_persona_length)
        self.max_target_length = int(max_target_length)
        super().__init__(tokenizer, **kwargs)

    @staticmethod
    def settings_from_config(config) -> dict:
        """The processor settings matching a PAL config (used when a checkpoint is saved)."""
        causal = getattr(config, "model_type", "") == "pal_causal"
        settings = {"causal": causal}
        if causal:
            settings["system_prompt"] = getattr(config, "system_prompt", DEFAULT_CAUSAL_SYSTEM_PROMPT)
        return settings

    def __call__(self, utterances=None, speakers=None, strategies=None, persona=None, responses=None,
                 response_strategies=None, return_tensors: str = "pt", **kwargs) -> BatchFeature:
        if kwargs:
            raise TypeError(f"PALProcessor got unexpected arguments: {', '.join(sorted(kwargs))}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"PALProcessor returns torch tensors (return_tensors='pt'), got {return_tensors!r}")
        dialogues, single = _as_batch(utterances, "utterances")
        if dialogues is None:
            raise ValueError("PALProcessor needs utterances (the dialogue so far, oldest first)")
        roles, _ = _as_batch(speakers, "speakers")
        if roles is None or len(roles) != len(dialogues):
            raise ValueError(f"PALProcessor needs one speakers list per dialogue ({len(dialogues)})")
        n = len(dialogues)

        def per_dialogue(value, name):
            if value is None:
                return [None] * n
            if single:
                return [list(value)]
            value = list(value)
            if len(value) != n:
                raise ValueError(f"{name}: got {len(value)} entries for {n} dialogues")
            return [None if v is None else list(v) for v in value]

        def per_item(value, name):
            if value is None:
                return [None] * n
            if single:
                return [value]
            value = list(value)
            if len(value) != n:
                raise ValueError(f"{name}: got {len(value)} entries for {n} dialogues")
            return value

        strategies = per_dialogue(strategies, "strategies")
        personas = per_dialogue(persona, "persona")
        replies = per_item(responses, "responses")
        reply_strategies = per_item(response_strategies, "response_strategies")
        features = []
        for i in range(n):
            common = dict(persona_sentences=personas[i], response=replies[i], strategy=reply_strategies[i],
                          tokenizer=self.tokenizer, max_source_length=self.max_source_length,
                          max_persona_length=self.max_persona_length, max_target_length=self.max_target_length)
            if self.causal:
                ex = build_pal_causal_example(dialogues[i], roles[i], strategies[i], system_prompt=self.system_prompt,
                                              **common)
            else:
                ex = build_pal_example(dialogues[i], roles[i], strategies[i], **common)
            features.append(ex)
        batch = PALCollator(self.tokenizer, padding_side="left" if self.causal else "right")(features)
        if all(r is None for r in replies):
            batch.pop("labels", None)
            batch.pop("strategy_id", None)
        return BatchFeature(data=dict(batch))

    def decode_responses(self, sequences, inputs=None) -> list:
        """``(strategy name or None, response text)`` for each row of ``generate``'s output.

        Pass the processor's ``inputs`` for PAL over a causal LM (the prompt is cut off); a seq2seq
        PAL's output starts with the decoder start token. The strategy is the first strategy token of
        the response."""
        rows = sequences.tolist() if hasattr(sequences, "tolist") else [list(r) for r in sequences]
        start = 0
        if self.causal:
            if inputs is None:
                raise ValueError("decode_responses needs the processor's inputs for PAL over a causal LM")
            start = int(inputs["input_ids"].shape[1])
        ids = _pal_token_ids(self.tokenizer)
        strategy_ids = {ids[token]: name for token, name in zip(STRATEGY_TOKENS, STRATEGY_NAMES)}
        out = []
        for row in rows:
            reply = row[start:]
            strategy = next((strategy_ids[t] for t in reply if t in strategy_ids), None)
            text = self.tokenizer.decode(reply, skip_special_tokens=True).strip()
            out.append((strategy, text))
        return out

    @property
    def model_input_names(self) -> list:
        return ["input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask"]


__all__ = [
    "add_pal_tokens",
    "build_pal_example",
    "build_pal_causal_example",
    "strategy_token_id",
    "PALCollator",
    "PAL_SPECIAL_TOKENS",
    "SEEKER_TOKEN",
    "SUPPORTER_TOKEN",
    "PERSONA_PLACEHOLDER",
    "PALProcessor",
]
