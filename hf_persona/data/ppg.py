"""Data for partner-persona generation (PPG, Lu et al. 2022): turns, the one input format, BM25.

Every turn of a PERSONA-CHAT dialogue, from either speaker, gives one example
``(s, p, c, r)``: ``s`` the persona of the speaker of ``r`` (self persona), ``p`` the persona
of the other speaker (partner persona), ``c`` the utterances before ``r`` and ``r`` the
utterance itself. PPG learns ``(s, c) -> p``; DRG learns ``(s, p, c) -> r``.

The input format (shared by supervised training, RL and inference)
------------------------------------------------------------------
A prompt is plain text, one item per line, always written from the point of view of the
speaker who is about to talk (``you``)::

    your persona: i like to ski.
    your persona: i have two dogs.
    partner persona: i am a nurse.        <- DRG prompts only, one line per sentence
    partner: hi , how are you ?
    you: good , just back from skiing .
    partner: nice , i work nights .
    you:                                  <- DRG prompts end here
    partner persona:                      <- PPG prompts end here instead

The completion is the target text with one leading space: for DRG the response, for PPG the
partner persona sentences joined by single spaces (the paper generates the whole profile in
one shot). Token ids are built by :func:`encode_prompt` / :func:`encode_example`:
``tokenizer(prompt)`` with the tokenizer's own special tokens (BERT: ``[CLS] ... [SEP]``,
GPT-2/DialoGPT: none), then the completion tokenized without special tokens, then EOS
(``[SEP]`` for BERT vocabularies, ``<|endoftext|>`` for GPT-2). This is exactly what TRL's
``RLOOTrainer`` does with a text prompt (``processing_class(text=prompts)``), so training,
RL and inference see the same ids. Newlines separate items, so no persona sentence or
utterance may contain one (:class:`ValueError` otherwise).

Chat models (tokenizers with a chat template, e.g. SmolLM2-135M-Instruct)
------------------------------------------------------------------------
When the tokenizer has a chat template, :func:`format_example` (what
:func:`hf_persona.training.ppg.task_examples` applies) wraps the same plain-text prompt as the
*user* message after a fixed per-task *system* message (:data:`SYSTEM_PROMPTS`; always ours, so
templates that inject a default system message do not) and renders it with
``apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`` into the prompt
*string*. For SmolLM2 (ChatML)::

    <|im_start|>system
    You are one of two people getting to know each other in a chat. ...<|im_end|>
    <|im_start|>user
    your persona: i like to ski.
    ...
    you:<|im_end|>
    <|im_start|>assistant

The completion is the target text *without* the leading space, then the tokenizer's EOS, which
:func:`prepare_tokenizer` sets to the template's end-of-turn token (``<|im_end|>`` for ChatML).
Prompt ids are still ``tokenizer(prompt_string)`` (:func:`encode_prompt`), exactly what
``RLOOTrainer`` computes for a text prompt, so SFT, RL and inference see identical ids.
:func:`unwrap_prompt` recovers the plain-text user message from a rendered prompt and
:func:`parse_prompt` accepts either (give it the tokenizer for a rendered one). Tokenizers
without a chat template (MiniLM / BERT, GPT-2) keep the plain format above unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

SELF_TAG = "your persona:"
PARTNER_TAG = "partner persona:"
YOU = "you"
PARTNER = "partner"
SPEAKERS = (YOU, PARTNER)

PPG = "ppg"
DRG = "drg"


# ----------------------------------------------------------------------------------------------
# turns
# ----------------------------------------------------------------------------------------------
def _check_list_of_str(value, what, dialogue_id):
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"dialogue {dialogue_id}: {what} must be a list of strings, got {type(value).__name__}")


def dialogue_turns(row: dict, min_context: int = 1, max_context: int | None = None) -> list[dict]:
    """All ``(s, p, c, r)`` examples of one dialogue row of ``read_personachat``.

    ``row`` has the reader's columns ``dialogue_id``, ``your_persona``, ``partner_persona``,
    ``utterances`` and ``speakers`` ("you"/"partner"). Utterance ``i`` by speaker X becomes one
    example when at least ``min_context`` utterances precede it: ``self_persona`` is X's
    persona, ``partner_persona`` the other speaker's, ``context`` the last ``max_context``
    (all when None) earlier utterances and ``context_speakers`` says, for each of them,
    whether X said it ("you") or the other speaker ("partner").
    """
    for key in ("your_persona", "partner_persona", "utterances", "speakers"):
        if key not in row:
            raise ValueError(f"a PERSONA-CHAT row needs the column {key!r}; got columns {sorted(row)}")
    did = row.get("dialogue_id", "?")
    for key in ("your_persona", "partner_persona", "utterances", "speakers"):
        _check_list_of_str(row[key], key, did)
    utts, spk = list(row["utterances"]), list(row["speakers"])
    if len(utts) != len(spk):
        raise ValueError(f"dialogue {did}: {len(utts)} utterances but {len(spk)} speakers; expected one speaker each")
    bad = sorted({s for s in spk if s not in SPEAKERS})
    if bad:
        raise ValueError(f"dialogue {did}: speakers must be 'you' or 'partner', got {bad}")
    if min_context < 0:
        raise ValueError(f"min_context must be >= 0, got {min_context}")
    if max_context is not None and max_context < 1:
        raise ValueError(f"max_context must be >= 1 or None, got {max_context}")
    personas = {YOU: list(row["your_persona"]), PARTNER: list(row["partner_persona"])}
    out = []
    for i in range(len(utts)):
        if i < min_context:
            continue
        me = spk[i]
        other = PARTNER if me == YOU else YOU
        lo = 0 if max_context is None else max(0, i - max_context)
        out.append(
            {
                "dialogue_id": did,
                "turn": i,
                "n_context": i,
                "self_persona": personas[me],
                "partner_persona": personas[other],
                "context": utts[lo:i],
                "context_speakers": [YOU if s == me else PARTNER for s in spk[lo:i]],
                "response": utts[i],
            }
        )
    return out


def build_turns(rows: Iterable[dict], min_context: int = 1, max_context: int | None = None) -> list[dict]:
    """:func:`dialogue_turns` over every row (a ``datasets.Dataset`` or a list of dicts)."""
    out = []
    for row in rows:
        out.extend(dialogue_turns(row, min_context=min_context, max_context=max_context))
    return out


# ----------------------------------------------------------------------------------------------
# the input format
# ----------------------------------------------------------------------------------------------
def _check_line(text, what):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} must not contain a newline (the prompt format puts one item per line): {text!r}")
    return text.strip()


def _lines(self_persona, context, context_speakers, partner_persona=None):
    if isinstance(self_persona, str) or isinstance(context, str):
        raise TypeError("self_persona and context must be lists of strings, not a single string")
    if len(context) != len(context_speakers):
        raise ValueError(f"context has {len(context)} utterances but context_speakers has {len(context_speakers)}")
    lines = [f"{SELF_TAG} {_check_line(s, 'a self persona sentence')}" for s in self_persona]
    if partner_persona is not None:
        if isinstance(partner_persona, str):
            raise TypeError("partner_persona must be a list of sentences, not a single string")
        lines += [f"{PARTNER_TAG} {_check_line(s, 'a partner persona sentence')}" for s in partner_persona]
    for utt, who in zip(context, context_speakers):
        if who not in SPEAKERS:
            raise ValueError(f"context speakers must be 'you' or 'partner', got {who!r}")
        lines.append(f"{who}: {_check_line(utt, 'an utterance')}")
    return lines


def ppg_prompt(self_persona: Sequence[str], context: Sequence[str], context_speakers: Sequence[str]) -> str:
    """PPG prompt ``(s, c)``: ends with the line ``partner persona:``."""
    return "\n".join(_lines(self_persona, context, context_speakers) + [PARTNER_TAG])


def drg_prompt(
    self_persona: Sequence[str],
    partner_persona: Sequence[str],
    context: Sequence[str],
    context_speakers: Sequence[str],
) -> str:
    """DRG prompt ``(s, p, c)``: ends with the line ``you:``."""
    return "\n".join(_lines(self_persona, context, context_speakers, partner_persona) + [f"{YOU}:"])


def persona_target(partner_persona: Sequence[str]) -> str:
    """PPG completion: the persona sentences joined by spaces, with one leading space."""
    if isinstance(partner_persona, str):
        raise TypeError("partner_persona must be a list of sentences, not a single string")
    return " " + " ".join(_check_line(s, "a partner persona sentence") for s in partner_persona)


def response_target(response: str) -> str:
    """DRG completion: the response with one leading space."""
    return " " + _check_line(response, "a response")


_SENT_END = re.compile(r"(?<=[.!?])\s+")


def split_persona(text: str) -> list[str]:
    """Split generated persona text into sentences (after ``.``, ``!`` or ``?``); empty parts dropped.

    Used to turn a PPG completion into the ``partner_persona`` list of a DRG prompt.
    """
    if not isinstance(text, str):
        raise TypeError(f"persona text must be a string, got {type(text).__name__}")
    text = " ".join(text.split())
    return [s.strip() for s in _SENT_END.split(text) if s.strip()]


def parse_prompt(prompt: str, tokenizer=None) -> dict:
    """Inverse of :func:`ppg_prompt` / :func:`drg_prompt` (a check that the format is unambiguous).

    Returns ``kind`` ("ppg"/"drg"), ``self_persona``, ``partner_persona`` (None for PPG),
    ``context`` and ``context_speakers``. A prompt rendered with a chat template
    (:func:`format_example`) is parsed when ``tokenizer`` (the one that rendered it) is given.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if tokenizer is not None and uses_chat_template(tokenizer):
        prompt = unwrap_prompt(tokenizer, prompt)
    lines = prompt.split("\n")
    last = lines[-1]
    if last == PARTNER_TAG:
        kind = PPG
    elif last == f"{YOU}:":
        kind = DRG
    else:
        raise ValueError(f"a prompt must end with {PARTNER_TAG!r} (PPG) or 'you:' (DRG), got {last!r}")
    out = {"kind": kind, "self_persona": [], "partner_persona": [] if kind == DRG else None,
           "context": [], "context_speakers": []}
    for n, line in enumerate(lines[:-1], 1):
        if line.startswith(SELF_TAG + " ") and not out["context"]:
            out["self_persona"].append(line[len(SELF_TAG) + 1:])
        elif kind == DRG and line.startswith(PARTNER_TAG + " ") and not out["context"]:
            out["partner_persona"].append(line[len(PARTNER_TAG) + 1:])
        elif line.startswith(f"{YOU}: ") or line.startswith(f"{PARTNER}: "):
            who, _, utt = line.partition(": ")
            out["context"].append(utt)
            out["context_speakers"].append(who)
        else:
            raise ValueError(f"prompt line {n} is not a persona or utterance line: {line!r}")
    return out


# ----------------------------------------------------------------------------------------------
# chat models: the plain-text prompt as the user message of the tokenizer's chat template
# ----------------------------------------------------------------------------------------------
#: The system message of each task (chat-template tokenizers only).
SYSTEM_PROMPTS = {
    PPG: ("You are one of two people getting to know each other in a chat. From your persona and the "
          "conversation so far, guess your partner's persona: write a few short first-person sentences "
          "in lowercase, as your partner would describe themselves."),
    DRG: ("You are one of two people getting to know each other in a chat. Given your persona, your "
          "partner's persona and the conversation so far, write your next message: one short, friendly, "
          "lowercase reply that stays in character."),
}
_SENTINEL = "<<HF_PERSONA_PLACEHOLDER_7f3a>>"


def uses_chat_template(tokenizer) -> bool:
    """True when ``tokenizer`` has a chat template (then prompts are rendered with it)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(task, user):
    if task not in (PPG, DRG):
        raise ValueError(f"task must be {PPG!r} or {DRG!r}, got {task!r}")
    return [{"role": "system", "content": SYSTEM_PROMPTS[task]}, {"role": "user", "content": user}]


def render_prompt(tokenizer, task: str, prompt: str) -> str:
    """The prompt string a model with ``tokenizer`` sees: the plain-text ``prompt`` (from
    :func:`ppg_prompt` / :func:`drg_prompt`) unchanged without a chat template, else the task's
    system message + ``prompt`` as the user message, rendered with the generation prompt."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not uses_chat_template(tokenizer):
        return prompt
    return tokenizer.apply_chat_template(_messages(task, prompt), tokenize=False, add_generation_prompt=True)


def render_completion(tokenizer, completion: str) -> str:
    """The completion text for ``tokenizer``: as built (one leading space) without a chat
    template, without the leading space with one (the assistant turn starts on a new line)."""
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a string, got {type(completion).__name__}")
    if uses_chat_template(tokenizer) and completion.startswith(" "):
        return completion[1:]
    return completion


def unwrap_prompt(tokenizer, prompt: str) -> str:
    """The plain-text user message of a prompt rendered by :func:`render_prompt` (either task).

    Raises :class:`ValueError` when ``prompt`` is not such a rendering."""
    if not uses_chat_template(tokenizer):
        return prompt
    for task in (PPG, DRG):
        head, sep, tail = render_prompt(tokenizer, task, _SENTINEL).partition(_SENTINEL)
        if sep and prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
            return prompt[len(head):len(prompt) - len(tail)]
    raise ValueError("the prompt is not a PPG/DRG prompt rendered with this tokenizer's chat template: "
                     f"{prompt[:80]!r}...")


def ensure_rendered(tokenizer, prompt: str) -> str:
    """``prompt`` as the model with ``tokenizer`` expects it: a plain-text PPG/DRG prompt is rendered
    with the chat template (:func:`render_prompt`, the task read from its last line); an already
    rendered prompt, any other text, and every prompt of a tokenizer without a chat template are
    returned unchanged."""
    if not uses_chat_template(tokenizer):
        return prompt
    try:
        unwrap_prompt(tokenizer, prompt)
        return prompt
    except ValueError:
        pass
    try:
        kind = parse_prompt(prompt)["kind"]
    except ValueError:
        return prompt
    return render_prompt(tokenizer, kind, prompt)


def format_example(tokenizer, task: str, example: dict) -> dict:
    """A copy of ``example`` (from :func:`ppg_example` / :func:`drg_example`) whose ``prompt`` and
    ``completion`` are rendered for ``tokenizer`` (:func:`render_prompt`, :func:`render_completion`);
    the plain-text prompt is kept as ``text_prompt``."""
    out = dict(example)
    out["text_prompt"] = example["prompt"]
    out["prompt"] = render_prompt(tokenizer, task, example["prompt"])
    out["completion"] = render_completion(tokenizer, example["completion"])
    return out


# ----------------------------------------------------------------------------------------------
# examples
# ----------------------------------------------------------------------------------------------
def ppg_example(turn: dict) -> dict:
    """``{"prompt", "completion"}`` for PPG plus the columns the RL rewards need."""
    return {
        "prompt": ppg_prompt(turn["self_persona"], turn["context"], turn["context_speakers"]),
        "completion": persona_target(turn["partner_persona"]),
        "self_persona": list(turn["self_persona"]),
        "context": list(turn["context"]),
        "context_speakers": list(turn["context_speakers"]),
    }


def drg_example(turn: dict, partner_persona: Sequence[str] | None = None) -> dict:
    """``{"prompt", "completion"}`` for DRG; ``partner_persona`` overrides the gold one
    (generated personas, or the BM25 top-3 gold sentences)."""
    pp = list(turn["partner_persona"] if partner_persona is None else partner_persona)
    return {
        "prompt": drg_prompt(turn["self_persona"], pp, turn["context"], turn["context_speakers"]),
        "completion": response_target(turn["response"]),
        "partner_persona": pp,
    }


def critic_examples(rows: Iterable[dict]) -> list[dict]:
    """Critic pairs of section 3.3: every utterance r of speaker A gives (s^A, r, 1) and (s^B, r, 0).

    The positives pair a response with its own speaker's persona, the negatives with the other
    speaker's persona of the same dialogue, so the two classes are exactly balanced.
    """
    out = []
    for row in rows:
        for t in dialogue_turns(row, min_context=0):
            out.append({"persona": " ".join(t["self_persona"]), "response": t["response"], "label": 1})
            out.append({"persona": " ".join(t["partner_persona"]), "response": t["response"], "label": 0})
    return out


# ----------------------------------------------------------------------------------------------
# BM25 top-k gold partner persona (the paper's strongest baseline)
# ----------------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9']+")


def _words(text):
    return _WORD.findall(text.lower())


def bm25_top_k(partner_persona: Sequence[str], context: Sequence[str], k: int = 3) -> list[str]:
    """The ``k`` gold partner-persona sentences most relevant to the context by BM25 (Okapi).

    The index is the dialogue's own partner-persona sentences; the query is all context words.
    Ties (and an empty context) keep the original sentence order; the chosen sentences are
    returned in their original order. Fewer than ``k`` sentences are returned unchanged.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sents = list(partner_persona)
    if len(sents) <= k:
        return sents
    from rank_bm25 import BM25Okapi

    docs = [_words(s) or ["_"] for s in sents]
    query = [w for utt in context for w in _words(utt)]
    if not query:
        return sents[:k]
    scores = BM25Okapi(docs).get_scores(query)
    order = sorted(range(len(sents)), key=lambda i: (-float(scores[i]), i))[:k]
    return [sents[i] for i in sorted(order)]


# ----------------------------------------------------------------------------------------------
# tokenization (the same ids in SFT, RL and inference)
# ----------------------------------------------------------------------------------------------
def end_of_turn_token(tokenizer) -> str | None:
    """The special token a chat template closes an assistant turn with (``<|im_end|>`` for
    ChatML), or None when the tokenizer has no chat template or the token cannot be found."""
    if not uses_chat_template(tokenizer):
        return None
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
         {"role": "assistant", "content": _SENTINEL}], tokenize=False)
    after = text.partition(_SENTINEL)[2]
    special = sorted(set(tokenizer.all_special_tokens), key=len, reverse=True)
    after = after.lstrip()
    for tok in special:
        if after.startswith(tok):
            return tok
    return None


def prepare_tokenizer(tokenizer):
    """Give the tokenizer an EOS and a pad token; left padding.

    EOS: the chat template's end-of-turn token (:func:`end_of_turn_token`) when there is one, else
    the tokenizer's EOS, else ``[SEP]`` (BERT vocabularies). Returns the same tokenizer. Raises when
    no such token exists.
    """
    eot = end_of_turn_token(tokenizer)
    if eot is not None and tokenizer.eos_token != eot:
        tokenizer.eos_token = eot
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is None:
            raise ValueError("the tokenizer has neither an eos_token nor a sep_token to end completions with")
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids: ``tokenizer(prompt)`` with its default special tokens (what RLOOTrainer does)."""
    return list(tokenizer(prompt)["input_ids"])


def encode_completion(tokenizer, completion: str, max_tokens: int) -> list[int]:
    """Completion ids without special tokens, cut to ``max_tokens - 1``, then EOS."""
    if max_tokens < 2:
        raise ValueError(f"max completion tokens must be >= 2 (one for EOS), got {max_tokens}")
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"][: max_tokens - 1]
    return list(ids) + [tokenizer.eos_token_id]


def encode_example(tokenizer, prompt: str, completion: str, max_completion_tokens: int = 64) -> dict:
    """``input_ids`` = prompt ids + completion ids + EOS and ``completion_mask`` (1 on the completion)."""
    p = encode_prompt(tokenizer, prompt)
    c = encode_completion(tokenizer, completion, max_completion_tokens)
    return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}


def fit_turn(turn: dict, tokenizer, builder, max_prompt_tokens: int) -> dict | None:
    """Drop the oldest context utterances until ``builder(turn)`` tokenizes to at most
    ``max_prompt_tokens``. Returns the shortened turn, or None when even no context is too long."""
    t = dict(turn)
    while True:
        if len(encode_prompt(tokenizer, builder(t)["prompt"])) <= max_prompt_tokens:
            return t
        if not t["context"]:
            return None
        t["context"] = t["context"][1:]
        t["context_speakers"] = t["context_speakers"][1:]
