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
