import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_persona.data import (
    ESCONV_STRATEGIES, read_dialogues, read_esconv, read_msc, read_personachat, sample_candidates,
    sample_path, split_by_dialogue,
)
from hf_persona.errors import DataFormatError, HFPersonaError

PC = (
    "1 your persona: i like cats.\n"
    "2 partner's persona: i am a chef.\n"
    "3 partner's persona: i live in paris.\n"
    "4 hello there !\thi , i love my cats .\n"
    "5 i cook for a living .\tcool !\n"
    "1 your persona: i run.\n"
    "2 __SILENCE__\ti just ran ten miles .\n"
)


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_personachat_columns_and_values(tmp_path):
    ds = read_personachat(write(tmp_path, "pc.txt", PC))
    assert len(ds) == 2
    row = ds[0]
    assert row["your_persona"] == ["i like cats."]
    assert row["partner_persona"] == ["i am a chef.", "i live in paris."]
    assert row["utterances"] == ["hello there !", "hi , i love my cats .", "i cook for a living .", "cool !"]
    assert row["speakers"] == ["partner", "you", "partner", "you"]
    assert ds[1]["utterances"] == ["i just ran ten miles ."] and ds[1]["speakers"] == ["you"]
    assert ds["dialogue_id"] == [0, 1]


@pytest.mark.parametrize("text,line,expected", [
    ("1 your persona: a\n2 hello\n", 2, "partner utterance"),
    ("1 your persona: a\n3 hi\tyo\n", 2, "turn number 2 or 1"),
    ("2 hi\tyo\n", 1, "turn number 1"),
    ("1 your persona: a\nhi\tyo\n", 2, "'<turn number> <text>'"),
    ("1 your persona: a\n2 hi\tyo\n3 your persona: b\n", 3, "persona lines before"),
    ("1 your persona: a\n", 1, "at least one utterance"),
])
def test_personachat_errors_name_file_and_line(tmp_path, text, line, expected):
    p = write(tmp_path, "bad.txt", text)
    with pytest.raises(DataFormatError) as info:
        read_personachat(p)
    assert info.value.line == line and str(p) in str(info.value) and expected in str(info.value)


def test_personachat_skip_malformed_counts(tmp_path, caplog):
    text = PC + "1 your persona: x\n2 broken line without tab\n3 more\tstuff\n1 your persona: y\n2 a\tb\n"
    ds = read_personachat(write(tmp_path, "pc.txt", text), skip_malformed=True)
    assert len(ds) == 3 and ds[2]["your_persona"] == ["y"]
    assert "skipped 1 malformed dialogues" in caplog.text


def esconv_line(**over):
    obj = {"emotion_type": "anxiety", "problem_type": "job crisis", "situation": "s",
           "dialog": [{"text": "Hi", "speaker": "sys", "strategy": "Question"},
                      {"text": "I am sad", "speaker": "usr"}, {"text": "more", "speaker": "usr"},
                      {"text": "I hear you", "speaker": "sys", "strategy": "Reflection of feelings"}]}
    obj.update(over)
    return json.dumps(obj)


def test_esconv_reader_and_merge(tmp_path):
    p = write(tmp_path, "e.json", esconv_line() + "\n" + json.dumps({"text": esconv_line()}) + "\n")
    ds = read_esconv(p)
    assert len(ds) == 2 and ds[0]["speakers"] == ["sys", "usr", "usr", "sys"]
    assert ds[0]["strategies"] == ["Question", "", "", "Reflection of feelings"]
    assert ds[1]["utterances"] == ds[0]["utterances"]  # Hub {"text": json} layout
    merged = read_esconv(p, merge_consecutive=True)
    assert merged[0]["utterances"] == ["Hi", "I am sad more", "I hear you"]


def test_esconv_errors(tmp_path):
    bad_strategy = esconv_line(dialog=[{"text": "x", "speaker": "sys", "strategy": "Hugging"}])
    p = write(tmp_path, "e.json", esconv_line() + "\n" + bad_strategy + "\n")
    with pytest.raises(DataFormatError, match=r"e.json:2: expected dialog\[0\].strategy to be one of Question"):
        read_esconv(p)
    p = write(tmp_path, "e2.json", esconv_line() + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"e2.json:2: expected one JSON object per line"):
        read_esconv(p)
    assert len(read_esconv(p, skip_malformed=True)) == 1


def test_msc_reader(tmp_path):
    line = json.dumps({"personas": [["I run."], ["I swim.", "I cook."]],
                       "dialog": [{"text": "hi", "id": "Speaker 1"}, {"text": "hey", "id": "Speaker 2"}]})
    ds = read_msc(write(tmp_path, "m.txt", line + "\n"))
    assert ds[0]["speaker2_persona"] == ["I swim.", "I cook."] and ds[0]["speakers"] == ["Speaker 1", "Speaker 2"]
    line = json.dumps({"personas": [["a"], ["b"]], "dialog": [
        {"text": "x", "id": "123"}, {"text": "y", "id": "Speaker 1"}, {"text": "z", "id": "9"}]})
    assert read_msc(write(tmp_path, "m3.txt", line))[0]["speakers"] == ["Speaker 2", "Speaker 1", "Speaker 2"]
    with pytest.raises(DataFormatError, match="two lists of sentences"):
        read_msc(write(tmp_path, "m2.txt", json.dumps({"personas": [["a"]], "dialog": []}) + "\n"))


def test_embedded_samples_and_detection():
    fmt, pc = read_dialogues(sample_path("personachat"))
    assert fmt == "personachat" and len(pc) >= 24
    fmt, es = read_dialogues(sample_path("esconv"))
    assert fmt == "esconv" and len(es) >= 20
    assert all(s in ESCONV_STRATEGIES for row in es["strategies"] for s in row if s)
    with pytest.raises(HFPersonaError, match="no embedded sample"):
        sample_path("pec")


def test_split_and_candidates():
    _, pc = read_dialogues(sample_path("personachat"))
    train, dev = split_by_dialogue(pc, first=20)
    assert train["dialogue_id"] == list(range(20)) and dev["dialogue_id"][0] == 20
    a_train, a_dev = split_by_dialogue(pc, test_fraction=0.25, seed=3)
    b_train, b_dev = split_by_dialogue(pc, test_fraction=0.25, seed=3)
    assert a_dev["dialogue_id"] == b_dev["dialogue_id"]
    assert not set(a_dev["dialogue_id"]) & set(a_train["dialogue_id"])
    assert len(a_dev) + len(a_train) == len(pc)
    pool = [f"r{i}" for i in range(10)]
    c1 = sample_candidates(pool, 5, exclude=["r0"], seed=1)
    assert c1 == sample_candidates(pool, 5, exclude=["r0"], seed=1) and "r0" not in c1 and len(set(c1)) == 5
    with pytest.raises(HFPersonaError, match="only 9 usable"):
        sample_candidates(pool, 10, exclude=["r0"])


# --- property-based: random, truncated and mis-encoded input parses or raises DataFormatError ---
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutations():
    base_pc = PC.encode()
    base_es = (esconv_line() + "\n").encode()
    return st.sampled_from([base_pc, base_es]).flatmap(lambda base: st.one_of(
        st.integers(0, len(base)).map(lambda k: base[:k]),                      # truncated
        st.tuples(st.integers(0, len(base)), st.binary(min_size=1, max_size=8)).map(
            lambda t: base[:t[0]] + t[1] + base[t[0]:]),                         # mis-encoded bytes inserted
        st.text(max_size=200).map(lambda s: s.encode()),                         # random text
        st.lists(st.text(max_size=40), max_size=6).map(lambda ls: "\n".join(ls).encode()),
    ))


@SETTINGS
@given(data=_mutations())
def test_readers_parse_or_raise_format_error(tmp_path, data):
    p = tmp_path / "fuzz.txt"
    p.write_bytes(data)
    for reader in (read_personachat, read_esconv, read_msc):
        try:
            reader(p)
        except DataFormatError as exc:
            assert str(p) in str(exc)
        try:
            reader(p, skip_malformed=True)
        except DataFormatError as exc:  # e.g. undecodable bytes are never skipped silently
            assert str(p) in str(exc)


def test_real_data_counts(shared_data):
    assert len(read_esconv(shared_data / "esconv" / "train.json")) == 910
    assert len(read_esconv(shared_data / "esconv" / "valid.json")) == 195
    pc = read_personachat(shared_data / "personachat" / "valid_both_original_no_cands.txt")
    assert len(pc) == 1000
    revised = read_personachat(shared_data / "personachat" / "valid_both_revised_no_cands.txt")
    assert len(revised) == 1000 and revised[0]["utterances"] == pc[0]["utterances"]
    assert len(read_msc(shared_data / "msc" / "session_2_valid.txt")) == 500


def test_shared_data_file_given_default_and_missing(tmp_path, monkeypatch):
    from hf_persona.data import shared_data_file
    from hf_persona.errors import HFPersonaError

    (tmp_path / "personachat").mkdir()
    dev = tmp_path / "personachat" / "valid_both_original_no_cands.txt"
    dev.write_text("1 your persona: i like tea .\n")
    monkeypatch.setenv("HF_PERSONA_DATA", str(tmp_path))
    assert shared_data_file() == str(dev)  # the PERSONA-CHAT default under $HF_PERSONA_DATA
    other = tmp_path / "mine.txt"
    other.write_text("x")
    assert shared_data_file(str(other)) == str(other)  # a given file wins
    with pytest.raises(HFPersonaError, match="data file not found: .*esconv"):
        shared_data_file(None, "esconv", "train.json")
    with pytest.raises(HFPersonaError, match="data file not found"):
        shared_data_file(str(tmp_path / "nope.txt"))


# --- issue 28: a malformed line costs only its own dialogue; exact skip counts; one-line errors ---
SAMPLE_PC = sample_path("personachat").read_text().splitlines(keepends=True)  # 36 dialogues of 12 lines


def _third_dialogue_first_line(n):  # dialogue 3 spans lines 25-36 (persona 25-32, utterances 33-36)
    def edit(lines):
        lines[24] = n + lines[24][1:]
    return edit


def _delete(first, last):
    def edit(lines):
        del lines[first - 1:last]
    return edit


def _set_line(number, text):
    def edit(lines):
        lines[number - 1] = text
    return edit


@pytest.mark.parametrize("edit,bad_line", [
    (_third_dialogue_first_line("7"), 25),   # the reproduction: corrupted turn number of a first line
    (_third_dialogue_first_line("x"), 25),
    (_third_dialogue_first_line("13"), 25),  # looks like the next turn of dialogue 2
    (_third_dialogue_first_line("9" * 5000), 25),  # past int()'s digit limit
    (_delete(33, 36), 25),                   # a dialogue with only persona lines
    (_delete(25, 25), 25),                   # its first line missing
    (_set_line(30, "1 partner's persona: i like to go fishing .\n"), 30),  # a middle line numbered 1
    (_set_line(36, "x cool .\tyes\n"), 36),  # its last line unreadable
    (_set_line(36, "1 cool .\tyes\n"), 36),  # its last line numbered 1
    (_set_line(29, "5 partner's persona: \xff\n"), 29),  # not UTF-8
])
def test_personachat_malformed_line_costs_only_its_dialogue(tmp_path, caplog, edit, bad_line):
    lines = list(SAMPLE_PC)
    edit(lines)
    p = tmp_path / "pc.txt"
    p.write_bytes("".join(lines).encode("utf-8", errors="surrogateescape").replace("\xff".encode(), b"\xff"))
    original = read_personachat(sample_path("personachat"))
    report = {}
    ds = read_personachat(p, skip_malformed=True, report=report)
    assert len(ds) == 35 and report["skipped"] == 1 and report["dialogues"] == 35
    assert report["skipped_at"][0]["line"] == bad_line
    assert ds["utterances"] == original["utterances"][:2] + original["utterances"][3:]
    assert ds["your_persona"] == original["your_persona"][:2] + original["your_persona"][3:]
    assert "skipped 1 malformed dialogues" in caplog.text and f"at lines {bad_line};" in caplog.text
    with pytest.raises(DataFormatError) as info:
        read_personachat(p)
    assert info.value.line == bad_line and str(info.value).startswith(f"{p}:{bad_line}: expected ")


def test_personachat_numbering_messages(tmp_path):
    lines = list(SAMPLE_PC)
    lines[24] = "13" + lines[24][1:]
    with pytest.raises(DataFormatError, match=r":25: expected turn number 1 \(the lines after it number a new"):
        read_personachat(write(tmp_path, "a.txt", "".join(lines)))
    lines = list(SAMPLE_PC)
    lines[29] = "1" + lines[29][1:]
    with pytest.raises(DataFormatError, match=r":30: expected turn number 6, not 1"):
        read_personachat(write(tmp_path, "b.txt", "".join(lines)))
    with pytest.raises(DataFormatError, match=r":1: expected a turn number of at most 9 digits"):
        read_personachat(write(tmp_path, "c.txt", "1" * 5000 + " your persona: a\n2 hi\tyo\n"))


def test_skip_counts_several_dialogues_exactly(tmp_path, caplog):
    lines = list(SAMPLE_PC)
    for first in (1, 25, 121, 421):  # the first line of dialogues 1, 3, 11 and 36
        lines[first - 1] = "x" + lines[first - 1]
    report = {}
    ds = read_personachat(write(tmp_path, "pc.txt", "".join(lines)), skip_malformed=True, report=report)
    assert len(ds) == 32 and report["skipped"] == 4
    assert [s["line"] for s in report["skipped_at"]] == [1, 25, 121, 421]
    assert "skipped 4 malformed dialogues (at lines 1, 25, 121, 421;" in caplog.text


def _esconv_lines():
    return sample_path("esconv").read_bytes().splitlines()


HOSTILE_JSON = {
    "invalid UTF-8": (lambda line: line[:40] + b"\xff\xfe" + line[40:], "UTF-8 text (invalid start byte"),
    "UTF-8 surrogate bytes": (lambda line: line[:40] + b"\xed\xa0\x80" + line[40:], "UTF-8 text"),
    "5,000-digit integer": (lambda line: line[:-1] + b', "n": ' + b"7" * 5000 + b"}", "Exceeds the limit"),
    "deep nesting": (lambda line: line[:-1] + b', "n": ' + b"[" * 50000 + b"]" * 50000 + b"}", "nested too deeply"),
    "lone surrogate": (lambda line: line.replace(b'"situation": "', b'"situation": "\\ud800', 1),
                       "valid Unicode text in situation (lone surrogate"),
    "nested lone surrogate": (lambda line: json.dumps({"text": line.decode().replace(
        '"text": "', '"text": "\\udfff', 1)}).encode(), "valid Unicode text in utterances[0] (lone surrogate"),
    "hub layout, nested too deeply": (lambda line: json.dumps({"text": "[" * 50000}).encode(), "nested too deeply"),
    "truncated": (lambda line: line[: len(line) // 2], "one JSON object per line"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_esconv_hostile_line_is_one_error_or_one_skip(tmp_path, case):
    mutate, expected = HOSTILE_JSON[case]
    lines = _esconv_lines()
    lines[6] = mutate(lines[6])
    p = tmp_path / "e.json"
    p.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataFormatError) as info:
        read_esconv(p)
    assert info.value.line == 7 and str(info.value).startswith(f"{p}:7: expected ") and expected in str(info.value)
    report = {}
    ds = read_esconv(p, skip_malformed=True, report=report)
    assert len(ds) == 23 and report["skipped"] == 1 and report["skipped_at"][0]["line"] == 7
    fmt, ds = read_dialogues(p, skip_malformed=True)  # detection is not thrown by the bad line either
    assert fmt == "esconv" and len(ds) == 23


def _msc_text(n=5):
    rows = read_personachat(sample_path("personachat")).select(range(n))
    return [json.dumps({"personas": [r["partner_persona"], r["your_persona"]], "dialog": [
        {"text": u, "id": "Speaker 1" if s == "partner" else "Speaker 2"} for u, s in zip(r["utterances"], r["speakers"])
    ]}) for r in rows]


@pytest.mark.parametrize("bad,expected", [
    ('{"personas": [["\\ud800"], []], "dialog": [{"text": "a", "id": "Speaker 1"}]}', "lone surrogate"),
    ('{"personas": [[], []], "dialog": [{"text": "a", "id": "Speaker 1", "n": ' + "1" * 5000 + "}]}",
     "Exceeds the limit"),
    ('{"personas": ' + "[" * 30000 + "]" * 30000 + "}", "nested too deeply"),
    ('{"personas": [[], []], "dialog": [{"text": "a", "id": ["Speaker 1"]}]}', "at least one turn with id"),
])
def test_msc_hostile_line(tmp_path, bad, expected):
    lines = _msc_text()
    lines.insert(2, bad)
    p = write(tmp_path, "m.txt", "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"m.txt:3: expected .*{expected}"):
        read_msc(p)
    report = {}
    assert len(read_msc(p, skip_malformed=True, report=report)) == 5 and report["skipped"] == 1


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\r\n\t\n"])
@pytest.mark.parametrize("reader", [read_personachat, read_esconv, read_msc, read_dialogues])
@pytest.mark.parametrize("skip", [False, True])
def test_empty_file_is_an_error_not_zero_dialogues(tmp_path, content, reader, skip):
    p = write(tmp_path, "empty.json", content)
    with pytest.raises(DataFormatError, match=r"empty.json:1: expected at least one dialogue \(the file is empty"):
        reader(p, skip_malformed=skip)


def test_all_malformed_is_an_error_also_when_skipping(tmp_path):
    p = write(tmp_path, "e.json", "{oops\n[1, 2]\n")
    with pytest.raises(DataFormatError, match=r"e.json:1: expected at least one well-formed dialogue; all 2 are"):
        read_esconv(p, skip_malformed=True)
    p = write(tmp_path, "pc.txt", "1 your persona: a\n1 your persona: b\n")
    with pytest.raises(DataFormatError, match=r"pc.txt:1: expected at least one well-formed dialogue; all 2 are"):
        read_personachat(p, skip_malformed=True)


def test_byte_order_mark_is_dropped(tmp_path):
    assert len(read_personachat(write(tmp_path, "pc.txt", b"\xef\xbb\xbf" + PC.encode()))) == 2
    fmt, ds = read_dialogues(write(tmp_path, "e.json", b"\xef\xbb\xbf" + (esconv_line() + "\n").encode()))
    assert fmt == "esconv" and len(ds) == 1


def test_invalid_utf8_is_skipped_and_counted_in_personachat(tmp_path):
    text = PC.encode() + b"1 your persona: \xff\xfe\n2 hi\tyo\n1 your persona: z\n2 a\tb\n"
    p = write(tmp_path, "pc.txt", text)
    with pytest.raises(DataFormatError, match=r"pc.txt:8: expected UTF-8 text \(invalid start byte at byte 16\)"):
        read_personachat(p)
    report = {}
    ds = read_personachat(p, skip_malformed=True, report=report)
    assert len(ds) == 3 and report["skipped"] == 1 and ds[2]["your_persona"] == ["z"]


def test_cli_inspect_reports_the_exact_skip_count(tmp_path):
    import subprocess
    import sys

    lines = list(SAMPLE_PC)
    lines[24] = "7" + lines[24][1:]
    p = write(tmp_path, "pc.txt", "".join(lines))
    run = [sys.executable, "-m", "hf_persona.cli", "data", "inspect"]
    proc = subprocess.run(run + [str(p), "--skip-malformed", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["dialogues"] == 35 and stats["skipped_malformed"] == 1
    assert "skipped 1 malformed dialogues (at lines 25;" in proc.stderr
    empty = write(tmp_path, "empty.json", "")
    proc = subprocess.run(run + [str(empty), "--format", "esconv", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: {empty}:1: expected at least one dialogue (the file is empty or blank)"
