"""Readers for ESConv, PERSONA-CHAT / ConvAI2 (ParlAI text) and Multi-Session Chat.

Every reader returns a ``datasets.Dataset`` with one row per dialogue. A malformed line raises
:class:`~hf_persona.errors.DataFormatError` naming the file, the line and what was expected; so do
bytes that are not UTF-8, numbers past Python's digit limit, JSON nested too deeply, lone
surrogates and a file with no dialogue at all. With ``skip_malformed=True`` the dialogue holding a
malformed line is left out, and only that one: ``dialogues kept + skipped = dialogues in the file``.
The skip count and the skipped lines are logged and, when a dict is passed as ``report=``, stored
there (``dialogues``, ``skipped``, ``skipped_at``: ``[{"line", "error"}]``). A file left with no
well-formed dialogue is an error even when skipping.

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

_PARLAI_LINE = re.compile(r"^([0-9]+) (.*)$", re.DOTALL)
_MAX_TURN_DIGITS = 9
_YOUR = "your persona:"
_PARTNER = "partner's persona:"
_SILENCE = "__SILENCE__"
_SHOWN_SKIPS = 10  # skipped dialogues listed by line in the log message


def _dataset(rows: list[dict], columns: tuple[str, ...]):
    """The rows as a ``datasets.Dataset``, its fingerprint a hash of the content (``Dataset.from_dict``
    would pickle the whole table to make one, most of the time of a read)."""
    import hashlib

    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    mapping = {c: [r[c] for r in rows] for c in columns}
    first = rows[0] if rows else {}
    schema = pa.schema([(c, pa.int64() if c == "dialogue_id" else pa.list_(pa.string())
                         if isinstance(first.get(c), list) else pa.string()) for c in columns])
    table = pa.Table.from_pydict(mapping, schema=schema)
    digest = hashlib.sha256(json.dumps(mapping, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    info = datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(schema))
    return datasets.Dataset(InMemoryTable(table), info=info, fingerprint=digest)


def _decode(path, number, raw: bytes):
    """(text, error): the line without its line break, or the DataFormatError for bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError as exc:
        error = DataFormatError(path, number, f"UTF-8 text ({exc.reason} at byte {exc.start})")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n"), error


def _lines(path):
    """Yield (line_number, text, error) for every non-blank line (a UTF-8 byte-order mark dropped);
    ``error`` is a DataFormatError for a line that is not valid UTF-8 (``text`` then holds it
    decoded with replacement characters)."""
    path = Path(path)
    if not path.is_file():
        raise HFPersonaError(f"{path}: no such file")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            text, error = _decode(path, number, raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw)
            if text.strip():
                yield number, text, error


def _empty_file_error(path):
    return DataFormatError(path, 1, "at least one dialogue (the file is empty or blank)")


class _Outcome:
    """Rows kept and dialogues skipped by one read; raises at the first error unless skipping."""

    def __init__(self, path, skip_malformed: bool):
        self.path, self.skip_malformed = path, skip_malformed
        self.rows: list[dict] = []
        self.skipped: list[DataFormatError] = []

    def keep(self, row: dict) -> None:
        self.rows.append(row)

    def malformed(self, error: DataFormatError) -> None:
        if not self.skip_malformed:
            raise error
        self.skipped.append(error)

    def finish(self, report: dict | None) -> list[dict]:
        path, skipped = self.path, self.skipped
        if not self.rows:
            if not skipped:
                raise _empty_file_error(path)
            first = skipped[0]
            raise DataFormatError(
                path, first.line,
                f"at least one well-formed dialogue; all {len(skipped)} are malformed, the first: {first.expected}",
            )
        if skipped:
            lines = ", ".join(str(e.line) for e in skipped[:_SHOWN_SKIPS])
            more = f" and {len(skipped) - _SHOWN_SKIPS} more" if len(skipped) > _SHOWN_SKIPS else ""
            logger.warning("%s: skipped %d malformed dialogues (at lines %s%s; first: %s)",
                           path, len(skipped), lines, more, skipped[0])
        for i, row in enumerate(self.rows):
            row["dialogue_id"] = i
        if report is not None:
            report.update({
                "dialogues": len(self.rows),
                "skipped": len(skipped),
                "skipped_at": [{"line": e.line, "error": str(e)} for e in skipped],
            })
        return self.rows


# ---------------------------------------------------------------------------------------------
# PERSONA-CHAT / ConvAI2
# ---------------------------------------------------------------------------------------------
PERSONACHAT_COLUMNS = ("dialogue_id", "your_persona", "partner_persona", "utterances", "speakers")


def _turn(text):
    """(turn number or None, body or None, what was expected when the line has no usable number)."""
    match = _PARLAI_LINE.match(text)
    if not match:
        return None, None, "'<turn number> <text>'"
    digits = match.group(1)
    if len(digits) > _MAX_TURN_DIGITS:
        return None, match.group(2), f"a turn number of at most {_MAX_TURN_DIGITS} digits"
    return int(digits), match.group(2), None


_MISNUMBERED, _MISSING = 2, 3  # costs of a line with a wrong turn number, of lines missing before a line


def _number_dialogues(observed, persona):
    """Assign each ParlAI line a turn number and decide where dialogues start.

    ``observed`` holds each line's turn number (None when unreadable), ``persona`` whether the line
    is a persona line (True), an utterance line (False) or unknown (None). Returns, per line,
    (starts_dialogue, previous turn or None when the line is well numbered, assigned turn).

    A well-numbered file counts 1, 2, 3, ... within each dialogue (and, when it has persona lines,
    opens every dialogue with one: a line 1 holding an utterance there is suspect). Around a misnumbered line, the
    stretch between the nearest sure dialogue starts (a line 1 followed by a line 2) is explained
    with the fewest errors by :func:`_viterbi_numbering`, so a corrupted first line starts its own
    dialogue instead of joining the one before, and a corrupted middle line stays in its dialogue.
    """
    n_lines = len(observed)
    persona_file = any(persona)  # then every dialogue opens with persona lines
    fits = [(n == 1 and (persona[i] is not False or not persona_file))
            or (i > 0 and n is not None and observed[i - 1] is not None and n == observed[i - 1] + 1)
            for i, n in enumerate(observed)]
    if all(fits) and (not observed or observed[0] == 1):
        return [(n == 1, None, n) for n in observed]
    anchors = [i for i in range(n_lines - 1) if observed[i] == 1 and observed[i + 1] == 2]
    bounds = sorted(set([0] + anchors + [n_lines]))
    out = []
    for a, b in zip(bounds, bounds[1:]):
        if all(fits[a:b]) and observed[a] == 1:
            out += [(n == 1, None, n) for n in observed[a:b]]
        else:
            out += _viterbi_numbering(observed[a:b], persona[a:b], persona_file)
    return out


def _viterbi_numbering(observed, persona, persona_file):
    """The numbering of a stretch of lines (the first starts a dialogue) with the fewest errors.

    A Viterbi pass over "continues", "starts a dialogue", "lines missing" and "stray line". Missing
    lines cost more than a wrong number (one corrupted line is likelier than lost ones); a persona
    line after an utterance costs as much as a wrong number, and so does a dialogue opened by an
    utterance line when it is misnumbered or the file has persona lines; ties go to fewer dialogues.
    """
    # states: assigned turn t of the current line -> (misnumbered lines, dialogues); back[i][t] = (prev t, kind)
    INF = (float("inf"), 0)
    states = {0: (0, 0)}
    back: list[dict] = []
    for i, n in enumerate(observed):
        misplaced = _MISNUMBERED if persona[i] and i and persona[i - 1] is False else 0  # persona after talk
        opener = _MISNUMBERED if persona[i] is False and (n != 1 or persona_file) else 0  # an utterance opens
        new: dict[int, tuple] = {}
        links: dict[int, tuple] = {}

        def offer(t, cost, prev, kind):
            if cost < new.get(t, INF):
                new[t], links[t] = cost, (prev, kind)

        for s, (errors, dialogues) in sorted(states.items(), key=lambda kv: kv[1]):
            if s == 0:  # before the first dialogue
                offer(1, (errors + _MISNUMBERED * (n != 1) + opener, dialogues + 1), s, "start")
                if n is not None and n > 1:
                    offer(n, (errors + _MISSING, dialogues + 1), s, "lost")
                continue
            offer(s + 1, (errors + _MISNUMBERED * (n != s + 1) + misplaced, dialogues), s, "next")
            offer(1, (errors + _MISNUMBERED * (n != 1) + opener, dialogues + 1), s, "start")
            if n is not None and n > s + 1:
                offer(n, (errors + _MISSING + misplaced, dialogues), s, "gap")  # lines missing inside the dialogue
            if n is not None and 1 < n <= s:
                offer(n, (errors + _MISSING, dialogues + 1), s, "lost")  # a dialogue whose first lines are missing
            offer(s, (errors + _MISNUMBERED, dialogues), s, "stray")  # a line that belongs to no turn
        best = min(new.values())[0]
        kept = sorted((c, t) for t, c in new.items() if c[0] <= best + 3 * _MISSING)[:16]
        states = {t: c for c, t in kept}
        back.append({t: links[t] for t in states})
    t = min(states, key=lambda k: states[k])
    out = [None] * len(observed)
    for i in range(len(observed) - 1, -1, -1):
        prev, kind = back[i][t]
        well_numbered = kind in ("next", "start") and observed[i] == t
        out[i] = (kind in ("start", "lost"), None if well_numbered else prev, t)
        t = prev
    return out


def _looks_persona(text):
    """For a line without a readable turn number: persona line (True), utterance (False) or unknown (None)."""
    if _YOUR in text or _PARTNER in text:
        return True
    return False if "\t" in text else None


def _personachat_error(path, number, text, prev, unreadable, turn, observed):
    if unreadable is not None:
        return DataFormatError(path, number, unreadable, text)
    if turn == 1 and observed == prev + 1:
        want = "1 (the lines after it number a new dialogue)"
    elif observed == 1 and prev:
        want = f"{prev + 1}, not 1 (the lines around it continue a dialogue)"
    else:
        want = "1" if not prev else f"{prev + 1} or 1 (new dialogue)"
    return DataFormatError(path, number, f"turn number {want}", text)


def _personachat_dialogue(path, lines):
    """Row of one dialogue ``[(number, text, decode_error, body, numbering_error)]``; raises DataFormatError."""
    dialogue = {"your_persona": [], "partner_persona": [], "utterances": [], "speakers": []}
    for number, text, error, body, numbering in lines:
        if error is not None:
            raise error
        if numbering is not None:
            raise numbering
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
    if not dialogue["utterances"]:
        raise DataFormatError(path, lines[0][0], "a dialogue with at least one utterance line (text<TAB>reply)")
    return dialogue


def _personachat_rows(path, skip_malformed=False, report=None) -> list[dict]:
    lines = list(_lines(path))
    parsed = [_turn(text) for _, text, _ in lines]
    persona = [body.startswith((_YOUR, _PARTNER)) if body is not None else _looks_persona(text)
               for (_, text, _), (_, body, _) in zip(lines, parsed)]
    layout = _number_dialogues([n for n, _, _ in parsed], persona)
    outcome = _Outcome(path, skip_malformed)
    dialogue: list = []
    for (number, text, error), (observed, body, unreadable), (starts, prev, turn) in zip(lines, parsed, layout):
        if starts and dialogue:
            _finish(path, dialogue, outcome)
            dialogue = []
        numbering = None
        if prev is not None or unreadable is not None:
            numbering = _personachat_error(path, number, text, prev, unreadable, turn, observed)
        dialogue.append((number, text, error, body, numbering))
    if dialogue:
        _finish(path, dialogue, outcome)
    return outcome.finish(report)


def _finish(path, dialogue, outcome):
    try:
        row = _personachat_dialogue(path, dialogue)
    except DataFormatError as exc:
        outcome.malformed(exc)
    else:
        outcome.keep(row)


def read_personachat(path, skip_malformed: bool = False, report: dict | None = None):
    """Read a ParlAI-text PERSONA-CHAT / ConvAI2 file (``*_both_*`` or ``*_self_*``).

    A dialogue starts at each line numbered 1; a line whose number is corrupted is placed by the
    numbering of the lines around it, so skipping it (``skip_malformed=True``) costs only its own
    dialogue. ``report`` (a dict) receives ``dialogues``, ``skipped`` and ``skipped_at``.
    """
    return _dataset(_personachat_rows(path, skip_malformed, report), PERSONACHAT_COLUMNS)


# ---------------------------------------------------------------------------------------------
# JSON-lines formats (ESConv, MSC)
# ---------------------------------------------------------------------------------------------
def _parse_json(path, number, text, expected):
    """``json.loads`` with every failure (syntax, huge integers, deep nesting) as DataFormatError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, number, f"{expected} ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataFormatError(path, number, f"{expected} (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise DataFormatError(path, number, f"{expected} ({str(exc).split(':')[0]})") from None


def _check_text(path, number, value, where="") -> None:
    """Strings must be encodable as UTF-8 (JSON escapes can hold lone surrogates such as \\ud800)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataFormatError(
                path, number, f"valid Unicode text in {where or 'the line'} (lone surrogate {value[exc.start]!r})"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(path, number, item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(path, number, item, f"{where}[{i}]")


def _json_objects(path, skip_malformed, validate, report=None):
    outcome = _Outcome(path, skip_malformed)
    for number, text, error in _lines(path):
        try:
            if error is not None:
                raise error
            obj = _parse_json(path, number, text, "one JSON object per line")
            if isinstance(obj, dict) and set(obj) == {"text"} and isinstance(obj["text"], str):
                # the Hub's thu-coai/esconv wraps each dialogue as {"text": "<json>"}
                obj = _parse_json(path, number, obj["text"], "a JSON dialogue inside 'text'")
            if not isinstance(obj, dict):
                raise DataFormatError(path, number, f"a JSON object, not {type(obj).__name__}")
            row = validate(obj, number)
            _check_text(path, number, row)
        except DataFormatError as exc:
            outcome.malformed(exc)
        else:
            outcome.keep(row)
    return outcome.finish(report)


def _expect_str(path, number, obj, key, allow_missing=False):
    value = obj.get(key, "" if allow_missing else None)
    if not isinstance(value, str):
        raise DataFormatError(path, number, f"field {key!r} to be a string, not {type(value).__name__}")
    return value


ESCONV_COLUMNS = ("dialogue_id", "emotion_type", "problem_type", "situation", "utterances", "speakers", "strategies")


def _esconv_rows(path, merge_consecutive=False, skip_malformed=False, report=None) -> list[dict]:
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
                raise DataFormatError(path, number, f"dialog[{i}].speaker to be 'usr' or 'sys', not {_shown(speaker)}")
            text = turn.get("text")
            if not isinstance(text, str):
                raise DataFormatError(path, number, f"dialog[{i}].text to be a string")
            strategy = ""
            if speaker == "sys":
                strategy = turn.get("strategy")
                if strategy not in ESCONV_STRATEGIES:
                    raise DataFormatError(
                        path, number,
                        f"dialog[{i}].strategy to be one of {', '.join(ESCONV_STRATEGIES)}; got {_shown(strategy)}",
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

    return _json_objects(path, skip_malformed, validate, report)


def _shown(value, limit=60):
    """repr() of a value read from a file, cut short and safe to print (lone surrogates escaped)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_esconv(path, merge_consecutive: bool = False, skip_malformed: bool = False, report: dict | None = None):
    """Read ESConv JSON lines (local copy or the Hub's thu-coai/esconv layout).

    ``merge_consecutive=True`` joins consecutive turns of one speaker with a space; a merged
    supporter turn keeps the strategy of its first part. One line is one dialogue.
    ``report`` (a dict) receives ``dialogues``, ``skipped`` and ``skipped_at``.
    """
    return _dataset(_esconv_rows(path, merge_consecutive, skip_malformed, report), ESCONV_COLUMNS)


_MSC_SPEAKERS = ("Speaker 1", "Speaker 2")
MSC_COLUMNS = ("dialogue_id", "speaker1_persona", "speaker2_persona", "utterances", "speakers")


def _msc_rows(path, skip_malformed=False, report=None) -> list[dict]:
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
            speaker = turn.get("id")
            speakers.append(speaker if isinstance(speaker, str) and speaker in _MSC_SPEAKERS else None)
        # Some MSC turns carry a crowd-worker id instead of the speaker label; speakers alternate,
        # so such a turn takes the label implied by the nearest labelled turn.
        labelled = [i for i, s in enumerate(speakers) if s is not None]
        if not labelled:
            raise DataFormatError(path, number, "at least one turn with id 'Speaker 1' or 'Speaker 2'")
        fixed = 0
        for i, s in enumerate(speakers):
            if s is None:
                j = min(labelled, key=lambda k: abs(k - i))
                same = (j - i) % 2 == 0
                speakers[i] = speakers[j] if same else _MSC_SPEAKERS[1 - _MSC_SPEAKERS.index(speakers[j])]
                fixed += 1
        _check_text(path, number, [personas, utterances])
        relabelled[0] += fixed
        return {
            "speaker1_persona": [s.strip() for s in personas[0] if s.strip()],
            "speaker2_persona": [s.strip() for s in personas[1] if s.strip()],
            "utterances": utterances,
            "speakers": speakers,
        }

    relabelled = [0]
    rows = _json_objects(path, skip_malformed, validate, report)
    if relabelled[0]:
        logger.info("%s: %d turns had a worker id instead of a speaker label; labelled by alternation",
                    path, relabelled[0])
    return rows


def read_msc(path, skip_malformed: bool = False, report: dict | None = None):
    """Read Multi-Session Chat JSON lines (``personas[0]`` is Speaker 1's, ``personas[1]`` Speaker 2's).

    ``report`` (a dict) receives ``dialogues``, ``skipped`` and ``skipped_at``.
    """
    return _dataset(_msc_rows(path, skip_malformed, report), MSC_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Format detection, splits and candidates
# ---------------------------------------------------------------------------------------------
FORMATS = ("personachat", "esconv", "msc")
_DETECT_LINES = 20


def _line_format(path, number, text, error):
    """The format one line points to; raises DataFormatError when it points to none."""
    if _PARLAI_LINE.match(text):
        return "personachat"
    if error is not None:
        raise error
    obj = _parse_json(path, number, text, "ParlAI text ('<n> <text>') or one JSON object per line")
    if isinstance(obj, dict) and set(obj) == {"text"} and isinstance(obj["text"], str):
        return "esconv"
    if isinstance(obj, dict) and "personas" in obj:
        return "msc"
    if isinstance(obj, dict) and "dialog" in obj:
        return "esconv"
    raise DataFormatError(path, number, "an ESConv ('dialog') or MSC ('personas') JSON object")


def detect_format(path) -> str:
    """Guess the format from the first non-empty lines: ParlAI text, ESConv or MSC JSON lines.

    The first lines vote (up to 20 that point to a format), so one malformed line at the top does not
    decide; a file whose lines point to no format raises the error of its first line.
    """
    votes: dict[str, int] = {}
    first_error = None
    seen = 0
    for number, text, error in _lines(path):
        seen += 1
        try:
            fmt = _line_format(path, number, text, error)
        except DataFormatError as exc:
            first_error = first_error or exc
            if seen >= 5 * _DETECT_LINES:
                break
            continue
        votes[fmt] = votes.get(fmt, 0) + 1
        if sum(votes.values()) >= _DETECT_LINES:
            break
    if votes:
        return max(FORMATS, key=lambda f: votes.get(f, 0))  # ties: the order of FORMATS
    if first_error is not None:
        raise first_error
    raise _empty_file_error(path)


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
