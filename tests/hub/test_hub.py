"""Hub push/pull without the Hub: a fake Hub server on 127.0.0.1 and a real cache layout offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from hf_persona import hub
from hf_persona.backbones import minilm_path
from hf_persona.errors import HFPersonaError

from tests.hub_fixtures import FakeHub, hub_cache, offline, online, save_tiny_model, write_hub_cache  # noqa: F401

CARD = """---
library_name: transformers
base_model: {base_model}
tags: [hf-persona]
---
# {repo_id}

Scores a text. Load with `AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)`.
A literal brace: {{not a placeholder}}.

## Results

{metrics_table}
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return save_tiny_model(root / "src", root / "model", minilm_path())


@pytest.fixture
def card_path(tmp_path):
    path = tmp_path / "tiny.md"
    path.write_text(CARD)
    return path


def _scores(model):
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 2204, 102, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return out if isinstance(out, torch.Tensor) else out[0]


def _repo_id():
    return f"tester/tiny-{uuid.uuid4().hex[:8]}"


EXPECTED_FILES = ["README.md", "config.json", "configuration_tiny_scorer.py", "model.safetensors",
                  "modeling_tiny_scorer.py", "tokenizer.json", "tokenizer_config.json"]


# ------------------------------------------------------------------ what gets pushed

def test_collect_files_picks_weights_config_code_and_tokenizer(tiny_dir):
    names = [p.name for p in hub.collect_files(tiny_dir)]
    assert names == [n for n in EXPECTED_FILES if n != "README.md"]
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_tiny_scorer.TinyScorerModel"


def test_sidecar_json_is_pushed_but_trainer_bookkeeping_is_not(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    (folder / "persona_extractor.json").write_text("{}")
    (folder / "trainer_state.json").write_text("{}")
    names = [p.name for p in hub.collect_files(folder)]
    assert "persona_extractor.json" in names and "trainer_state.json" not in names


def test_pickle_weights_are_refused(tiny_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    (bad / "training_args.bin").write_bytes(b"trainer bookkeeping, skipped")
    assert "training_args.bin" not in [p.name for p in hub.collect_files(bad)]
    (bad / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(HFPersonaError, match=r"refusing to push pickle weights pytorch_model\.bin"):
        hub.collect_files(bad)


def test_custom_model_without_auto_map_or_code_is_refused(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    (folder / "modeling_tiny_scorer.py").unlink()
    with pytest.raises(HFPersonaError, match=r"modeling_tiny_scorer\.py, which is missing"):
        hub.collect_files(folder)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HFPersonaError, match="no auto_map for custom model_type 'hfp_tiny_scorer'"):
        hub.collect_files(folder)


def test_missing_weights_or_tokenizer_is_refused(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(HFPersonaError, match="no tokenizer files"):
        hub.collect_files(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(HFPersonaError, match=r"no \*\.safetensors weights"):
        hub.collect_files(folder)
    with pytest.raises(HFPersonaError, match="does not exist"):
        hub.collect_files(tmp_path / "nowhere")


# ------------------------------------------------------------------ model card

def test_metrics_table_comes_from_the_json(tmp_path, tiny_dir, card_path):
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"hits@1": 0.61234, "mrr": 0.7, "n": 200, "note": "text is skipped",
                                   "nested": {"ppl": 15.92}}))
    card = hub.build_card(tiny_dir, "org/name", card_template=card_path, metrics_json=metrics)
    assert "| hits@1 | 0.6123 |" in card
    assert "| mrr | 0.7 |" in card
    assert "| n | 200 |" in card
    assert "| nested.ppl | 15.92 |" in card
    assert "note" not in card
    # rows sorted by name, in one table, right under the header
    table = card.split("## Results\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table == ["| Metric | Value |", "|---|---|", "| hits@1 | 0.6123 |", "| mrr | 0.7 |", "| n | 200 |",
                     "| nested.ppl | 15.92 |"]
    # config says backbone="minilm": the card names its Hub id; literal braces survive
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "{not a placeholder}" in card
    assert 'AutoModel.from_pretrained("org/name", trust_remote_code=True)' in card


def test_card_without_metrics_says_so(tiny_dir, card_path):
    card = hub.build_card(tiny_dir, "org/name", card_template=card_path)
    assert "No evaluation results were supplied" in card


def test_card_template_found_by_model_type_and_bad_templates(tiny_dir, tmp_path, monkeypatch):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "hfp_tiny_scorer.md").write_text("model {repo_id} on {base_model}\n{metrics_table}\n")
    monkeypatch.setattr(hub, "MODEL_CARDS_DIR", cards)
    assert hub.build_card(tiny_dir, "a/b").startswith("model a/b on sentence-transformers/all-MiniLM-L6-v2")
    (cards / "hfp_tiny_scorer.md").write_text("{metrics_table} {accuracy}")
    with pytest.raises(HFPersonaError, match=r"unknown placeholder \{accuracy\}"):
        hub.build_card(tiny_dir, "a/b")
    (cards / "hfp_tiny_scorer.md").unlink()
    with pytest.raises(HFPersonaError, match="no model card template for model_type 'hfp_tiny_scorer'"):
        hub.build_card(tiny_dir, "a/b")
    # a sidecar file names the template when model_type cannot (a plain encoder-decoder extractor)
    (cards / "persona_extractor.md").write_text("extractor card {repo_id} {base_model} {metrics_table}")
    (tiny_dir / "persona_extractor.json").write_text("{}")
    try:
        assert hub.build_card(tiny_dir, "a/b").startswith("extractor card a/b")
    finally:
        (tiny_dir / "persona_extractor.json").unlink()
    # a PPG sidecar names its card by task and records the base checkpoint the config does not
    (cards / "drg.md").write_text("drg card {repo_id} on {base_model}\n{metrics_table}")
    config = json.loads((tiny_dir / "config.json").read_text())
    folder = tmp_path / "drg"
    import shutil

    shutil.copytree(tiny_dir, folder)
    del config["backbone"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "ppg_meta.json").write_text(json.dumps({"task": "drg", "base": minilm_path()}))
    assert hub.build_card(folder, "a/b").startswith("drg card a/b on sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(HFPersonaError, match="not found"):
        hub.build_card(tiny_dir, "a/b", card_template="no-such-card")


def test_bad_metrics_files(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(HFPersonaError, match="expected a JSON object"):
        hub.load_metrics(tmp_path / "list.json")
    (tmp_path / "words.json").write_text('{"a": "b"}')
    with pytest.raises(HFPersonaError, match="no numeric metric"):
        hub.load_metrics(tmp_path / "words.json")
    with pytest.raises(HFPersonaError, match="does not exist"):
        hub.load_metrics(tmp_path / "missing.json")


def test_every_shipped_card_template_renders():
    """Every packaged template (model_cards/) is a valid str.format template with only the three fields."""
    names = hub.available_card_templates()
    assert names
    for name in names:
        path = hub.MODEL_CARDS_DIR / f"{name}.md"
        card = hub.render_card(path, repo_id="org/name", base_model="base/model", metrics={"m": 1.5})
        assert "| m | 1.5 |" in card, f"{name}.md does not place {{metrics_table}}"
        assert card.startswith("---\n"), f"{name}.md has no YAML front matter"


SHIPPED_CARDS = {"cobert", "critic", "drg", "pal", "pal_causal", "persona_biencoder", "persona_extractor", "ppg",
                 "receiver", "transmitter"}


def test_card_templates_are_package_data_found_through_importlib_resources():
    """The templates (the top-level model_cards/ folder) install as the package hf_persona.model_cards,
    found through importlib.resources (a wheel install finds them without --card)."""
    from importlib.resources import files

    try:
        packaged = files("hf_persona.model_cards")
    except ModuleNotFoundError:
        pytest.skip("this install of hf_persona predates model_cards/ as hf_persona.model_cards; "
                    "`pip install -e .` refreshes it (hub then reads the checkout's model_cards/)")
    root = Path(__file__).resolve().parents[2]
    assert Path(str(hub.MODEL_CARDS_DIR)).resolve() == Path(str(packaged)).resolve() == root / "model_cards"
    assert SHIPPED_CARDS <= {p.name[:-3] for p in packaged.iterdir() if p.name.endswith(".md")}
    assert SHIPPED_CARDS <= set(hub.available_card_templates())
    template = hub.find_card_template("p2bot_receiver", "receiver")
    assert template.read_text(encoding="utf-8") == (packaged / "receiver.md").read_text(encoding="utf-8")
    # by model_type and by sidecar marker, without a path
    assert hub.find_card_template("cobert").read_text(encoding="utf-8") == \
        (packaged / "cobert.md").read_text(encoding="utf-8")
    assert hub.find_card_template("no_such_type", markers=["drg"]).read_text(encoding="utf-8") == \
        (packaged / "drg.md").read_text(encoding="utf-8")


def test_model_cards_dir_is_the_checkouts_folder():
    """From this checkout (editable install or none) the templates are read from model_cards/ at the root."""
    root = Path(__file__).resolve().parents[2]
    assert Path(str(hub.MODEL_CARDS_DIR)).resolve() == root / "model_cards"
    assert SHIPPED_CARDS == set(hub.available_card_templates())
    assert not (root / "hf_persona" / "model_cards").exists(), "the templates moved to the top-level model_cards/"


def test_card_templates_found_inside_a_zipped_package(tmp_path, monkeypatch):
    """Only the importlib.resources Traversable API is used: a package imported from a zip (a zipped
    wheel, where the templates are not files on disk) still finds and renders its cards."""
    import zipfile

    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in SHIPPED_CARDS:
            zf.writestr(f"hf_persona/model_cards/{name}.md",
                        (hub.MODEL_CARDS_DIR / f"{name}.md").read_text(encoding="utf-8"))
    zipped = zipfile.Path(archive, "hf_persona/model_cards/")
    monkeypatch.setattr(hub, "MODEL_CARDS_DIR", zipped)
    assert set(hub.available_card_templates()) == SHIPPED_CARDS
    template = hub.find_card_template("p2bot_receiver", "receiver")
    assert isinstance(template, zipfile.Path)
    card = hub.render_card(template, repo_id="org/rx", base_model="base/model", metrics={"hits@1": 0.5})
    assert "org/rx" in card and "| hits@1 | 0.5 |" in card
    with pytest.raises(HFPersonaError, match="available: cobert, critic"):
        hub.find_card_template("x", "no-such-card")


def test_pyproject_ships_the_card_templates_as_package_data():
    """pyproject.toml installs model_cards/ as hf_persona.model_cards with every template as package data,
    and lists every package of the source tree (a listed, not found, package list must not lose one)."""
    tomllib = pytest.importorskip("tomllib")
    import fnmatch

    from setuptools import find_namespace_packages

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert config["package-dir"]["hf_persona.model_cards"] == "model_cards"
    patterns = config["package-data"]["hf_persona.model_cards"]
    shipped = [p.name for p in (root / "model_cards").glob("*.md")]
    assert len(shipped) >= len(SHIPPED_CARDS)
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in shipped)
    assert (root / "model_cards" / "__init__.py").is_file()  # a regular package: editable installs map it
    tree = {p for p in find_namespace_packages(where=str(root), include=["hf_persona*"])
            if "__pycache__" not in p}
    assert set(config["packages"]) == tree | {"hf_persona.model_cards"}, \
        "pyproject.toml [tool.setuptools] packages must list every package under hf_persona/"


# ------------------------------------------------------------------ push against the fake Hub

def test_push_uploads_exactly_the_model_files_and_card(online, tiny_dir, card_path, tmp_path):
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"hits@1": 0.5}))
    repo_id = _repo_id()
    result = hub.push(tiny_dir, repo_id, private=True, card_template=card_path, metrics_json=metrics)
    repo = online.repos[repo_id]
    assert sorted(repo["files"]) == EXPECTED_FILES == result.files
    assert repo["visibility"] == "private"
    assert len(repo["commits"]) == 1
    for name in EXPECTED_FILES:
        if name != "README.md":
            assert repo["files"][name] == (tiny_dir / name).read_bytes(), name
    card = repo["files"]["README.md"].decode()
    assert card == hub.build_card(tiny_dir, repo_id, card_template=card_path, metrics_json=metrics)
    assert "| hits@1 | 0.5 |" in card and f"# {repo_id}" in card
    assert online.validated_yaml == [card]
    assert result.commit_url.startswith(f"{online.endpoint}/{repo_id}/commit/")
    # pushing again to the existing repo (409 on create) adds a second commit
    hub.push(tiny_dir, repo_id, card_template=card_path)
    assert len(repo["commits"]) == 2


def test_push_errors_are_one_line(online, tiny_dir, card_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(constants.HF_HOME) / "no-token-here"))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(HFPersonaError, match="no Hugging Face token found") as exc:
        hub.push(tiny_dir, "org/x", card_template=card_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(HFPersonaError, match=r"rejected the token \(401\)") as exc:
        hub.push(tiny_dir, "org/x", token="hf_wrong", card_template=card_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(HFPersonaError, match="repo id must look like ORG/NAME"):
        hub.push(tiny_dir, "no-slash", token=online.token, card_template=card_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HFPersonaError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        hub.push(tiny_dir, "org/x", token=online.token, card_template=card_path)
    assert online.repos == {}


def test_push_without_network_says_so(tiny_dir, card_path, monkeypatch):
    import socket

    from huggingface_hub import constants

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HFPersonaError, match="cannot be reached") as exc:
        hub.push(tiny_dir, "org/x", token="hf_any", card_template=card_path)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------ pull from the offline cache

def test_pull_by_id_from_the_hub_cache_offline(tiny_dir, hub_cache, offline, tmp_path, capsys):
    from transformers import AutoModel

    files = {p.name: p.read_bytes() for p in tiny_dir.iterdir() if p.is_file()}
    snapshot = write_hub_cache(hub_cache, "tester/tiny-cached", files)
    assert (hub_cache / "models--tester--tiny-cached" / "refs" / "main").read_text() == snapshot.name
    expected = _scores(AutoModel.from_pretrained(str(tiny_dir), trust_remote_code=True))
    model = hub.pull("tester/tiny-cached", trust_remote_code=True)
    assert type(model).__name__ == "TinyScorerModel"
    torch.testing.assert_close(_scores(model), expected, rtol=0, atol=0)
    out = tmp_path / "copy"
    model = hub.pull("tester/tiny-cached", out_dir=out, trust_remote_code=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert not any(p.is_symlink() for p in out.iterdir())
    torch.testing.assert_close(_scores(model), expected, rtol=0, atol=0)
    from hf_persona.cli import main

    main(["pull", "tester/tiny-cached", "--out", str(tmp_path / "cli"), "--trust-remote-code"])
    assert "loaded tester/tiny-cached into" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_pull_errors(tiny_dir, hub_cache, offline):
    with pytest.raises(HFPersonaError, match="offline mode is on .* not in the local cache"):
        hub.pull("tester/never-downloaded")
    files = {p.name: p.read_bytes() for p in tiny_dir.iterdir() if p.is_file() and p.suffix != ".safetensors"}
    files["pytorch_model.bin"] = b"pickle bytes"
    write_hub_cache(hub_cache, "tester/pickle-only", files)
    with pytest.raises(HFPersonaError, match="no safetensors weights"):
        hub.pull("tester/pickle-only", trust_remote_code=True)
    good = {p.name: p.read_bytes() for p in tiny_dir.iterdir() if p.is_file()}
    write_hub_cache(hub_cache, "tester/needs-trust", good)
    with pytest.raises(HFPersonaError, match="trust_remote_code=True"):
        hub.pull("tester/needs-trust")


# ------------------------------------------------------------------ push -> pull round trip

def test_push_then_pull_round_trip(online, tiny_dir, card_path, hub_cache, monkeypatch):
    from huggingface_hub import constants
    from transformers import AutoModel

    repo_id = _repo_id()
    hub.push(tiny_dir, repo_id, card_template=card_path)
    write_hub_cache(hub_cache, repo_id, online.repos[repo_id]["files"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n_requests = len(online.requests)
    model = hub.pull(repo_id, trust_remote_code=True)
    assert len(online.requests) == n_requests  # loaded from the cache, not the server
    expected = _scores(AutoModel.from_pretrained(str(tiny_dir), trust_remote_code=True))
    torch.testing.assert_close(_scores(model), expected, rtol=0, atol=0)


# ------------------------------------------------------------------ the CLI, configured through HF_ENDPOINT

def test_cli_push_through_hf_endpoint(tiny_dir, card_path, tmp_path):
    repo_id = _repo_id()
    with FakeHub() as fake:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=fake.endpoint, HF_TOKEN=fake.token, HF_HOME=str(tmp_path / "home"),
                   HF_PERSONA_LOAD_PLUGINS="")
        cmd = [sys.executable, "-c", "from hf_persona.cli import main; main()"]
        done = subprocess.run(cmd + ["push", str(tiny_dir), "--repo-id", repo_id, "--card", str(card_path)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"pushed {len(EXPECTED_FILES)} files" in done.stdout
        assert sorted(fake.repos[repo_id]["files"]) == EXPECTED_FILES


def test_cli_errors_exit_2_with_one_line(online, tiny_dir, card_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from hf_persona.cli import main

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(constants.HF_HOME) / "no-token-here"))
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(tiny_dir), "--repo-id", "org/x", "--card", str(card_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot push to org/x: no Hugging Face token found")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        main(["pull", "org/never-cached"])
    assert exit_info.value.code == 2
    assert "not in the local cache" in capsys.readouterr().err
