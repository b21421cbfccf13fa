"""Issue 27 item 5: get_dataset(name, path=None, split=...) with HF_PERSONA_DATA, the MSC sample, PESConv."""

from __future__ import annotations

import json
import shutil

import pytest

import hf_persona
from hf_persona.data import sample_path
from hf_persona.data.loaders import sample_file
from hf_persona.errors import HFPersonaError

PESCONV_ROW = {"dialogue_id": 0, "emotion_type": "anxiety", "problem_type": "job crisis", "situation": "lost my job",
               "utterances": ["hi", "hello , how are you ?", "i lost my job"], "speakers": ["usr", "sys", "usr"],
               "strategies": ["", "Question", ""], "personas": [[], [], ["i lost my job ."]]}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("HF_PERSONA_DATA", raising=False)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A data folder in ../shared/data's layout, built from the embedded samples; HF_PERSONA_DATA points at it."""
    root = tmp_path / "data"
    for sub, target in (("personachat", "valid_both_original_no_cands.txt"), ("esconv", "valid.json"),
                        ("msc", "session_2_valid.txt")):
        (root / sub).mkdir(parents=True)
        shutil.copyfile(sample_file(sub), root / sub / target)
    (root / "esconv" / "train.json").write_text(sample_file("esconv").read_text().split("\n", 1)[0] + "\n")
    pes = root / "pesconv" / "valid"
    pes.mkdir(parents=True)
    (pes / "pesconv.jsonl").write_text(json.dumps(PESCONV_ROW) + "\n")
    monkeypatch.setenv("HF_PERSONA_DATA", str(root))
    return root


def test_every_format_is_registered_with_pesconv():
    assert {"personachat", "esconv", "msc", "pesconv"} <= set(hf_persona.list_plugins()["datasets"])


def test_msc_sample_is_small_real_msc(no_env):
    path = sample_file("msc")
    assert path.stat().st_size < 40_000 and path == sample_path("msc")
    ds = hf_persona.get_dataset("msc")
    assert len(ds) == 7 and ds.column_names == ["dialogue_id", "speaker1_persona", "speaker2_persona",
                                                "utterances", "speakers"]
    assert all(len(u) == len(s) and set(s) <= {"Speaker 1", "Speaker 2"} for u, s in zip(ds["utterances"], ds["speakers"]))


@pytest.mark.parametrize("name", ["personachat", "esconv", "msc"])
def test_sample_without_env_and_split_needs_real_data(name, no_env):
    assert len(hf_persona.get_dataset(name)) > 0
    with pytest.raises(HFPersonaError, match="needs real data: set HF_PERSONA_DATA"):
        hf_persona.get_dataset(name, split="train")


def test_env_folder_is_read_by_split(data_root):
    assert len(hf_persona.get_dataset("esconv")) == len(hf_persona.get_dataset("esconv", split="valid")) > 1
    assert len(hf_persona.get_dataset("esconv", split="train")) == 1
    assert len(hf_persona.get_dataset("msc", split="valid")) == 7
    assert len(hf_persona.get_dataset("personachat", split="valid")) > 0
    with pytest.raises(HFPersonaError, match=r"msc split 'test' not found in HF_PERSONA_DATA="):
        hf_persona.get_dataset("msc", split="test")
    with pytest.raises(HFPersonaError, match="session_3_valid.txt"):
        hf_persona.get_dataset("msc", session=3)
    with pytest.raises(HFPersonaError, match="revised_no_cands"):
        hf_persona.get_dataset("personachat", variant="revised")


def test_path_wins_over_env(data_root, tmp_path):
    one = tmp_path / "one.json"
    one.write_text(sample_file("esconv").read_text().split("\n", 1)[0] + "\n")
    assert len(hf_persona.get_dataset("esconv", path=one)) == 1
    assert len(hf_persona.get_dataset("esconv", path=data_root, split="train")) == 1  # a data folder
    assert len(hf_persona.get_dataset("esconv", path=data_root / "esconv", split="train")) == 1
    with pytest.raises(HFPersonaError, match="is a file"):
        hf_persona.get_dataset("esconv", path=one, split="train")
    with pytest.raises(HFPersonaError, match="does not exist"):
        hf_persona.get_dataset("esconv", path=tmp_path / "missing")
    with pytest.raises(HFPersonaError, match="split must be a name"):
        hf_persona.get_dataset("esconv", split="../x")


def test_reader_options_pass_through(no_env):
    report = {}
    hf_persona.get_dataset("esconv", merge_consecutive=True, report=report)
    assert report["dialogues"] > 0


def test_pesconv_from_an_annotation_folder(data_root, monkeypatch, tmp_path):
    ds = hf_persona.get_dataset("pesconv")  # $HF_PERSONA_DATA/pesconv/valid/
    assert len(ds) == 1 and ds[0]["personas"] == PESCONV_ROW["personas"]
    assert hf_persona.get_dataset("pesconv", path=data_root / "pesconv" / "valid")[0]["strategies"] == ["", "Question", ""]
    assert len(hf_persona.get_dataset("pesconv", path=data_root, split="valid")) == 1
    monkeypatch.delenv("HF_PERSONA_DATA")
    with pytest.raises(HFPersonaError, match="pesconv has no embedded sample"):
        hf_persona.get_dataset("pesconv")
    with pytest.raises(HFPersonaError, match="no options"):
        hf_persona.get_dataset("pesconv", path=data_root / "pesconv" / "valid", session=2)


def test_pesconv_from_a_real_annotate_run(tmp_path, no_env):
    """The folder written by hf_persona.data.pesconv.annotate loads as a dataset."""
    from hf_persona.data.pesconv import annotate

    annotate(lambda batch: [["i have a dog ."] for _ in batch], sample_file("esconv"), tmp_path / "pes",
             dialogues_per_shard=2, max_dialogues=2)
    ds = hf_persona.get_dataset("pesconv", path=tmp_path / "pes")
    assert len(ds) == 2 and {"utterances", "speakers", "strategies", "personas"} <= set(ds.column_names)
