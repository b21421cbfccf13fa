"""Every model a plugin registers goes through push (fake Hub) -> cache -> pull (offline) unchanged.

For each registered model and recipe model (a plain architecture saved with a sidecar file): build a
tiny random instance (tiny BERT backbone, MiniLM tokenizer), save it with its tokenizer, push it to the
fake Hub with the card its registration names, lay the uploaded files out as the Hub cache, pull it by
id under HF_HUB_OFFLINE=1, and compare the weights and the model's own outputs.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_persona import hub
from tests.hub_fixtures import BUILDERS, RECIPE_BUILDERS, hub_cache, online, write_hub_cache  # noqa: F401

# Every registered model and recipe model has a builder here: tests/models/test_model_checklist.py enforces it.
#: tests/test_readme.py imports the builders from here under these names
UNREGISTERED = {"persona_extractor": RECIPE_BUILDERS["persona_extractor"]}


@pytest.mark.parametrize("name", sorted(BUILDERS) + sorted(RECIPE_BUILDERS))
def test_push_pull_round_trip(name, tiny_bert_dir, tmp_path, online, hub_cache, monkeypatch):
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    build, probe = {**BUILDERS, **RECIPE_BUILDERS}[name]
    torch.manual_seed(0)
    model, tokenizer = build(tiny_bert_dir, tmp_path / "saved")
    model.eval()
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"score": 0.25}))
    markers = [file for file in hub.sidecar_files() if (tmp_path / "saved" / file).is_file()]
    assert markers or name not in RECIPE_BUILDERS, f"the {name} builder wrote no registered sidecar file"
    repo_id = f"hf-persona-test/{name.replace('_', '-')}"
    result = hub.push(tmp_path / "saved", repo_id, metrics_json=metrics)  # the card its registration names

    uploaded = online.repos[repo_id]["files"]
    config = json.loads(uploaded["config.json"])
    for ref in config.get("auto_map", {}).values():  # the code behind every auto_map entry went up with it
        assert f"{ref.split('.')[0]}.py" in uploaded, ref
    assert "model.safetensors" in uploaded and not any(n.endswith(".bin") for n in uploaded)
    assert "tokenizer_config.json" in uploaded
    assert "| score | 0.25 |" in uploaded["README.md"].decode()
    assert uploaded["README.md"].decode() == hub.build_card(tmp_path / "saved", repo_id, metrics_json=metrics)
    for marker in markers:  # sidecar files a loader needs travel with the weights
        assert uploaded[marker] == (tmp_path / "saved" / marker).read_bytes()
    assert sorted(uploaded) == result.files

    write_hub_cache(hub_cache, repo_id, uploaded)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "pulled"
    pulled = hub.pull(repo_id, out_dir=out).eval()
    assert type(pulled) is type(model)  # hf_persona's registered class (or transformers' own), no remote code
    want, got = model.state_dict(), pulled.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(probe(pulled, AutoTokenizer.from_pretrained(out)), probe(model, tokenizer),
                                   rtol=0, atol=0)
