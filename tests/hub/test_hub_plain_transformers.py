"""Issue 27 item 2: a saved model folder is usable with plain transformers, without hf_persona.

For every registered model: save a tiny instance with hf_persona, then in a fresh interpreter where
``import hf_persona`` fails (tests.helpers' blocker, empty HF_HOME, stdin closed) run the usage README
that ``save_pretrained`` wrote next to the weights (so the README cannot rot), load config, model,
tokenizer and (where the folder has one) the AutoProcessor, and check that no ``[y/N]`` trust prompt
was shown. PAL's processor output is compared with hf_persona's own input builder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

from hf_persona import hub
from tests.helpers import _BLOCKER
from tests.hub_fixtures import BUILDERS, PERSONA

PROMPT = "Do you wish to run the custom code"
#: model name -> the processor class its folder declares under AutoProcessor (None: model methods)
PROCESSORS = {"pal": "PALProcessor", "pal_causal": "PALProcessor", "transmitter": "TransmitterProcessor",
              "cobert": None, "persona_biencoder": None, "receiver": None}


def run_plain(code: str, cwd, timeout: int = 300) -> str:
    """Run ``code`` without hf_persona (stdin closed, so a trust prompt would show and fail at once)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_PERSONA_LOAD_PLUGINS")}
        env.update({"HF_HOME": os.path.join(tmp, "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"})
        proc = subprocess.run([sys.executable, "-c", _BLOCKER + "\n" + textwrap.dedent(code)], cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{output[-4000:]}"
    assert PROMPT not in output, f"a trust_remote_code prompt was shown:\n{output[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def saved(tiny_bert_dir, tmp_path_factory):
    """name -> folder written by the model's save_pretrained (+ tokenizer.save_pretrained)."""
    root = tmp_path_factory.mktemp("plain")
    out = {}
    for name, (build, _probe) in BUILDERS.items():
        torch.manual_seed(0)
        build(tiny_bert_dir, root / name)
        out[name] = root / name
    return out


def test_every_registered_model_is_covered():
    assert set(PROCESSORS) == set(BUILDERS)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_folder_carries_usage_and_processor(name, saved):
    folder = saved[name]
    readme = (folder / "README.md").read_text()
    assert readme.startswith(hub.USAGE_MARKER) and "trust_remote_code=True" in readme
    assert "importlib" not in readme and "hf_persona" not in readme.split("## Usage", 1)[1].split("```python")[1]
    processor = PROCESSORS[name]
    config_file = folder / hub.PROCESSOR_CONFIG
    if processor is None:
        assert not config_file.exists()
        return
    data = json.loads(config_file.read_text())
    module, cls = data["auto_map"]["AutoProcessor"].split(".")
    assert cls == processor == data["processor_class"] and (folder / f"{module}.py").is_file()
    # push uploads the processor and its code
    names = {p.name for p in hub.collect_files(folder)}
    assert {hub.PROCESSOR_CONFIG, f"{module}.py"} <= names and "README.md" not in names


def test_user_readme_is_not_overwritten(saved, tiny_bert_dir, tmp_path):
    build, _ = BUILDERS["receiver"]
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("# my own notes\n")
    build(tiny_bert_dir, out)
    assert (out / "README.md").read_text() == "# my own notes\n"


def _readme_code(folder) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1
    return blocks[0].replace(f'"{folder.name}"', repr(str(folder)))


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_readme_runs_without_hf_persona(name, saved):
    folder = saved[name]
    code = _readme_code(folder) + textwrap.dedent(f"""
        import json
        from transformers import AutoConfig, AutoProcessor, AutoTokenizer
        config = AutoConfig.from_pretrained({str(folder)!r}, trust_remote_code=True)
        tok = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert "hf_persona" not in type(model).__module__ and "hf_persona" not in type(config).__module__
        info = {{"config": type(config).__name__, "model": type(model).__name__, "vocab": len(tok)}}
        if {PROCESSORS[name]!r}:
            proc = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
            info["processor"] = type(proc).__name__
            assert "hf_persona" not in type(proc).__module__
        print("RESULT " + json.dumps(info))
    """)
    out = run_plain(code, cwd=folder.parent)
    info = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    config = json.loads((folder / "config.json").read_text())
    assert info["model"] == config["architectures"][0]
    assert info.get("processor") == PROCESSORS[name]


@pytest.mark.parametrize("name,builder", [("pal", "build_pal_example"), ("pal_causal", "build_pal_causal_example")])
def test_pal_processor_matches_hf_persona_inputs(name, builder, saved, tmp_path):
    """The AutoProcessor loaded without hf_persona builds exactly hf_persona's inputs and logits."""
    from transformers import AutoTokenizer

    from hf_persona.models import pal

    folder = saved[name]
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    history = (["hi , i lost my job", "that sounds hard", "i can not sleep"], ["usr", "sys", "usr"],
               ["", "Reflection of feelings", ""])
    kwargs = {"system_prompt": json.loads((folder / "config.json").read_text())["system_prompt"]} if name == "pal_causal" else {}
    want = pal.PALCollator(tok, padding_side="left" if name == "pal_causal" else "right")(
        [getattr(pal, builder)(*history, PERSONA, tokenizer=tok, **kwargs)])
    out = run_plain(f"""
        import json, torch
        from transformers import AutoProcessor
        proc = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        single = proc({history[0]!r}, {history[1]!r}, {history[2]!r}, persona={PERSONA!r})
        batch = proc([{history[0]!r}, ["hello"]], [{history[1]!r}, ["usr"]], persona=[{PERSONA!r}, []])
        print("RESULT " + json.dumps({{k: v.tolist() for k, v in single.items()}}))
        print("BATCH " + json.dumps({{k: list(v.shape) for k, v in batch.items()}}))
    """, cwd=tmp_path)
    got = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert set(got) == {"input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask"}
    for key, value in got.items():
        assert value == want[key].tolist(), key
    shapes = json.loads(out.split("BATCH ", 1)[1].splitlines()[0])
    assert shapes["input_ids"][0] == 2 and shapes["persona_input_ids"][0] == 2


def test_transmitter_processor_forward_and_generate_match(saved, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_persona.models.transmitter import build_context_ids, build_example, pad_batch, special_token_ids

    folder = saved["transmitter"]
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ex = build_example(tok, PERSONA, ["hi , do you have pets ?"], "yes a cat", model.config.max_context_tokens,
                       model.config.max_response_tokens)
    batch = pad_batch([ex], tok.pad_token_id)
    ctx = torch.tensor([build_context_ids(tok, PERSONA, ["hi , do you have pets ?"], model.config.max_context_tokens)])
    with torch.no_grad():
        nup = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    cls_index=batch["cls_index"]).nup_logits
        gen = model.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=4, do_sample=False,
                             eos_token_id=special_token_ids(tok)["eos"], pad_token_id=tok.pad_token_id)
    out = run_plain(f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoProcessor
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        proc = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        train = proc({PERSONA!r}, ["hi , do you have pets ?"], responses="yes a cat")
        gen_in = proc({PERSONA!r}, ["hi , do you have pets ?"])
        with torch.no_grad():
            nup = model(**train).nup_logits
            out = model.generate(**gen_in, max_new_tokens=4, do_sample=False, eos_token_id=proc.eos_token_id,
                                 pad_token_id=proc.pad_token_id)
        print("RESULT " + json.dumps({{"nup": nup.tolist(), "gen": out.tolist(), "ids": train["input_ids"].tolist(),
                                      "text": proc.decode_responses(out, gen_in)}}))
    """, cwd=tmp_path)
    got = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert got["ids"] == batch["input_ids"].tolist()
    torch.testing.assert_close(torch.tensor(got["nup"]), nup, rtol=1e-4, atol=1e-5)
    assert got["gen"] == gen.tolist()
    assert isinstance(got["text"][0], str)


def test_tokenizer_without_flag_prompts_and_with_flag_does_not(saved, tmp_path):
    """Why the README says trust_remote_code=True for AutoTokenizer too: AutoTokenizer reads config.json
    (whose auto_map names custom code) before the tokenizer files; the tokenizer itself has no auto_map."""
    folder = saved["cobert"]
    assert "auto_map" not in json.loads((folder / "tokenizer_config.json").read_text())
    code = f"""
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(folder)!r})
        print("RESULT", type(tok).__name__)
    """
    with pytest.raises(AssertionError, match="trust_remote_code prompt"):
        run_plain(code, cwd=tmp_path)
    run_plain(code.replace("from_pretrained(" + repr(str(folder)) + ")",
                           "from_pretrained(" + repr(str(folder)) + ", trust_remote_code=True)"), cwd=tmp_path)


@pytest.mark.parametrize("name", ["pal", "pal_causal"])
def test_pal_card_usage_runs_without_hf_persona(name, saved):
    """The pushed card's usage (rendered with the folder as repo id) runs with plain transformers."""
    folder = saved[name]
    card = hub.build_card(folder, "org/name")
    assert "importlib" not in card and "AutoProcessor" in card
    template = hub.find_card_template(json.loads((folder / "config.json").read_text())["model_type"])
    rendered = hub.render_card(template, repo_id=str(folder), base_model="x", metrics=None)
    code = re.findall(r"```python\n(.*?)```", rendered, re.DOTALL)[0].replace("max_new_tokens=50", "max_new_tokens=4")
    out = run_plain(code, cwd=folder.parent)
    assert out.strip().startswith("[(")
