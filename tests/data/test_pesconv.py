"""PESConv annotation: accumulation rule, resumability (hook interrupt and hard kill), outputs, CLI."""

import json
import pytest

from hf_persona.data import read_esconv, sample_path
from hf_persona.errors import HFPersonaError
from hf_persona.training.persona_extractor import persona_support
from hf_persona.data.pesconv import (
    annotate,
    annotate_dialogues,
    load_pesconv,
    load_pesconv_rows,
    personas_per_turn,
    seeker_queries,
)


class EchoExtractor:
    """Deterministic stand-in for a trained model: one sentence per seeker utterance it has seen.

    For seeker utterances u1..uk it "infers" ``"i said <first word of ui> ok."`` for each i, plus
    ``"i have spoken <k> times."`` and a one-word sentence that the length filter must drop. It
    counts how many inputs it was asked about.
    """

    fingerprint = "echo-v1"

    def __init__(self):
        self.calls = 0

    def extract(self, batch, batch_size=32):
        self.calls += len(batch)
        out = []
        for utts in batch:
            sents = [f"i said {u.split()[0] if u.split() else 'nothing'} ok." for u in utts]
            out.append(sents + [f"i have spoken {len(utts)} times.", "hello"])
        return out


def test_seeker_queries_start_at_the_third_seeker_utterance():
    speakers = ["sys", "usr", "sys", "usr", "usr", "sys", "usr"]
    utts = ["s0", "u1", "s2", "u3", "u4", "s5", "u6"]
    assert seeker_queries(speakers, utts) == [(3, ["u1", "u3", "u4"]), (4, ["u1", "u3", "u4", "u6"])]
    assert seeker_queries(speakers, utts, min_seeker_utterances=1)[0] == (1, ["u1"])


def test_personas_accumulate_deduplicate_and_filter_by_turn():
    speakers = ["usr", "sys", "usr", "sys", "usr", "sys", "usr", "sys"]
    inferred = {
        3: ["I am a nurse.", "hi", "i like dogs ."],
        4: ["i am a nurse", "my job is hard.", " ".join(["very"] * 26)],
    }
    got = personas_per_turn(speakers, inferred)
    nurse_dogs = ["I am a nurse.", "i like dogs."]
    assert got == [[], [], [], [], [], nurse_dogs, nurse_dogs, nurse_dogs + ["my job is hard."]]


def test_annotate_dialogues_by_hand():
    rows = [{
        "dialogue_id": 7, "emotion_type": "anxiety", "problem_type": "job crisis", "situation": "x",
        "utterances": ["hello", "hi there", "how are you", "bad day", "why", "lost job", "sorry", "cannot sleep", "tell me"],
        "speakers": ["usr", "sys", "usr", "sys", "usr", "sys", "usr", "sys", "sys"],
        "strategies": ["", "Others", "", "Question", "", "Question", "", "Reflection of feelings", "Question"],
    }]
    ex = EchoExtractor()
    out = annotate_dialogues(rows, ex.extract)
    assert ex.calls == 2  # after the 3rd and the 4th seeker utterance
    after3 = ["i said hello ok.", "i said how ok.", "i said why ok.", "i have spoken 3 times."]
    after4 = after3 + ["i said sorry ok.", "i have spoken 4 times."]
    assert out[0]["personas"] == [[]] * 5 + [after3, after3, after4, after4]
    assert out[0]["strategies"] == rows[0]["strategies"] and out[0]["dialogue_id"] == 7


def test_min_support_drops_sentences_not_grounded_in_the_seeker_utterances():
    rows = [{
        "dialogue_id": 1, "emotion_type": None, "problem_type": None, "situation": None,
        "utterances": ["my dog died", "sorry", "i miss my dog", "why", "work is hard", "ok"],
        "speakers": ["usr", "sys", "usr", "sys", "usr", "sys"],
        "strategies": ["", "Others", "", "Question", "", "Others"],
    }]

    def extract(batch):
        return [["i have a dog. i love the beatles.", "my work is hard."] for _ in batch]

    everything = annotate_dialogues(rows, extract)[0]["personas"][-1]
    assert everything == ["i have a dog.", "i love the beatles.", "my work is hard."]
    # "i have a dog": dog used (1/1); "i love the beatles": love, beatl unused (0/2); "my work is hard": 2/2
    grounded = annotate_dialogues(rows, extract, min_support=0.5)[0]["personas"][-1]
    assert grounded == ["i have a dog.", "my work is hard."]
    with pytest.raises(ValueError, match="min_support"):
        annotate(EchoExtractor(), sample_path("esconv"), "unused", min_support=-0.1)


def test_annotate_writes_dataset_and_jsonl(tmp_path):
    data = sample_path("esconv")
    summary = annotate(EchoExtractor(), data, tmp_path / "out", dialogues_per_shard=5, progress=False)
    rows = load_pesconv_rows(tmp_path / "out")
    source = read_esconv(data)
    assert len(rows) == len(source) == summary["dialogues"]
    ds = load_pesconv(tmp_path / "out")
    assert ds.column_names[-1] == "personas" and len(ds) == len(source)
    for row, src in zip(rows, source):
        assert row["utterances"] == src["utterances"] and len(row["personas"]) == len(src["utterances"])
        seen_usr = 0
        for i, spk in enumerate(row["speakers"]):
            if seen_usr < 3:
                assert row["personas"][i] == []
            if i:
                prev = row["personas"][i - 1]
                assert row["personas"][i][: len(prev)] == prev  # only grows
            seen_usr += spk == "usr"
    assert summary["supporter_turns_with_persona"] > 0
    assert json.loads((tmp_path / "out" / "progress.json").read_text())["complete"] is True


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_duplicates(tmp_path):
    data = sample_path("esconv")
    full = tmp_path / "full"
    annotate(EchoExtractor(), data, full, dialogues_per_shard=4, progress=False)

    part = tmp_path / "part"

    def stop_after_two(shard, done):
        if shard == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        annotate(EchoExtractor(), data, part, dialogues_per_shard=4, on_shard=stop_after_two, progress=False)
    state = json.loads((part / "progress.json").read_text())
    assert state["done"] == 8 and not state["complete"] and not (part / "pesconv.jsonl").exists()

    ex = EchoExtractor()
    annotate(ex, data, part, dialogues_per_shard=4, progress=False)
    remaining = read_esconv(data).select(range(8, len(read_esconv(data))))
    expected_calls = sum(len(seeker_queries(r["speakers"], r["utterances"])) for r in remaining)
    assert ex.calls == expected_calls  # finished shards were not recomputed
    assert (part / "pesconv.jsonl").read_text() == (full / "pesconv.jsonl").read_text()
    # a completed run is a no-op
    ex2 = EchoExtractor()
    annotate(ex2, data, part, dialogues_per_shard=4, progress=False)
    assert ex2.calls == 0


def test_crash_between_shard_write_and_progress_update(tmp_path, monkeypatch):
    """The one window a hard kill can hit: a shard file is on disk but progress.json does not list it.

    The resumed run must recompute that shard (replacing the file) and still produce each dialogue once.
    """
    import hf_persona.data.pesconv as pesconv

    data = sample_path("esconv")
    part = tmp_path / "crashed"
    real = pesconv.atomic_write_json
    writes = {"n": 0}

    def crash_on_third_progress_update(path, obj, **kw):
        if path.name == "progress.json" and obj.get("done", 0) > 0:
            writes["n"] += 1
            if writes["n"] == 3:
                raise KeyboardInterrupt  # like SIGINT/SIGKILL arriving right after shard 2 was written
        return real(path, obj, **kw)

    monkeypatch.setattr(pesconv, "atomic_write_json", crash_on_third_progress_update)
    with pytest.raises(KeyboardInterrupt):
        annotate(EchoExtractor(), data, part, dialogues_per_shard=3, progress=False)
    monkeypatch.setattr(pesconv, "atomic_write_json", real)
    assert (part / "shards" / "shard-00002.jsonl").is_file()
    assert json.loads((part / "progress.json").read_text())["done"] == 6
    annotate(EchoExtractor(), data, part, dialogues_per_shard=3, progress=False)
    full = tmp_path / "full"
    annotate(EchoExtractor(), data, full, dialogues_per_shard=3, progress=False)
    assert (part / "pesconv.jsonl").read_text() == (full / "pesconv.jsonl").read_text()
    assert len(load_pesconv_rows(part)) == len(read_esconv(data))
    assert not [p for p in part.rglob("*.tmp")]


def test_changed_settings_are_refused_unless_overwrite(tmp_path):
    data = sample_path("esconv")
    out = tmp_path / "o"
    annotate(EchoExtractor(), data, out, dialogues_per_shard=4, max_dialogues=4, progress=False)
    with pytest.raises(HFPersonaError, match="min_seeker_utterances"):
        annotate(EchoExtractor(), data, out, dialogues_per_shard=4, max_dialogues=4, min_seeker_utterances=2,
                 progress=False)
    s = annotate(EchoExtractor(), data, out, dialogues_per_shard=4, max_dialogues=4, min_seeker_utterances=2,
                 overwrite=True, progress=False)
    assert s["dialogues"] == 4


def test_bad_inputs(tmp_path):
    with pytest.raises(HFPersonaError, match="not found"):
        annotate(EchoExtractor(), tmp_path / "missing.json", tmp_path / "o", progress=False)
    with pytest.raises(TypeError, match="extractor must be"):
        annotate(42, sample_path("esconv"), tmp_path / "o2", progress=False)
    with pytest.raises(ValueError, match="min_seeker_utterances"):
        annotate(EchoExtractor(), sample_path("esconv"), tmp_path / "o3", min_seeker_utterances=0)
    with pytest.raises(HFPersonaError, match="pesconv.jsonl"):
        load_pesconv_rows(tmp_path)

    def wrong_count(batch):
        return []

    with pytest.raises(HFPersonaError, match="returned 0 results"):
        annotate(wrong_count, sample_path("esconv"), tmp_path / "o4", max_dialogues=2, progress=False)
    # a dialogue in which the seeker never speaks gets empty personas (documented behaviour)
    rows = [{"dialogue_id": 0, "emotion_type": None, "problem_type": None, "situation": None,
             "utterances": ["hello", "anyone there?"], "speakers": ["sys", "sys"], "strategies": ["Others", "Question"]}]
    assert annotate_dialogues(rows, wrong_count)[0]["personas"] == [[], []]


def test_cli_annotate_with_a_saved_extractor(tmp_path, tiny_bert_dir):
    from click.testing import CliRunner
    from datasets import load_from_disk

    from hf_persona.cli import register_plugin_commands, cli
    from hf_persona.training.persona_extractor import ExtractorFormat, PersonaExtractor, build_extractor_model

    model, tok = build_extractor_model(tiny_bert_dir, seed=0)
    model.generation_config.max_new_tokens = 6
    ext_dir = tmp_path / "ext"
    PersonaExtractor(model, tok, ExtractorFormat(" [SEP] ", max_source_length=32, max_target_length=6)).save_pretrained(ext_dir)
    register_plugin_commands()
    out = tmp_path / "pes"
    args = ["annotate-persona", "--extractor", str(ext_dir), "--data", str(sample_path("esconv")), "--out", str(out),
            "--max-dialogues", "3", "--num-beams", "1", "--dialogues-per-shard", "2", "--json", str(tmp_path / "s.json")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert f"saved to {out}" in res.output
    assert summary["dialogues"] == 3
    ds = load_from_disk(str(out / "dataset"))
    assert len(ds) == 3 and "personas" in ds.column_names
    assert [json.loads(line)["dialogue_id"] for line in (out / "pesconv.jsonl").read_text().splitlines()] == ds["dialogue_id"]
    # --min-support is passed through: the tiny untrained extractor's output is not grounded, so a full
    # share of content words leaves no persona; a value outside 0..1 is refused by the option itself
    strict = tmp_path / "pes_strict"
    res = CliRunner().invoke(cli, args[:6] + [str(strict)] + args[7:] + ["--min-support", "1.0"])
    assert res.exit_code == 0, res.output
    assert json.loads((strict / "progress.json").read_text())["fingerprint"]["min_support"] == 1.0

    def final_personas(folder):
        rows = [json.loads(line) for line in (folder / "pesconv.jsonl").read_text().splitlines()]
        return [(r["personas"][-1], [u for u, s in zip(r["utterances"], r["speakers"]) if s == "usr"]) for r in rows]

    loose = [s for persona, _ in final_personas(out) for s in persona]
    kept = [s for persona, said in final_personas(strict) for s in persona]
    assert loose and len(kept) < len(loose)
    assert all(persona_support(s, said) == 1.0 for persona, said in final_personas(strict) for s in persona)
    res = CliRunner().invoke(cli, args + ["--min-support", "1.5", "--overwrite"])
    assert res.exit_code != 0 and "min-support" in res.output
