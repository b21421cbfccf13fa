"""Readers for ESConv, PERSONA-CHAT / ConvAI2 (ParlAI text) and Multi-Session Chat.

Every reader returns a ``datasets.Dataset`` with one row per dialogue. A malformed line raises
:class:`~hf_persona.errors.DataFormatError` naming the file, the line and what was expected; with
``skip_malformed=True`` the dialogue holding it is left out and the count is logged.

Columns
-------
PERSONA-CHAT (``read_personachat``): ``dialogue_id`` (int, 0-based order in the file),
``your_persona`` and ``partner_persona`` (list[str]), ``utterances`` (list[str]) and
``speakers`` (list[str], ``"partner"`` or ``"you"``). Utterances alternate and the partner speaks
first; when the responder opened the conversation (ParlAI's ``__SILENCE__``) the empty partner
turn is left out and ``speakers`` starts with ``"you"``.

ESConv (``read_esconv``): ``dialogue_id``, ``emotion_type``, ``problem_type``, ``situation``
(str), ``utterances``, ``speakers`` (``"usr"`` help-seeker / ``"sys"`` supporter) and
``strategies`` (one of :data:`ESCONV_STRATEGIES` for ``sys`` turns, ``""`` for ``usr`` turns).

MSC (``read_msc``): ``dialogue_id``, ``speaker1_persona``, ``speaker2_persona``, ``utterances``,
``speakers`` (``"Speaker 1"`` / ``"Speaker 2"``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path

from ..errors import DataFormatError, HFPersonaError

logger = logging.getLogger(__name__)

ESCONV_STRATEGIES = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    "Others",
)

_PARLAI_LINE = re.compile(r"^(\d+) (.*)$", re.DOTALL)
_YOUR = "your persona:"
_PARTNER = "partner's persona:"
_SILENCE = "__SILENCE__"


def _dataset(rows: list[dict], columns: tuple[str, ...]):
    import datasets

    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns})


def _lines(path):
    """Yield (line_number, text) with UTF-8 decoding errors reported per line."""
    path = Path(path)
    if not path.is_file():
        raise HFPersonaError(f"{path}: no such file")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, number, f"UTF-8 text ({exc.reason} at byte {exc.start})")
            yield number, text.rstrip("\r\n")


def _log_skipped(path, skipped: int, kind: str) -> None:
    if skipped:
        logger.warning("%s: skipped %d malformed %s", path, skipped, kind)


# ---------------------------------------------------------------------------------------------
# PERSONA-CHAT / ConvAI2
# ---------------------------------------------------------------------------------------------
PERSONACHAT_COLUMNS = ("dialogue_id", "your_persona", "partner_persona", "utterances", "speakers")


def _finish_personachat(path, dialogue, rows):
    if not dialogue["utterances"]:
        raise DataFormatError(path, dialogue["start"], "a dialogue with at least one utterance line (text<TAB>reply)")
    rows.append({k: dialogue[k] for k in PERSONACHAT_COLUMNS[1:]})


def read_personachat(path, skip_malformed: bool = False):
    """Read a ParlAI-text PERSONA-CHAT / ConvAI2 file (``*_both_*`` or ``*_self_*``)."""
    rows: list[dict] = []
    skipped = 0
    dialogue = None
    bad = False  # inside a dialogue that is being skipped
    expected_number = None
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            match = _PARLAI_LINE.match(text)
            if not match:
                raise DataFormatError(path, number, "'<turn number> <text>'", text)
            turn = int(match.group(1))
            body = match.group(2)
            if turn == 1:
                if dialogue is not None and not bad:
                    _finish_personachat(path, dialogue, rows)
                dialogue = {"start": number, "your_persona": [], "partner_persona": [],
                            "utterances": [], "speakers": []}
                bad = False
            elif dialogue is None or turn != expected_number:
                if bad:
                    expected_number = turn + 1
                    continue
                want = "1" if dialogue is None else f"{expected_number} or 1 (new dialogue)"
                raise DataFormatError(path, number, f"turn number {want}", text)
            expected_number = turn + 1
            if bad:
                continue
            if body.startswith(_YOUR) or body.startswith(_PARTNER):
                if dialogue["utterances"]:
                    raise DataFormatError(path, number, "persona lines before the first utterance", text)
                key = "your_persona" if body.startswith(_YOUR) else "partner_persona"
                sentence = body.split(":", 1)[1].strip()
                if not sentence:
                    raise DataFormatError(path, number, "a non-empty persona sentence", text)
                dialogue[key].append(sentence)
                continue
            fields = body.split("\t")
            if len(fields) < 2 or not fields[1].strip():
                raise DataFormatError(path, number, "'<partner utterance><TAB><reply>'", text)
            partner, reply = fields[0].strip(), fields[1].strip()
            if partner and partner != _SILENCE:
                dialogue["utterances"].append(partner)
                dialogue["speakers"].append("partner")
            elif partner != _SILENCE or dialogue["utterances"]:
                raise DataFormatError(path, number, "a non-empty partner utterance", text)
            dialogue["utterances"].append(reply)
            dialogue["speakers"].append("you")
        except DataFormatError:
            if not skip_malformed:
                raise
            skipped += 1
            bad = True
            if dialogue is None:
                dialogue = {"start": number, "your_persona": [], "partner_persona": [], "utterances": [], "speakers": []}
            expected_number = (expected_number or 0) + 1
    if dialogue is not None and not bad:
        try:
            _finish_personachat(path, dialogue, rows)
        except DataFormatError:
            if not skip_malformed:
                raise
            skipped += 1
    _log_skipped(path, skipped, "dialogues")
    for i, row in enumerate(rows):
        row["dialogue_id"] = i
    return _dataset(rows, PERSONACHAT_COLUMNS)


# ---------------------------------------------------------------------------------------------
# JSON-lines formats (ESConv, MSC)
# ---------------------------------------------------------------------------------------------
def _json_objects(path, skip_malformed, validate):
    rows, skipped = [], 0
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, number, f"one JSON object per line ({exc.msg} at column {exc.colno})")
            if isinstance(obj, dict) and set(obj) == {"text"} and isinstance(obj["text"], str):
                try:  # the Hub's thu-coai/esconv wraps each dialogue as {"text": "<json>"}
                    obj = json.loads(obj["text"])
                except json.JSONDecodeError as exc:
                    raise DataFormatError(path, number, f"a JSON dialogue inside 'text' ({exc.msg})")
            if not isinstance(obj, dict):
                raise DataFormatError(path, number, f"a JSON object, not {type(obj).__name__}")
            rows.append(validate(obj, number))
        except DataFormatError:
            if not skip_malformed:
                raise
            skipped += 1
    _log_skipped(path, skipped, "lines")
    for i, row in enumerate(rows):
        row["dialogue_id"] = i
    return rows


def _expect_str(path, number, obj, key, allow_missing=False):
    value = obj.get(key, "" if allow_missing else None)
    if not isinstance(value, str):
        raise DataFormatError(path, number, f"field {key!r} to be a string, not {type(value).__name__}")
    return value


ESCONV_COLUMNS = ("dialogue_id", "emotion_type", "problem_type", "situation", "utterances", "speakers", "strategies")


def read_esconv(path, merge_consecutive: bool = False, skip_malformed: bool = False):
    """Read ESConv JSON lines (local copy or the Hub's thu-coai/esconv layout).

    ``merge_consecutive=True`` joins consecutive turns of one speaker with a space; a merged
    supporter turn keeps the strategy of its first part.
    """

    def validate(obj, number):
        dialog = obj.get("dialog")
        if not isinstance(dialog, list) or not dialog:
            raise DataFormatError(path, number, "a non-empty list 'dialog' of turns")
        utterances, speakers, strategies = [], [], []
        for i, turn in enumerate(dialog):
            if not isinstance(turn, dict):
                raise DataFormatError(path, number, f"dialog[{i}] to be an object with 'text' and 'speaker'")
            speaker = turn.get("speaker")
            if speaker not in ("usr", "sys"):
                raise DataFormatError(path, number, f"dialog[{i}].speaker to be 'usr' or 'sys', not {speaker!r}")
            text = turn.get("text")
            if not isinstance(text, str):
                raise DataFormatError(path, number, f"dialog[{i}].text to be a string")
            strategy = ""
            if speaker == "sys":
                strategy = turn.get("strategy")
                if strategy not in ESCONV_STRATEGIES:
                    raise DataFormatError(
                        path, number,
                        f"dialog[{i}].strategy to be one of {', '.join(ESCONV_STRATEGIES)}; got {strategy!r}",
                    )
            text = text.strip()
            if merge_consecutive and speakers and speakers[-1] == speaker:
                utterances[-1] = f"{utterances[-1]} {text}".strip()
                continue
            utterances.append(text)
            speakers.append(speaker)
            strategies.append(strategy)
        return {
            "emotion_type": _expect_str(path, number, obj, "emotion_type", allow_missing=True),
            "problem_type": _expect_str(path, number, obj, "problem_type", allow_missing=True),
            "situation": _expect_str(path, number, obj, "situation", allow_missing=True),
            "utterances": utterances,
            "speakers": speakers,
            "strategies": strategies,
        }

    return _dataset(_json_objects(path, skip_malformed, validate), ESCONV_COLUMNS)


_MSC_SPEAKERS = ("Speaker 1", "Speaker 2")
MSC_COLUMNS = ("dialogue_id", "speaker1_persona", "speaker2_persona", "utterances", "speakers")


def read_msc(path, skip_malformed: bool = False):
    """Read Multi-Session Chat JSON lines (``personas[0]`` is Speaker 1's, ``personas[1]`` Speaker 2's)."""

    def validate(obj, number):
        personas = obj.get("personas")
        if (not isinstance(personas, list) or len(personas) != 2
                or not all(isinstance(p, list) and all(isinstance(s, str) for s in p) for p in personas)):
            raise DataFormatError(path, number, "'personas' as two lists of sentences")
        dialog = obj.get("dialog")
        if not isinstance(dialog, list) or not dialog:
            raise DataFormatError(path, number, "a non-empty list 'dialog' of turns")
        utterances, speakers = [], []
        for i, turn in enumerate(dialog):
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                raise DataFormatError(path, number, f"dialog[{i}] to be an object with a string 'text'")
            utterances.append(turn["text"].strip())
            speakers.append(turn.get("id") if turn.get("id") in _MSC_SPEAKERS else None)
        # Some MSC turns carry a crowd-worker id instead of the speaker label; speakers alternate,
        # so such a turn takes the label implied by the nearest labelled turn.
        labelled = [i for i, s in enumerate(speakers) if s is not None]
        if not labelled:
            raise DataFormatError(path, number, "at least one turn with id 'Speaker 1' or 'Speaker 2'")
        for i, s in enumerate(speakers):
            if s is None:
                j = min(labelled, key=lambda k: abs(k - i))
                same = (j - i) % 2 == 0
                speakers[i] = speakers[j] if same else _MSC_SPEAKERS[1 - _MSC_SPEAKERS.index(speakers[j])]
                relabelled[0] += 1
        return {
            "speaker1_persona": [s.strip() for s in personas[0] if s.strip()],
            "speaker2_persona": [s.strip() for s in personas[1] if s.strip()],
            "utterances": utterances,
            "speakers": speakers,
        }

    relabelled = [0]
    rows = _json_objects(path, skip_malformed, validate)
    if relabelled[0]:
        logger.info("%s: %d turns had a worker id instead of a speaker label; labelled by alternation",
                    path, relabelled[0])
    return _dataset(rows, MSC_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Format detection, splits and candidates
# ---------------------------------------------------------------------------------------------
FORMATS = ("personachat", "esconv", "msc")


def detect_format(path) -> str:
    """Guess the format from the first non-empty line: ParlAI text, ESConv or MSC JSON lines."""
    for number, text in _lines(path):
        if not text.strip():
            continue
        if _PARLAI_LINE.match(text):
            return "personachat"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            raise DataFormatError(path, number, "ParlAI text ('<n> <text>') or one JSON object per line", text)
        if isinstance(obj, dict) and set(obj) == {"text"} and isinstance(obj["text"], str):
            return "esconv"
        if isinstance(obj, dict) and "personas" in obj:
            return "msc"
        if isinstance(obj, dict) and "dialog" in obj:
            return "esconv"
        raise DataFormatError(path, number, "an ESConv ('dialog') or MSC ('personas') JSON object")
    raise DataFormatError(path, None, "at least one non-empty line")


def read_dialogues(path, format: str | None = None, **options):
    """Read ``path`` with the reader for ``format`` (detected when None). Returns (format, dataset)."""
    fmt = format or detect_format(path)
    readers = {"personachat": read_personachat, "esconv": read_esconv, "msc": read_msc}
    if fmt not in readers:
        raise HFPersonaError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt, readers[fmt](path, **options)


def split_by_dialogue(dataset, first: int | None = None, test_fraction: float | None = None, seed: int = 0):
    """Split dialogues into (train, dev): the first ``first`` dialogues and the rest, or a seeded
    random ``test_fraction`` held out. Dialogues are never cut in two."""
    n = len(dataset)
    if (first is None) == (test_fraction is None):
        raise HFPersonaError("split_by_dialogue needs exactly one of first= or test_fraction=")
    if first is not None:
        if not 0 < first < n:
            raise HFPersonaError(f"first={first} must be between 1 and {n - 1} for {n} dialogues")
        return dataset.select(range(first)), dataset.select(range(first, n))
    if not 0 < test_fraction < 1:
        raise HFPersonaError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(n * test_fraction))
    dev, train = sorted(order[:n_dev]), sorted(order[n_dev:])
    if not train:
        raise HFPersonaError(f"test_fraction={test_fraction} leaves no training dialogues out of {n}")
    return dataset.select(train), dataset.select(dev)


def sample_candidates(pool, n: int, exclude=(), seed: int = 0) -> list:
    """``n`` distinct items from ``pool`` that are not in ``exclude``, reproducibly for ``seed``."""
    excluded = set(exclude)
    choices = list(dict.fromkeys(x for x in pool if x not in excluded))
    if n > len(choices):
        raise HFPersonaError(f"asked for {n} candidates but the pool has only {len(choices)} usable items")
    return random.Random(seed).sample(choices, n)


def shared_data_dir():
    """The real-data folder: ``$HF_PERSONA_DATA`` or ``../shared/data`` next to the project; None if absent."""
    env = os.environ.get("HF_PERSONA_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "data" for p in here.parents[2:4]]
    candidates.append(Path.cwd().parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


PERSONACHAT_DEV_FILE = ("personachat", "valid_both_original_no_cands.txt")


def shared_data_file(given=None, *parts) -> str:
    """``given`` when set, else ``parts`` under :func:`shared_data_dir` (default: PERSONA-CHAT
    ``valid_both_original``, the file every PERSONA-CHAT benchmark uses); a clear error when the
    file is missing."""
    parts = parts or PERSONACHAT_DEV_FILE
    if given:
        path = Path(given)
    else:
        root = shared_data_dir()
        if root is None:
            raise HFPersonaError("no real-data folder found (../shared/data or $HF_PERSONA_DATA): pass the file with "
                                 f"--data or set HF_PERSONA_DATA to a folder holding {'/'.join(parts)}")
        path = root.joinpath(*parts)
    if not path.is_file():
        raise HFPersonaError(f"data file not found: {path}")
    return str(path)
