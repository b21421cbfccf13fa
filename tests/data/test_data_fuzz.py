"""Fuzzing the readers with mutated copies of the embedded samples (issue 28 item 1).

Every mutated file either parses or raises ``DataFormatError`` naming ``file:line``; with
``skip_malformed=True`` the balance "parsed dialogues + skipped = dialogues in the file" holds exactly
and every dialogue no mutation touched comes back unchanged (a malformed line never costs a
neighbour). ``HF_PERSONA_FUZZ_EXAMPLES=5000`` runs more cases (and random ones) on demand.
"""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_persona.data import read_esconv, read_msc, read_personachat, sample_path
from hf_persona.errors import DataFormatError

EXAMPLES = int(os.environ.get("HF_PERSONA_FUZZ_EXAMPLES", "0")) or 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="HF_PERSONA_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=list(HealthCheck), database=None)

HUGE = b"9" * 5000  # past Python's 4,300-digit int() limit
DEEP = b"[" * 100_000 + b"]" * 100_000  # RecursionError in json.loads
SURROGATE_ESCAPE = b'"\\ud800"'  # a lone surrogate through a JSON escape
SURROGATE_BYTES = b"\xed\xa0\x80"  # a UTF-8-encoded surrogate: not UTF-8
JUNK = [b"\xff", b"\xc3", b"\x80\x80", SURROGATE_BYTES, b"\x00", b"\t", b"\r", b" ", b"\x0b", b"\xe2\x80\xa8",
        b"\\", b'"', b"{", b"}", b"[", b"]", b":", b",", b"1", b"1 ", b"x", "é".encode(), "٣".encode()]


def _sample_lines(name):
    return sample_path(name).read_bytes().splitlines()


# --- mutations: (kind, argument) applied to one line; the mutator records which lines it touched ---
def _mutations(json_lines: bool):
    position = st.floats(0, 1)
    kinds = [
        st.tuples(st.just("insert"), position, st.lists(st.sampled_from(JUNK), min_size=1, max_size=4)),
        st.tuples(st.just("insert_bytes"), position, st.binary(min_size=1, max_size=6)),
        st.tuples(st.just("delete_span"), position, st.integers(1, 12)),
        st.tuples(st.just("truncate"), position),
        st.tuples(st.just("replace_byte"), position, st.integers(0, 255)),
        st.tuples(st.just("delete_line")),
        st.tuples(st.just("duplicate_line")),
        st.tuples(st.just("blank_line"), st.sampled_from([b"", b"   ", b"\t", b"\r"])),
    ]
    if json_lines:
        kinds += [
            st.tuples(st.just("json_value"), position,
                      st.sampled_from([HUGE, DEEP, SURROGATE_ESCAPE, b"null", b"5", b"[]", b"{}", b'"usr"', b"1e999"])),
            st.tuples(st.just("hub_wrap")),
        ]
    else:
        kinds += [
            st.tuples(st.just("turn_number"), st.one_of(
                st.integers(0, 40).map(lambda n: str(n).encode()),
                st.sampled_from([HUGE, b"", b"x", b"-1", b" 3", "٣".encode(), b"1", b"0012", b"1 1"]))),
            st.tuples(st.just("drop_tab")),
            st.tuples(st.just("as_persona"), st.sampled_from([b"your persona: x", b"partner's persona: y",
                                                              b"your persona:", b"__SILENCE__\tz"])),
        ]
    return st.one_of(kinds)


MUTATIONS = {False: _mutations(False), True: _mutations(True)}


def _apply(line: bytes, mutation, json_lines: bool):
    """The mutated line: bytes, or None when the line is deleted; never contains a newline."""
    kind, *args = mutation

    def at(fraction):
        return int(fraction * len(line))

    if kind == "insert":
        k = at(args[0])
        out = line[:k] + b"".join(args[1]) + line[k:]
    elif kind == "insert_bytes":
        k = at(args[0])
        out = line[:k] + args[1] + line[k:]
    elif kind == "delete_span":
        k = at(args[0])
        out = line[:k] + line[k + args[1]:]
    elif kind == "truncate":
        out = line[:at(args[0])]
    elif kind == "replace_byte":
        k = min(at(args[0]), len(line) - 1)
        out = line[:k] + bytes([args[1]]) + line[k + 1:]
    elif kind == "delete_line":
        return None
    elif kind == "duplicate_line":
        return [line, line]
    elif kind == "blank_line":
        out = args[0]
    elif kind == "json_value":  # replace the value after the k-th ':' by a hostile payload
        colons = [i for i, b in enumerate(line) if b == ord(":")]
        k = colons[min(at(args[0]), len(colons) - 1)]
        end = k + 1
        while end < len(line) and line[end] not in b",}]":
            end += 1
        out = line[:k + 1] + b" " + args[1] + line[end:]
    elif kind == "hub_wrap":
        out = json.dumps({"text": line.decode()}).encode()
    elif kind == "turn_number":
        number, rest = line.split(b" ", 1)
        out = args[0] + b" " + rest
    elif kind == "drop_tab":
        out = line.replace(b"\t", b" ")
    elif kind == "as_persona":
        number, rest = line.split(b" ", 1)
        out = number + b" " + args[0]
    else:  # pragma: no cover
        raise AssertionError(kind)
    return out.replace(b"\n", b" ")


@st.composite
def _mutated(draw, lines, json_lines, single=False):
    """(mutated bytes, touched original line indices, deleted original line indices, added lines)."""
    n = len(lines)
    count = 1 if single else draw(st.integers(1, 3))
    where = draw(st.lists(st.integers(0, n - 1), min_size=count, max_size=count, unique=True))
    plan = {i: draw(MUTATIONS[json_lines]) for i in where}
    out, touched, deleted, added = [], set(), set(), 0
    for i, line in enumerate(lines):
        if i not in plan:
            out.append(line)
            continue
        new = _apply(line, plan[i], json_lines)
        touched.add(i)
        if isinstance(new, list):  # a copied line
            if not json_lines and line.startswith(b"1 "):
                new = new[:1]  # a copied first line is a dialogue of its own, not a corruption
            added += len(new) - 1
            out.extend(new)
            continue
        if new is None or not new.decode("utf-8", errors="replace").strip():
            deleted.add(i)  # deleted, or blank (which the readers pass over)
        if new is not None:
            out.append(new)
    return b"\n".join(out) + b"\n", touched, deleted, added


def _changes(data, lines):
    """The mutated lines (for failure messages): those of ``data`` not in the original ``lines``."""
    original = set(lines)
    return [(i + 1, line[:120]) for i, line in enumerate(data.split(b"\n")) if line not in original]


def _check_error(exc: DataFormatError, path, n_lines):
    assert isinstance(exc.line, int) and 1 <= exc.line <= n_lines, str(exc)
    assert str(exc).startswith(f"{path}:{exc.line}: expected "), str(exc)
    assert "\n" not in str(exc)


def _read_both(reader, path, data):
    """(strict dataset or the DataFormatError, skipping dataset, report)."""
    n_lines = data.count(b"\n") + 1
    try:
        strict = reader(path)
    except DataFormatError as exc:
        _check_error(exc, path, n_lines)
        strict = exc
    report = {}
    skipping = reader(path, skip_malformed=True, report=report)
    assert report["dialogues"] == len(skipping) and report["skipped"] == len(report["skipped_at"])
    if isinstance(strict, DataFormatError):
        assert report["skipped"] >= 1 and report["skipped_at"][0]["line"] == strict.line
    else:
        assert report["skipped"] == 0 and strict["utterances"] == skipping["utterances"]
    for skip in report["skipped_at"]:
        assert skip["error"].startswith(f"{path}:{skip['line']}: expected ")
    return strict, skipping, report


# --- PERSONA-CHAT (ParlAI text) --------------------------------------------------------------
PC_LINES = _sample_lines("personachat")
PC_STARTS = [i for i, line in enumerate(PC_LINES) if line.startswith(b"1 ")]
PC_ORIGINAL = read_personachat(sample_path("personachat"))


def _rows(dataset):
    """Each dialogue as a comparable tuple of its columns (``dialogue_id`` aside)."""
    table = dataset.to_dict()
    del table["dialogue_id"]
    return list(zip(*[[tuple(v) if isinstance(v, list) else v for v in values] for values in table.values()]))


def _keeps_untouched(original_rows, touched, dataset):
    """Every original dialogue whose index is not in ``touched`` is in ``dataset``, in order."""
    got = iter(_rows(dataset))
    return all(any(row == g for g in got) for d, row in enumerate(original_rows) if d not in touched)


PC_ORIGINAL_ROWS = _rows(PC_ORIGINAL)


def _pc_dialogue_of(i):
    return max(d for d, start in enumerate(PC_STARTS) if start <= i)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_the_samples_are_what_the_fuzzers_assume():
    assert len(PC_STARTS) == len(PC_ORIGINAL) == 36
    assert len(ES_LINES) == len(ES_ORIGINAL_ROWS) == 24 and len(MSC_LINES) == len(MSC_ORIGINAL_ROWS) == 7
    assert all(line.strip() for line in PC_LINES + ES_LINES + MSC_LINES)


@FUZZ
@given(case=_mutated(PC_LINES, json_lines=False))
def test_personachat_fuzz_balance_and_neighbours(fuzz_dir, case):
    data, touched, deleted, added = case
    path = fuzz_dir / "personachat.txt"
    path.write_bytes(data)
    _, skipping, report = _read_both(read_personachat, path, data)
    assert len(skipping) + report["skipped"] == len(PC_STARTS), _changes(data, PC_LINES)
    hit = {_pc_dialogue_of(i) for i in touched}
    assert _keeps_untouched(PC_ORIGINAL_ROWS, hit, skipping), ("a neighbour was lost", _changes(data, PC_LINES))
    assert report["skipped"] <= len(hit)


# --- JSON lines: ESConv and MSC --------------------------------------------------------------
ES_LINES = _sample_lines("esconv")
MSC_LINES = _sample_lines("msc")  # 7 episodes of MSC session 2, as ParlAI released them
MSC_ORIGINAL_ROWS = _rows(read_msc(sample_path("msc")))


ES_ORIGINAL_ROWS = _rows(read_esconv(sample_path("esconv")))


def _json_fuzz(reader, lines, original_rows, fuzz_dir, case, name):
    data, touched, deleted, added = case
    path = fuzz_dir / name
    path.write_bytes(data)
    _, skipping, report = _read_both(reader, path, data)
    # one line is one dialogue: deleted (or blanked) lines are gone, copied lines count twice
    assert len(skipping) + report["skipped"] == len(lines) - len(deleted) + added, _changes(data, lines)
    assert _keeps_untouched(original_rows, touched, skipping), _changes(data, lines)
    assert report["skipped"] <= len(touched - deleted)


@FUZZ
@given(case=_mutated(ES_LINES, json_lines=True))
def test_esconv_fuzz_balance(fuzz_dir, case):
    _json_fuzz(read_esconv, ES_LINES, ES_ORIGINAL_ROWS, fuzz_dir, case, "esconv.json")


@FUZZ
@given(case=_mutated(MSC_LINES, json_lines=True))
def test_msc_fuzz_balance(fuzz_dir, case):
    _json_fuzz(read_msc, MSC_LINES, MSC_ORIGINAL_ROWS, fuzz_dir, case, "msc.txt")
