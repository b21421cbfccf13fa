import json
import os
import subprocess
import sys

import pytest

from hf_persona.backbones import minilm_path, resolve
from hf_persona.data import sample_path


def run_cli(*args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "hf_persona.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_help_and_plugins_json_lists_builtins_and_example_plugin():
    assert run_cli("--help").returncode == 0
    proc = run_cli("plugins", "--json", env_extra={"HF_PERSONA_LOAD_PLUGINS": "hf-persona-distinct"})
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert set(listing) == {"models", "rewards", "logits_processors", "datasets", "errors"}
    assert listing["errors"] == []
    assert "distinct_n" in listing["rewards"] and "esconv" in listing["datasets"]


def test_data_inspect_json_on_sample():
    proc = run_cli("data", "inspect", str(sample_path("esconv")), "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["format"] == "esconv" and stats["dialogues"] == 24 and stats["persona_sentences"] == 0
    proc = run_cli("data", "inspect", str(sample_path("personachat")), "--json")
    stats = json.loads(proc.stdout)
    # 36 dialogues, 8 persona sentences and 8 utterances each
    assert stats == {"format": "personachat", "dialogues": 36, "turns": 36 * 8, "persona_sentences": 36 * 8}


def test_broken_line_gives_one_line_error_and_status_2(tmp_path):
    bad = tmp_path / "broken.json"
    good = sample_path("esconv").read_text().splitlines()
    bad.write_text("\n".join(good[:3] + ['{"dialog": [ oops'] + good[3:]) + "\n")
    proc = run_cli("data", "inspect", str(bad), "--json")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"{bad}:4: expected one JSON object per line" in proc.stderr


def test_real_esconv_inspect(shared_data):
    proc = run_cli("data", "inspect", str(shared_data / "esconv" / "train.json"), "--json")
    assert json.loads(proc.stdout)["dialogues"] == 910


def test_backbone_resolution(tmp_path):
    path = resolve("minilm")
    assert path == minilm_path() and os.path.isfile(os.path.join(path, "config.json"))
    assert resolve("bert-base-uncased") == "bert-base-uncased"
    assert resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="empty string"):
        resolve("  ")
    with pytest.raises(TypeError):
        resolve(3)
