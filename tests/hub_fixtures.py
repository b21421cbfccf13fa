"""Test support for the Hub module: a fake Hub HTTP server, a Hub cache builder, a tiny custom model,
and a tiny builder for every model hf_persona registers (``BUILDERS``, ``RECIPE_BUILDERS``).

Nothing here talks to the real Hub. ``FakeHub`` implements the endpoints huggingface_hub's
``create_repo`` / ``create_commit`` call (repo create, validate-yaml, preupload, NDJSON commit)
on 127.0.0.1 and records every upload; ``write_hub_cache`` lays files out exactly like
huggingface_hub's cache (``models--ORG--NAME/{blobs,snapshots/<sha>,refs/main}``) so a test can
load ``ORG/NAME`` by id under ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch


class FakeHub:
    """A minimal Hub API on 127.0.0.1 that accepts commits and records what was uploaded."""

    def __init__(self, token: str = "hf_fake_write_token"):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.validated_yaml: list[str] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status, payload, headers=None):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with hub._lock:
                    hub.requests.append(("GET", self.path))
                self._send(404, {"error": "not implemented by the fake hub"}, {"X-Error-Code": "RepoNotFound"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                with hub._lock:
                    hub.requests.append(("POST", path))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                parts = path.strip("/").split("/")
                if path == "/api/repos/create":
                    return self._create(json.loads(body))
                if path == "/api/validate-yaml":
                    hub.validated_yaml.append(json.loads(body)["content"])
                    return self._send(200, {"errors": [], "warnings": []})
                if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("preupload", "commit"):
                    repo_id = f"{parts[2]}/{parts[3]}"
                    if repo_id not in hub.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if parts[4] == "preupload":
                        files = json.loads(body)["files"]
                        return self._send(200, {"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
                    return self._commit(repo_id, body)
                return self._send(404, {"error": f"unknown endpoint {path}"})

            def _create(self, payload):
                repo_id = f"{payload['organization']}/{payload['name']}"
                base = f"http://127.0.0.1:{hub.port}"
                with hub._lock:
                    if repo_id in hub.repos:
                        return self._send(409, {"error": "You already created this model repo",
                                                "url": f"{base}/{repo_id}"})
                    hub.repos[repo_id] = {"visibility": payload.get("visibility"), "type": payload.get("type"),
                                          "files": {}, "commits": []}
                return self._send(200, {"url": f"{base}/{repo_id}"})

            def _commit(self, repo_id, body):
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                if not lines or lines[0]["key"] != "header":
                    return self._send(400, {"error": "first NDJSON line must be the header"})
                files = {}
                for item in lines[1:]:
                    if item["key"] != "file" or item["value"].get("encoding") != "base64":
                        return self._send(400, {"error": f"fake hub only accepts regular base64 files, got {item['key']}"})
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                oid = hashlib.sha1(body).hexdigest()
                with hub._lock:
                    repo = hub.repos[repo_id]
                    repo["files"].update(files)
                    repo["commits"].append({"oid": oid, "summary": lines[0]["value"]["summary"],
                                            "files": sorted(files)})
                base = f"http://127.0.0.1:{hub.port}"
                return self._send(200, {"commitUrl": f"{base}/{repo_id}/commit/{oid}", "commitOid": oid,
                                        "pullRequestUrl": None})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def write_hub_cache(cache_dir, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> Path:
    """Lay ``files`` out as huggingface_hub's cache does and point ``refs/main`` at the snapshot.

    ``blobs/<sha256>`` hold the bytes, ``snapshots/<commit>/<path>`` are relative symlinks to them.
    Returns the snapshot folder.
    """
    org, name = repo_id.split("/")
    root = Path(cache_dir) / f"models--{org}--{name}"
    commit = commit or hashlib.sha1(repr(sorted(files)).encode() + b"".join(files[k] for k in sorted(files))).hexdigest()
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / digest).write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(root / "blobs" / digest, link.parent), link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


TINY_CONFIG_SRC = '''
from transformers import PretrainedConfig


class TinyScorerConfig(PretrainedConfig):
    model_type = "hfp_tiny_scorer"

    def __init__(self, vocab_size=30522, hidden_size=8, backbone="minilm", **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.backbone = backbone
        super().__init__(**kwargs)
'''

TINY_MODEL_SRC = '''
import torch
from transformers import PreTrainedModel

from .configuration_tiny_scorer import TinyScorerConfig


class TinyScorerModel(PreTrainedModel):
    config_class = TinyScorerConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, 1)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled).squeeze(-1)
'''


def tiny_model_package(root) -> tuple[type, type]:
    """Write and import a self-contained custom model package (config + model); returns the classes."""
    root = Path(root)
    pkg = root / "hfp_tiny_scorer_pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configuration_tiny_scorer.py").write_text(textwrap.dedent(TINY_CONFIG_SRC))
    (pkg / "modeling_tiny_scorer.py").write_text(textwrap.dedent(TINY_MODEL_SRC))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    config_mod = importlib.import_module("hfp_tiny_scorer_pkg.configuration_tiny_scorer")
    model_mod = importlib.import_module("hfp_tiny_scorer_pkg.modeling_tiny_scorer")
    return config_mod.TinyScorerConfig, model_mod.TinyScorerModel


def save_tiny_model(root, out_dir, tokenizer_dir) -> Path:
    """Save a seeded tiny custom model with auto_map, code files and a tokenizer into ``out_dir``."""
    import torch
    from transformers import AutoTokenizer

    config_cls, model_cls = tiny_model_package(root)
    config_cls.register_for_auto_class()
    model_cls.register_for_auto_class("AutoModel")
    torch.manual_seed(0)
    model = model_cls(config_cls(hidden_size=8))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


# ------------------------------------------------------------------ tiny builders per registered model

UTTS = ["i play guitar in a band", "i caught a big fish yesterday at the lake"]
PERSONA = ["i play the guitar .", "i like to go fishing ."]
CANDIDATES = ["me too , i love music .", "i drive a red truck .", "what do you fish for ?"]


def _cobert(kind):
    def build(backbone, out):
        from hf_persona.training.cobert import build_model

        model = build_model(kind, backbone)
        tokenizer = model.tokenizer
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return model, tokenizer

    def probe(model, tokenizer):
        return model.rank(UTTS, PERSONA, CANDIDATES, tokenizer=tokenizer)

    return build, probe


def _receiver():
    def build(backbone, out):
        from hf_persona.models.receiver import ReceiverModel

        model = ReceiverModel.from_encoder_pretrained(backbone)
        model.save_pretrained(out)
        model.tokenizer.save_pretrained(out)
        return model, model.tokenizer

    def probe(model, tokenizer):
        return torch.tensor([model.score(UTTS, PERSONA, tokenizer=tokenizer),
                             model.score(UTTS[:1], PERSONA[1:], tokenizer=tokenizer)])

    return build, probe


def _pal_probe(builder: str):
    """Teacher-forced logits of one PAL example built by ``processing_pal.<builder>``."""

    def probe(model, tokenizer):
        from hf_persona.models import pal
        from hf_persona.models.pal import PALCollator

        example = getattr(pal, builder)(["hi , i lost my job", "that sounds hard", "i can not sleep"],
                                        ["usr", "sys", "usr"], ["", "Reflection of feelings", ""], PERSONA,
                                        response="how long has this been going on ?", strategy="Question",
                                        tokenizer=tokenizer)
        batch = PALCollator(tokenizer)([example])
        batch.pop("strategy_id", None)
        return model(**batch).logits

    return probe


def _pal():
    def build(backbone, out):
        from transformers import AutoTokenizer

        from hf_persona.models.pal import PALForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        model = PALForConditionalGeneration.from_backbone(backbone, tokenizer)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return model, tokenizer

    return build, _pal_probe("build_pal_example")


def _pal_causal():
    def build(backbone, out):
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from hf_persona.models.pal import PALForCausalLM
        from hf_persona.tiny import CHATML

        tokenizer = AutoTokenizer.from_pretrained(backbone)  # the MiniLM vocabulary, ChatML added
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.chat_template = CHATML
        llama = out.parent / "tiny_llama"
        LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                     max_position_embeddings=256)).save_pretrained(llama)
        tokenizer.save_pretrained(llama)
        model = PALForCausalLM.from_backbone(str(llama), tokenizer, fusion_layer=0)
        with torch.no_grad():  # an open gate, so the probe sees the persona path
            model.fusion_gate.fill_(0.5)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return model, tokenizer

    return build, _pal_probe("build_pal_causal_example")


def _transmitter():
    def build(backbone, out):
        from transformers import AutoTokenizer, BertConfig

        from hf_persona.models.transmitter import TransmitterConfig, TransmitterForDialogue, prepare_tokenizer

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        prepare_tokenizer(tokenizer)
        config = TransmitterConfig(
            backbone_config=BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=256),
            max_context_tokens=96, max_response_tokens=12)
        model = TransmitterForDialogue(config)
        model.adapt_to_tokenizer(tokenizer)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return model, tokenizer

    def probe(model, tokenizer):
        return torch.tensor(model.rank_candidates(tokenizer, PERSONA, UTTS, CANDIDATES))

    return build, probe


def _persona_extractor():
    def build(backbone, out):
        from hf_persona.training.persona_extractor import PersonaExtractor, build_extractor_model

        model, tokenizer = build_extractor_model(backbone)
        PersonaExtractor(model, tokenizer).save_pretrained(out)
        return model, tokenizer

    def probe(model, tokenizer):
        enc = tokenizer(["i am a nurse and i have two dogs"], return_tensors="pt")
        return model.generate(**enc, max_new_tokens=6, do_sample=False, num_beams=1)

    return build, probe


def _ppg_generator(task):
    """A PPG or DRG generator as ``train ppg`` / ``train drg`` save it: a plain causal LM and ``ppg_meta.json``."""

    def build(backbone, out):
        from hf_persona.training.ppg import load_generator

        model, tokenizer = load_generator(backbone)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "ppg_meta.json").write_text(json.dumps({"task": task, "base": str(backbone)}))
        return model, tokenizer

    def probe(model, tokenizer):
        return model(**tokenizer(["your persona: i like cats .\npartner: hi !\nyou:"], return_tensors="pt")).logits

    return build, probe


def _critic():
    """The PPG critic as ``train critic`` saves it: a plain 2-label classifier and ``ppg_meta.json``."""

    def build(backbone, out):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "ppg_meta.json").write_text(json.dumps({"task": "critic", "base": str(backbone)}))
        return model, tokenizer

    def probe(model, tokenizer):
        return model(**tokenizer([PERSONA[0]], [UTTS[0]], return_tensors="pt")).logits

    return build, probe


#: registered model name (``hf_persona.plugins.model_specs()``) ->
#: (build(backbone_dir, out_dir) -> (model, tokenizer), probe(model, tokenizer) -> tensor)
BUILDERS = {
    "cobert": _cobert("cobert"),
    "persona_biencoder": _cobert("biencoder"),
    "receiver": _receiver(),
    "pal": _pal(),
    "pal_causal": _pal_causal(),
    "transmitter": _transmitter(),
}
#: recipe model name (``hf_persona.plugins.recipe_model_specs()``: a plain transformers architecture
#: with a sidecar file) -> (build, probe) as above; build also writes the sidecar
RECIPE_BUILDERS = {
    "persona_extractor": _persona_extractor(),
    "ppg": _ppg_generator("ppg"),
    "drg": _ppg_generator("drg"),
    "critic": _critic(),
}


@pytest.fixture
def online(monkeypatch):
    """Point huggingface_hub at a fresh fake Hub and switch offline mode off for this test."""
    from huggingface_hub import constants

    with FakeHub() as fake:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_TOKEN", fake.token)
        yield fake


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A private huggingface_hub cache folder for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
