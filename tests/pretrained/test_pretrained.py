"""The shipped checkpoints: name resolution, manifests, what the package carries."""

from __future__ import annotations

import json

import pytest

from hf_persona import pretrained
from hf_persona.errors import HFPersonaError, UnknownNameError

NAMES = ("pal", "persona-extractor", "cobert", "receiver")


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    (folder / "pal").mkdir(parents=True)
    (folder / "pal" / "manifest.json").write_text(json.dumps({"name": "pal", "base": "smollm2"}))
    monkeypatch.setattr(pretrained, "HERE", folder)
    return folder


def test_names_resolve_to_the_packaged_folder(fake_package, tmp_path):
    assert pretrained.resolve("pal") == fake_package / "pal"
    assert pretrained.resolve("hf-persona/pal") == fake_package / "pal"
    assert pretrained.available() == ["pal"]
    assert pretrained.manifest("pal")["base"] == "smollm2"
    assert pretrained.resolve(tmp_path) == tmp_path  # a folder passes through


def test_unknown_names_and_missing_downloads_say_what_exists(fake_package, monkeypatch):
    with pytest.raises(UnknownNameError, match="valid names: pal"):
        pretrained.resolve("nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HFPersonaError, match="not packaged in this installation.*packaged: pal"):
        pretrained.resolve("hf-persona/receiver")  # not packaged here: the Hub, which is offline


def test_a_folder_without_manifest_or_with_an_unknown_model(fake_package, tmp_path):
    with pytest.raises(HFPersonaError, match="no manifest.json"):
        pretrained.manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "gpt5"}))
    with pytest.raises(HFPersonaError, match="unknown checkpoint 'gpt5'"):
        pretrained.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_checkpoint_is_complete_and_small(name):
    if name not in pretrained.available():
        pytest.fail(f"{name} is not packaged (hf_persona/pretrained/{name.replace('-', '_')}/manifest.json)")
    folder = pretrained.resolve(name)
    info = pretrained.manifest(name)
    assert info["name"] == name and info["base"] in ("smollm2", "minilm")
    assert info["command"] and info["benchmark"] and info["figures"]
    card = (folder / "README.md").read_text()
    assert info["command"] in card  # the card quotes the command that trained it
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p.name for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]  # safetensors only
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)


def test_all_shipped_checkpoints_fit_in_40_mb():
    total = sum(p.stat().st_size for p in pretrained.HERE.rglob("*") if p.is_file())
    assert total <= 40 * 2**20, f"the shipped checkpoints take {total / 2**20:.1f} MB"


@pytest.mark.slow
def test_the_shipped_pipeline_talks():
    """The four shipped checkpoints on their real bases: a reply in words, a persona, a strategy."""
    import re

    from hf_persona.pipeline import STRATEGIES, SupportPipeline

    pipe = SupportPipeline.from_shipped()
    pipe.respond("hi , i have been feeling really stressed lately and i can not sleep .", seed=0)
    turn = pipe.respond("i lost my job at the factory last month and i keep worrying about money .", seed=0)
    words = re.findall(r"[a-z']+", turn.reply.lower())
    assert len(words) >= 4 and turn.strategy in STRATEGIES and turn.alpha is not None
    assert turn.persona and turn.receiver_score is not None and turn.reply in [t for t, _ in turn.ranking]
