"""Every model a plugin registers goes through push (fake Hub) -> cache -> pull (offline) unchanged.

For each registered model: build a tiny random instance (tiny BERT backbone, MiniLM tokenizer),
save it with its tokenizer, push it to the fake Hub, lay the uploaded files out as the Hub cache,
pull it by id under HF_HUB_OFFLINE=1, and compare the weights and the model's own outputs.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_persona import hub
from hf_persona.plugins import list_plugins
from tests.hub_fixtures import hub_cache, online, write_hub_cache  # noqa: F401

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
        from tests.conftest import CHATML

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


#: registered model name -> (build(backbone_dir, out_dir) -> (model, tokenizer), probe(model, tokenizer) -> tensor)
BUILDERS = {
    "cobert": _cobert("cobert"),
    "persona_biencoder": _cobert("biencoder"),
    "receiver": _receiver(),
    "pal": _pal(),
    "pal_causal": _pal_causal(),
    "transmitter": _transmitter(),
}
#: models that are plain transformers architectures (not registered by a plugin) but pushed too
UNREGISTERED = {"persona_extractor": _persona_extractor()}

GENERIC_CARD = "---\nlibrary_name: transformers\n---\n# {repo_id}\n\nBase: {base_model}\n\n{metrics_table}\n"


def test_every_registered_model_has_a_round_trip_builder():
    missing = sorted(set(list_plugins()["models"]) - set(BUILDERS))
    assert not missing, f"registered models without a push/pull round trip here: {missing}"


@pytest.mark.parametrize("name", sorted(BUILDERS) + sorted(UNREGISTERED))
def test_push_pull_round_trip(name, tiny_bert_dir, tmp_path, online, hub_cache, monkeypatch):
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    build, probe = {**BUILDERS, **UNREGISTERED}[name]
    torch.manual_seed(0)
    model, tokenizer = build(tiny_bert_dir, tmp_path / "saved")
    model.eval()
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"score": 0.25}))
    model_type = model.config.model_type
    markers = [marker for marker, card in hub.CARD_MARKERS.items() if (tmp_path / "saved" / marker).is_file()]
    try:
        template = hub.find_card_template(model_type, markers=[hub.CARD_MARKERS[m] for m in markers])
        card_template = None
    except hub.HFPersonaError:  # the model's engineer has not written its card yet
        template = tmp_path / "generic.md"
        template.write_text(GENERIC_CARD)
        card_template = template
    repo_id = f"hf-persona-test/{name.replace('_', '-')}"
    result = hub.push(tmp_path / "saved", repo_id, card_template=card_template, metrics_json=metrics)

    uploaded = online.repos[repo_id]["files"]
    config = json.loads(uploaded["config.json"])
    for ref in config.get("auto_map", {}).values():  # the code behind every auto_map entry went up with it
        assert f"{ref.split('.')[0]}.py" in uploaded, ref
    assert "model.safetensors" in uploaded and not any(n.endswith(".bin") for n in uploaded)
    assert "tokenizer_config.json" in uploaded
    assert "| score | 0.25 |" in uploaded["README.md"].decode()
    assert uploaded["README.md"].decode() == hub.build_card(tmp_path / "saved", repo_id, card_template=template,
                                                           metrics_json=metrics)
    for marker in markers:  # sidecar files a loader needs travel with the weights
        assert uploaded[marker] == (tmp_path / "saved" / marker).read_bytes()
    assert sorted(uploaded) == result.files

    write_hub_cache(hub_cache, repo_id, uploaded)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "pulled"
    pulled = hub.pull(repo_id, out_dir=out).eval()
    assert type(pulled) is type(model)  # hf_persona's registered class, no remote code needed
    want, got = model.state_dict(), pulled.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(probe(pulled, AutoTokenizer.from_pretrained(out)), probe(model, tokenizer),
                                   rtol=0, atol=0)
