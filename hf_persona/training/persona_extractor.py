"""Persona extractor: a model from one speaker's utterances to that speaker's persona.

PAL (Cheng et al., 2023, section 3.2 and appendix A) fine-tunes ``facebook/bart-large-cnn`` on
PERSONA-CHAT: the input is the utterances of one speaker joined by a separator, the target is
that speaker's persona sentences joined by a separator. This module builds the same thing on

* any Hub seq2seq checkpoint (``kind="seq2seq"``), or, offline, an ``EncoderDecoderModel``
  warm-started from the packaged MiniLM (BERT-to-BERT: the decoder is a copy of the encoder with
  causal self-attention and freshly initialised cross-attention);
* any causal LM (``kind="causal"``: ``--backbone smollm2``, the packaged SmolLM2-135M-Instruct, or a
  Hub id such as a Llama / Qwen / SmolLM2 checkpoint). The prompt is the tokenizer's chat template
  with a fixed system prompt (:data:`CAUSAL_SYSTEM_PROMPT`) and the utterances, one per line, as
  the user turn; the assistant turn is the persona sentences joined by `` | `` and the end-of-turn
  token, and only that turn is learned (the prompt's labels are -100). Training, evaluation and
  :class:`PersonaExtractor` build the prompt with the same function, :func:`causal_prompt_ids`.

Examples come from PERSONA-CHAT (each dialogue gives two: the responder's utterances with
``your_persona`` and the partner's utterances with ``partner_persona``) and MSC (Speaker 1 and
Speaker 2). MSC episodes are built on ConvAI2 validation dialogues, so PERSONA-CHAT dialogues and
the MSC episodes derived from them are held back together (see :func:`load_extractor_examples`).

Public entry points: :func:`train_persona_extractor`, :class:`PersonaExtractor` (``extract``) and
:func:`split_persona`; evaluation is :mod:`hf_persona.evaluation.persona_extractor`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import HFPersonaError
from ..utils import atomic_write_json, get_logger, moved_names, set_seed
from .configs import PersonaExtractorTrainingConfig
from .recipe import RecipeResult, run_size, trainer_arguments, write_summary

logger = get_logger(__name__)

#: joins the persona sentences of a target (and is split on again at generation time)
TARGET_SEPARATOR = " | "
#: file written next to the weights, holding how inputs and outputs are formatted
EXTRACTOR_CONFIG_NAME = "persona_extractor.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"  # what PEFT writes beside a LoRA adapter
#: persona sentences with fewer words, or more, are dropped (paper, appendix A / section 3.2)
MIN_WORDS = 2
MAX_WORDS = 25
#: the system turn of the causal-LM extractor's prompt (saved with the model in persona_extractor.json)
CAUSAL_SYSTEM_PROMPT = (
    "You read what one person said in a conversation and write that person's persona: short "
    "first-person sentences about who they are, what they do and what they like, separated by ' | '."
)

_WORD = re.compile(r"[^\W_]", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ----------------------------------------------------------------------------------------------
# text helpers
# ----------------------------------------------------------------------------------------------


def count_words(sentence: str) -> int:
    """Number of whitespace-separated tokens that contain a letter or digit ("dogs ." -> 1)."""
    return sum(1 for tok in sentence.split() if _WORD.search(tok))


def split_persona(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Split generated persona text into sentences and keep those with ``min_words..max_words`` words.

    The text is split on the target separator ``|`` and then after ``.``, ``!`` or ``?`` followed
    by whitespace. Whitespace is normalised (also before punctuation and around apostrophes, as
    WordPiece decoding leaves "i' m"); duplicates (case- and punctuation-insensitive) are
    removed, keeping the first occurrence.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_persona expects a string, got {type(text).__name__}")
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    out, seen = [], set()
    for chunk in text.split("|"):
        for sentence in _SENTENCE_END.split(chunk.strip()):
            sentence = " ".join(sentence.split())
            sentence = re.sub(r"\s+([.,!?;:])", r"\1", sentence)
            sentence = re.sub(r"(\w)\s*'\s*(\w)", r"\1'\2", sentence)  # WordPiece decoding: "i' m" -> "i'm"
            if not sentence:
                continue
            n = count_words(sentence)
            if n < min_words or n > max_words:
                continue
            key = persona_key(sentence)
            if key in seen:
                continue
            seen.add(key)
            out.append(sentence)
    return out


def persona_key(sentence: str) -> str:
    """Normalised form used to deduplicate persona sentences (lower case, letters/digits only)."""
    return " ".join(re.findall(r"[^\W_]+", sentence.lower()))


#: words that say nothing about a person on their own; persona_support ignores them
_FUNCTION_WORDS = frozenset(
    "a about above after again all also am an and any are as at be been before being below both but by can could "
    "did do does doing down during each few for from get got had has have having he her here hers him his how i "
    "if in into is it its just like lot me more most much my myself no nor not now of off on once one only or "
    "other our ours out over own really same she should so some such than that the their them then there these "
    "they thing things this those through to too under until up very was we were what when where which while who "
    "whom why will with would yes you your".split()
)


def _stem(word: str) -> str:
    """A deliberately crude suffix strip so that cook / cooks / cooking / cooked, bake / baked,
    study / studies and cookie / cookies meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "i"
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word[:-1] + "i" if len(word) > 3 and word.endswith("y") else word


def content_words(text: str) -> set[str]:
    """Stemmed, lower-cased words of ``text`` that are not function words ("i'm" counts as "i", "m")."""
    return {_stem(w) for w in re.findall(r"[^\W_]+", text.lower()) if w not in _FUNCTION_WORDS and len(w) > 1}


def persona_support(sentence: str, utterances: Sequence[str]) -> float:
    """Share of the persona sentence's content words that the speaker actually used (0 to 1).

    A grounded persona sentence restates what the speaker said ("i read twenty books a year" after
    "i've read about 20 books this year": 3 of 4); PERSONA-CHAT and MSC targets often are not (a
    persona line the speaker never mentioned: 0). A sentence without content words scores 0.
    """
    words = content_words(sentence)
    if not words:
        return 0.0
    said = set()
    for utt in utterances:
        said |= content_words(utt)
    return len(words & said) / len(words)


def ground_examples(examples: Sequence[dict], min_support: float) -> list[dict]:
    """Keep, in each example, the persona sentences with ``persona_support >= min_support``.

    Examples left without a persona sentence are dropped. ``min_support = 0`` returns the
    examples unchanged. Training on grounded targets teaches the extractor to restate what the
    speaker said instead of inventing persona lines (about 60% of PERSONA-CHAT + MSC persona
    sentences share under half their content words with the speaker's utterances).
    """
    if not 0.0 <= min_support <= 1.0:
        raise ValueError(f"min_support must be between 0 and 1 (a share of content words), got {min_support}")
    if min_support == 0.0:
        return list(examples)
    out = []
    for ex in examples:
        kept = [p for p in ex["persona"] if persona_support(p, ex["utterances"]) >= min_support]
        if kept:
            out.append({**ex, "persona": kept})
    return out


def join_source(utterances: Sequence[str], separator: str) -> str:
    """Join one speaker's utterances into the extractor's input text."""
    parts = [" ".join(str(u).split()) for u in utterances]
    return separator.join(p for p in parts if p)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def examples_from_personachat(ds, group_offset: int = 0) -> list[dict]:
    """Two (utterances -> persona) examples per PERSONA-CHAT dialogue: the responder and the partner.

    ``group`` is the dialogue's position in the file (ConvAI2 ``valid_<group>``), used to keep
    held-back dialogues out of training.
    """
    out = []
    for i, row in enumerate(ds):
        speakers, utts = row["speakers"], row["utterances"]
        for who, persona_col in (("you", "your_persona"), ("partner", "partner_persona")):
            said = [u for u, s in zip(utts, speakers) if s == who and u and u.strip()]
            persona = [p.strip() for p in row[persona_col] if p and p.strip()]
            if said and persona:
                out.append({"utterances": said, "persona": persona, "group": group_offset + i, "source": "personachat"})
    return out


def examples_from_msc(ds, groups: Sequence[int | None] | None = None) -> list[dict]:
    """Two examples per MSC episode (Speaker 1, Speaker 2); ``groups`` are ConvAI2 dialogue indices."""
    out = []
    for i, row in enumerate(ds):
        group = groups[i] if groups is not None else None
        for who, persona_col in (("Speaker 1", "speaker1_persona"), ("Speaker 2", "speaker2_persona")):
            said = [u for u, s in zip(row["utterances"], row["speakers"]) if s == who and u and u.strip()]
            persona = [p.strip() for p in row[persona_col] if p and p.strip()]
            if said and persona:
                out.append({"utterances": said, "persona": persona, "group": group, "source": "msc"})
    return out


def msc_convai2_groups(path) -> dict[str, int]:
    """Map each MSC episode's first utterance to its ConvAI2 dialogue index (``valid_<n>`` -> n).

    Keyed by text rather than by line number so that the alignment survives episodes the reader
    skips as malformed.
    """
    groups: dict[str, int] = {}
    # malformed lines are the reader's to report (or skip); here they only carry no alignment
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                obj = json.loads(line) if line.strip() else None
            except (ValueError, RecursionError):  # bad JSON, a huge number, deep nesting
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("dialog"), list) or not obj["dialog"]:
                continue
            cid = next((t.get("convai2_id") for t in obj["dialog"] if isinstance(t, dict) and t.get("convai2_id")), None)
            m = re.fullmatch(r"\w+?_(\d+)", str(cid)) if cid else None
            first = obj["dialog"][0].get("text") if isinstance(obj["dialog"][0], dict) else None
            if m and isinstance(first, str):
                groups[" ".join(first.split())] = int(m.group(1))
    return groups


def _detect(path) -> str:
    from ..data import read_dialogues  # noqa: F401  (only to fail early when the reader is missing)

    p = Path(path)
    if p.is_dir():
        raise HFPersonaError(f"{p}: expected a PERSONA-CHAT .txt or MSC .txt/.jsonl file, got a directory")
    with open(p, encoding="utf-8") as fh:
        first = ""
        for line in fh:
            if line.strip():
                first = line.strip()
                break
    if first.startswith("{"):
        return "msc"
    if re.match(r"^\d+ ", first):
        return "personachat"
    raise HFPersonaError(
        f"{p}: expected PERSONA-CHAT (ParlAI text, lines '1 your persona: ...') or MSC (JSON lines with "
        f"'personas' and 'dialog'), got first line {first[:60]!r}"
    )


def load_extractor_examples(paths: Iterable, dev_from: int = 800) -> tuple[list[dict], list[dict]]:
    """Read PERSONA-CHAT / MSC files and split them into (train, dev) extractor examples.

    PERSONA-CHAT dialogues with index ``>= dev_from`` are held back; MSC episodes are held back
    when the ConvAI2 dialogue they continue (``convai2_id``) is held back, so no persona of a
    held-back dialogue is seen in training. MSC episodes without a ConvAI2 id go to training.
    """
    from ..data import read_msc, read_personachat

    train, dev = [], []
    paths = [Path(p) for p in paths]
    if not paths:
        raise HFPersonaError("no data files given: expected PERSONA-CHAT and/or MSC files")
    for p in paths:
        if not p.is_file():
            raise HFPersonaError(f"{p}: data file not found (expected a PERSONA-CHAT or MSC file)")
        kind = _detect(p)
        if kind == "personachat":
            exs = examples_from_personachat(read_personachat(p))
        else:
            ds = read_msc(p, skip_malformed=True)
            by_first = msc_convai2_groups(p)
            groups = [by_first.get(" ".join(u[0].split())) if u else None for u in ds["utterances"]]
            exs = examples_from_msc(ds, groups)
        for ex in exs:
            (dev if ex["group"] is not None and ex["group"] >= dev_from else train).append(ex)
        logger.info("%s (%s): %d examples", p, kind, len(exs))
    return train, dev


def default_data_files() -> list[Path]:
    """PERSONA-CHAT (original personas) and MSC sessions 2-3 from the shared data folder."""
    from ..data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        raise HFPersonaError(
            "no --data given and no shared data folder found (set HF_PERSONA_DATA or pass --data FILE)"
        )
    files = [root / "personachat" / "valid_both_original_no_cands.txt"]
    files += sorted((root / "msc").glob("session_*_valid.txt"))
    return [f for f in files if f.is_file()]


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------


@dataclass
class ExtractorFormat:
    """How inputs and outputs are written; saved as ``persona_extractor.json`` beside the weights.

    ``kind``: ``"seq2seq"`` (source text -> target text) or ``"causal"`` (chat prompt with
    ``system_prompt`` -> assistant turn). Folders saved before causal extractors existed have no
    ``kind`` and load as seq2seq. ``backbone``: the base model a LoRA adapter folder loads onto
    (a name for :func:`hf_persona.backbones.resolve`, e.g. ``"smollm2"``; None for full models)."""

    source_separator: str
    target_separator: str = TARGET_SEPARATOR
    max_source_length: int = 256
    max_target_length: int = 64
    kind: str = "seq2seq"
    system_prompt: str | None = None
    backbone: str | None = None

    def __post_init__(self):
        if self.kind not in ("seq2seq", "causal"):
            raise HFPersonaError(f"persona extractor kind must be 'seq2seq' or 'causal', got {self.kind!r}")
        if self.kind == "causal" and not self.system_prompt:
            self.system_prompt = CAUSAL_SYSTEM_PROMPT

    def to_dict(self):
        return dict(self.__dict__)


def _prepare_causal_tokenizer(tokenizer, config):
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise HFPersonaError("a causal LM extractor needs a tokenizer with an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    limit = getattr(config, "max_position_embeddings", None)
    if limit and (tokenizer.model_max_length is None or tokenizer.model_max_length > limit):
        tokenizer.model_max_length = int(limit)
    return tokenizer


def build_extractor_model(backbone: str = "minilm", seed: int = 0):
    """(model, tokenizer) for a backbone: a causal LM or a seq2seq checkpoint as is, an encoder
    warm-starts BERT2BERT."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    from ..backbones import is_causal_lm, resolve

    path = resolve(backbone)
    set_seed(seed)
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if is_causal_lm(config):
        tokenizer = _prepare_causal_tokenizer(tokenizer, config)
        model = AutoModelForCausalLM.from_pretrained(path)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    elif getattr(config, "is_encoder_decoder", False):
        model = AutoModelForSeq2SeqLM.from_pretrained(path)
    else:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
        warm_start_cross_attention(model)
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if start is None or eos is None or tokenizer.pad_token_id is None:
            raise HFPersonaError(
                f"backbone {backbone!r}: an encoder warm start needs a tokenizer with cls/bos, sep/eos and pad tokens"
            )
        model.config.decoder_start_token_id = start
        model.config.eos_token_id = eos
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.vocab_size = model.config.decoder.vocab_size
        gc = model.generation_config
        gc.decoder_start_token_id, gc.eos_token_id, gc.pad_token_id = start, eos, tokenizer.pad_token_id
    return model, tokenizer


def warm_start_cross_attention(model) -> int:
    """Initialise a BERT2BERT decoder's new parts from pretrained weights; returns the layers touched.

    ``from_encoder_decoder_pretrained`` leaves each decoder layer's cross-attention and (for a
    checkpoint without an MLM head, like the sentence-transformers MiniLM) the LM-head transform
    randomly initialised. With random cross-attention the decoder first learns to ignore the
    input: our first run (161 steps, batch 8) produced the same persona for every speaker. So each
    cross-attention block starts as a copy of the same layer's self-attention (query, key, value,
    output projection and LayerNorm), which attends from decoder tokens to encoder tokens in the
    representation space both share, and a missing LM-head transform starts as the identity map.
    """
    import torch

    decoder = getattr(model, "decoder", None)
    body = getattr(decoder, "bert", None) or getattr(decoder, "base_model", None)
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if layers is None:
        return 0
    touched = 0
    with torch.no_grad():
        for layer in layers:
            cross, own = getattr(layer, "crossattention", None), getattr(layer, "attention", None)
            if cross is None or own is None:
                continue
            cross.load_state_dict(own.state_dict())
            touched += 1
        transform = getattr(getattr(getattr(decoder, "cls", None), "predictions", None), "transform", None)
        dense = getattr(transform, "dense", None)
        if dense is not None and dense.weight.shape[0] == dense.weight.shape[1]:
            dense.weight.copy_(torch.eye(dense.weight.shape[0]))
            dense.bias.zero_()
    return touched


def _source_separator(tokenizer) -> str:
    sep = tokenizer.sep_token or tokenizer.eos_token
    return f" {sep} " if sep else " | "


def _chat_prompt_text(tokenizer, system_prompt: str, user: str) -> str:
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system_prompt}\n\nWhat they said:\n{user}\n\nPersona:"  # a base LM without a chat template


def causal_prompt_ids(tokenizer, utterances: Sequence[str], fmt: ExtractorFormat) -> list[int]:
    """Token ids of the causal extractor's prompt: system prompt, the utterances one per line as
    the user turn, and the opening of the assistant turn. Longer than ``fmt.max_source_length``
    tokens, the oldest utterances are dropped first, then the start of the oldest one kept."""
    utts = [" ".join(str(u).split()) for u in utterances]
    utts = [u for u in utts if u]

    def encode(lines):
        return tokenizer(_chat_prompt_text(tokenizer, fmt.system_prompt, "\n".join(lines)),
                         add_special_tokens=False)["input_ids"]

    ids = encode(utts)
    while len(ids) > fmt.max_source_length and len(utts) > 1:
        utts = utts[1:]
        ids = encode(utts)
    if len(ids) > fmt.max_source_length and utts:
        overflow = len(ids) - fmt.max_source_length
        words = tokenizer(utts[0], add_special_tokens=False)["input_ids"]
        if overflow >= len(words):
            raise HFPersonaError(
                f"max_source_length {fmt.max_source_length} is too short for the extractor's prompt "
                f"({len(ids) - len(words)} tokens without any utterance)"
            )
        utts[0] = tokenizer.decode(words[overflow:], skip_special_tokens=True).strip()
        ids = encode(utts)
    return ids


def causal_training_example(tokenizer, utterances: Sequence[str], persona: Sequence[str], fmt: ExtractorFormat) -> dict:
    """``input_ids`` = prompt + persona text + end of turn; ``labels`` = -100 over the prompt."""
    prompt = causal_prompt_ids(tokenizer, utterances, fmt)
    target = fmt.target_separator.join(" ".join(p.split()) for p in persona)
    completion = tokenizer(target, add_special_tokens=False)["input_ids"][: fmt.max_target_length]
    completion = completion + [tokenizer.eos_token_id]
    return {
        "input_ids": prompt + completion,
        "attention_mask": [1] * (len(prompt) + len(completion)),
        "labels": [-100] * len(prompt) + completion,
    }


class PersonaExtractor:
    """Infers persona sentences from one speaker's utterances with a trained seq2seq model.

    >>> ex = PersonaExtractor.from_pretrained("runs/extractor")      # doctest: +SKIP
    >>> ex.extract([["i just got back from my shift at the hospital", "i am a nurse"]])  # doctest: +SKIP
    [['i am a nurse.', 'i work at a hospital.']]
    """

    def __init__(self, model, tokenizer, fmt: ExtractorFormat | None = None, num_beams: int = 4,
                 max_new_tokens: int | None = None, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.format = fmt or ExtractorFormat(source_separator=_source_separator(tokenizer))
        self.num_beams = int(num_beams)
        self.max_new_tokens = int(max_new_tokens or self.format.max_target_length)
        self.min_words, self.max_words = min_words, max_words
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> "PersonaExtractor":
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        path = Path(path)
        cfg = path / EXTRACTOR_CONFIG_NAME
        if not cfg.is_file():
            raise HFPersonaError(
                f"{path}: not a persona extractor folder (expected {EXTRACTOR_CONFIG_NAME} written by "
                "`hf-persona train persona-extractor`)"
            )
        fmt = ExtractorFormat(**json.loads(cfg.read_text(encoding="utf-8")))
        loader = AutoModelForCausalLM if fmt.kind == "causal" else AutoModelForSeq2SeqLM
        if (path / ADAPTER_CONFIG_NAME).is_file():  # a LoRA adapter: load its base, then merge for speed
            from peft import PeftModel

            from ..backbones import resolve

            if not fmt.backbone:
                raise HFPersonaError(f"{path}: a LoRA adapter folder without the 'backbone' it was trained on "
                                     f"in {EXTRACTOR_CONFIG_NAME}")
            model = PeftModel.from_pretrained(loader.from_pretrained(resolve(fmt.backbone)), path).merge_and_unload()
        else:
            model = loader.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, fmt, **kwargs)

    def save_pretrained(self, path, merge: bool = True) -> None:
        """Save model, tokenizer and ``persona_extractor.json``. A LoRA-trained model (a PEFT model)
        is saved merged into full weights, or with ``merge=False`` as its adapter alone (a few MB;
        it loads onto ``format.backbone``)."""
        path = Path(path)
        if hasattr(self.model, "merge_and_unload") and merge:
            self.model = self.model.merge_and_unload()
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        atomic_write_json(path / EXTRACTOR_CONFIG_NAME, self.format.to_dict())

    def _encode(self, sources: list[str]):
        tok = self.tokenizer
        old = tok.truncation_side
        tok.truncation_side = "left"  # keep the most recent utterances
        try:
            return tok(sources, max_length=self.format.max_source_length, truncation=True, padding=True,
                       return_tensors="pt")
        finally:
            tok.truncation_side = old

    def generate_text(self, utterance_lists: Sequence[Sequence[str]], batch_size: int = 16) -> list[str]:
        """Raw generated persona text for each list of utterances (no sentence splitting)."""
        import torch

        if isinstance(utterance_lists, (str, bytes)):
            raise TypeError("extract expects a list of utterance lists, e.g. [['hi', 'i am a nurse']], got a string")
        sources = []
        for i, utts in enumerate(utterance_lists):
            if isinstance(utts, str) or not all(isinstance(u, str) for u in utts):
                raise TypeError(f"item {i}: expected a list of utterance strings, got {type(utts).__name__}")
            sources.append(join_source(utts, self.format.source_separator))
        if self.format.kind == "causal":
            return self._generate_causal(utterance_lists, batch_size)
        texts = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start : start + batch_size]
            enc = self._encode(chunk)
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    num_beams=self.num_beams, max_new_tokens=self.max_new_tokens, do_sample=False,
                    no_repeat_ngram_size=3, early_stopping=True if self.num_beams > 1 else False,
                )
            texts.extend(self.tokenizer.batch_decode(out, skip_special_tokens=True))
        return texts

    def _generate_causal(self, utterance_lists, batch_size: int) -> list[str]:
        """Left-padded prompts, generation until the end-of-turn token, new tokens decoded."""
        import torch

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        device = self.model.device
        texts = []
        for start in range(0, len(utterance_lists), batch_size):
            prompts = [causal_prompt_ids(tok, utts, self.format) for utts in utterance_lists[start : start + batch_size]]
            width = max(len(p) for p in prompts)
            input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
            attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for i, p in enumerate(prompts):
                input_ids[i, width - len(p):] = torch.tensor(p)
                attention_mask[i, width - len(p):] = 1
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                    num_beams=self.num_beams, max_new_tokens=self.max_new_tokens, do_sample=False,
                    no_repeat_ngram_size=3, early_stopping=True if self.num_beams > 1 else False,
                    eos_token_id=tok.eos_token_id, pad_token_id=pad,
                )
            texts.extend(tok.batch_decode(out[:, width:], skip_special_tokens=True))
        return texts

    def extract(self, utterance_lists: Sequence[Sequence[str]], batch_size: int = 16) -> list[list[str]]:
        """Persona sentences (length-filtered, deduplicated) for each list of one speaker's utterances."""
        return [split_persona(t, self.min_words, self.max_words) for t in self.generate_text(utterance_lists, batch_size)]


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


def tokenize_examples(examples: list[dict], tokenizer, fmt: ExtractorFormat, decoder_start: int | None):
    """The training rows (``input_ids``, ``labels``, ...) of extractor examples in format ``fmt``."""
    from datasets import Dataset

    if fmt.kind == "causal":
        rows = [causal_training_example(tokenizer, e["utterances"], e["persona"], fmt) for e in examples]
        return Dataset.from_dict({key: [r[key] for r in rows] for key in ("input_ids", "attention_mask", "labels")})

    sources = [join_source(e["utterances"], fmt.source_separator) for e in examples]
    targets = [fmt.target_separator.join(" ".join(p.split()) for p in e["persona"]) for e in examples]
    old = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    enc = tokenizer(sources, max_length=fmt.max_source_length, truncation=True)
    tokenizer.truncation_side = old
    lab = tokenizer(text_target=targets, max_length=fmt.max_target_length + 1, truncation=True)["input_ids"]
    labels = []
    for ids in lab:
        if decoder_start is not None and ids and ids[0] == decoder_start:
            ids = ids[1:]  # BERT2BERT: [CLS] is the decoder start, not a token to predict
        labels.append(ids[: fmt.max_target_length])
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})


def train_persona_extractor(config=None, /, data_files: Sequence | None = None, *,
                            train_examples: list[dict] | None = None, dev_examples: list[dict] | None = None,
                            **kwargs) -> RecipeResult:
    """Fine-tune a persona extractor and save it (model, tokenizer, ``persona_extractor.json``).

    ``config``: a :class:`~hf_persona.training.configs.PersonaExtractorTrainingConfig`, or the output
    folder (then ``kwargs`` are its fields: ``backbone``, ``dev_from``, ``max_steps``, ...; keyword
    arguments also replace fields of a given config).
    Data: ``data_files`` (PERSONA-CHAT / MSC files, split at ``dev_from`` with
    :func:`load_extractor_examples`; None: :func:`default_data_files`) or ready ``train_examples`` /
    ``dev_examples`` (dicts with ``utterances`` and ``persona``).
    Training uses ``Seq2SeqTrainer``: progress bar, evaluation every ``eval_steps`` steps on up to
    ``max_dev_examples`` dev examples, the checkpoint with the lowest dev loss is kept and saved as
    the final model, and a rerun with the same ``output_dir`` resumes from the last checkpoint
    (SIGTERM/SIGINT save a checkpoint first, see :func:`hf_persona.training.common.train_resumable`).
    ``budget_minutes`` stops training after that much wall time (evaluating and saving first).
    ``min_support > 0`` trains and evaluates on grounded targets only (:func:`ground_examples`);
    0 keeps every persona sentence, as the paper does.
    ``lora`` (causal LM backbones): train LoRA adapters of that rank on every attention and MLP
    projection instead of all weights (:func:`lora_config`); the folder then keeps the adapter alone
    (``adapter_model.safetensors``, a few MB) and loads onto ``backbone``, or the merged full model
    with ``merge=True``.

    Returns a :class:`~hf_persona.training.recipe.RecipeResult`: the summary (steps, examples, dev loss
    and, with ``report_eval``, generation metrics on up to ``eval_generation_examples`` held-back
    examples; ``json_out`` writes it as JSON), the ``output_dir`` and the trained
    :class:`PersonaExtractor` as ``model``.
    """
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from .common import last_checkpoint, time_budget_callback, train_resumable

    cfg = PersonaExtractorTrainingConfig.build(config, **kwargs)
    output_dir, seed, lora, backbone = Path(cfg.output_dir), cfg.seed, cfg.lora, cfg.backbone
    min_support = cfg.min_support
    if train_examples is None:
        if data_files is None:
            data_files = default_data_files()
        train_examples, dev_loaded = load_extractor_examples(data_files, dev_from=cfg.dev_from)
        if dev_examples is None:
            dev_examples = dev_loaded
    raw_counts = (len(train_examples), len(dev_examples or []))
    train_examples = ground_examples(train_examples, min_support)
    dev_examples = ground_examples(dev_examples or [], min_support)
    if not train_examples:
        raise HFPersonaError(
            "no training examples: the data holds no speaker with both utterances and a persona"
            + (f" sentence of persona_support >= {min_support}" if min_support else "")
        )
    if not dev_examples:
        raise HFPersonaError(f"no held-back examples (dialogues with index >= {cfg.dev_from}); lower dev_from or "
                             "add data")
    for name, exs in (("train", train_examples), ("dev", dev_examples)):
        for i, e in enumerate(exs[:5]):
            if not isinstance(e.get("utterances"), (list, tuple)) or not isinstance(e.get("persona"), (list, tuple)):
                raise HFPersonaError(f"{name} example {i}: expected keys 'utterances' (list) and 'persona' (list)")
    if cfg.max_train_examples:
        import random

        rng = random.Random(seed)
        train_examples = list(train_examples)
        rng.shuffle(train_examples)
        train_examples = train_examples[:cfg.max_train_examples]
    dev_loss_examples = list(dev_examples)[:cfg.max_dev_examples]

    from ..backbones import is_causal_lm

    model, tokenizer = build_extractor_model(backbone, seed=seed)
    kind = "causal" if is_causal_lm(model.config) else "seq2seq"
    if lora and kind != "causal":
        raise HFPersonaError(f"LoRA needs a pretrained causal LM backbone ({backbone!r} builds a {kind} model whose "
                             "cross-attention starts untrained); use --backbone smollm2 or train all weights")
    fmt = ExtractorFormat(_source_separator(tokenizer), TARGET_SEPARATOR, cfg.max_source_length,
                          cfg.max_target_length, kind, backbone=backbone if lora and not cfg.merge else None)
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(lora))
    start = None
    if kind == "seq2seq" and model.__class__.__name__ == "EncoderDecoderModel":
        start = model.config.decoder_start_token_id  # BERT2BERT: [CLS] starts the decoder, not a label
    if kind == "causal":
        tokenizer.padding_side = "right"  # training batches; generation left-pads by itself
    train_ds = tokenize_examples(train_examples, tokenizer, fmt, start)
    dev_ds = tokenize_examples(dev_loss_examples, tokenizer, fmt, start)

    args = trainer_arguments(
        Seq2SeqTrainingArguments, output_dir, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=cfg.max_steps, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps,
        save_steps=cfg.eval_steps, progress=cfg.progress,
        per_device_eval_batch_size=max(cfg.batch_size, 16),
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
    )
    budget_cb = time_budget_callback(cfg.budget_minutes)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=None if kind == "causal" else model, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[budget_cb],
    )
    resume_from = last_checkpoint(output_dir) if cfg.resume else None
    if resume_from:
        logger.info("resuming from %s", resume_from)
    t0 = time.monotonic()
    result = train_resumable(trainer, resume=cfg.resume)
    train_seconds = time.monotonic() - t0
    dev_metrics = trainer.evaluate()
    extractor = PersonaExtractor(trainer.model, tokenizer, fmt, num_beams=cfg.num_beams)
    if args.should_save:  # rank 0 of a multi-process run writes the folder
        extractor.save_pretrained(output_dir, merge=cfg.merge)
    summary = {
        "backbone": backbone,
        "kind": kind,
        "train_examples": len(train_examples),
        "dev_examples": len(dev_examples),
        "min_support": min_support,
        "examples_before_grounding": {"train": raw_counts[0], "dev": raw_counts[1]},
        "dev_loss_examples": len(dev_loss_examples),
        "global_step": trainer.state.global_step,
        **run_size(args, trainer.state),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_loss": result.training_loss,
        "dev_loss": dev_metrics.get("eval_loss"),
        "train_seconds": round(train_seconds, 1),
        "budget_minutes": cfg.budget_minutes,
        "stopped_by_budget": budget_cb.stopped_at is not None,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "lora_rank": lora or None,
        "merged": bool(lora and cfg.merge),
        "seed": seed,
        "resumed_from": resume_from,
    }
    if cfg.report_eval and cfg.eval_generation_examples and args.should_save:
        from ..evaluation.persona_extractor import evaluate_extractor_on_examples

        summary["eval"] = evaluate_extractor_on_examples(extractor, dev_examples[:cfg.eval_generation_examples])
    return RecipeResult(write_summary(summary, cfg.json_out, args), output_dir, extractor)


def lora_config(rank: int):
    """The LoRA recipe of the causal-LM generators: rank ``rank``, alpha 2·rank, dropout 0.05, on
    every linear projection of the attention and MLP blocks (not the embeddings or the LM head)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")





#: moved to hf_persona.evaluation.persona_extractor (the old names still import, with a DeprecationWarning)
__getattr__ = moved_names(__name__, dict.fromkeys((
    "evaluate_extractor_on_examples", "evaluate_persona_extractor",
), "hf_persona.evaluation.persona_extractor"))
