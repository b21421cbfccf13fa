"""The README cannot rot: its ```python blocks run on tiny random models, its links resolve.

Every quickstart block loads the folder the matching ``hf-persona train`` command writes
(``runs/cobert``, ``runs/pal``, ...). The test builds a tiny random model of each kind under those
names in a temporary working folder, then executes each block there in a fresh namespace. The one
Hub id in the README (the GRPO example's policy) is rewritten to a tiny llama, and its training
sizes to one short step. The README, ``docs/`` and ``benchmarks/RESULTS.md`` are also checked
for length, machine paths and broken relative links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]

#: text in a block -> what the test runs instead (a Hub id and sizes that only fit a real run)
REWRITES = {
    '"HuggingFaceTB/SmolLM2-135M-Instruct"': "TINY_LLAMA",
    "max_steps=100": "max_steps=1",
    "max_completion_length=32": "max_completion_length=4",
    "SupportPipeline.from_shipped()": 'SupportPipeline.tiny("tiny_pipeline")',  # the real one: test_pretrained.py
}


def python_blocks(text: str) -> list[tuple[str, str]]:
    """``(label, code)`` of every ```python block; the label is the bold lead-in or heading before it."""
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        before = text[:m.start()]
        labels = re.findall(r"^\*\*(.+?)\*\*|^#+ (.+)$", before, flags=re.M)
        label = next((a or b for a, b in reversed(labels)), "top")
        out.append((re.sub(r"\W+", "-", label).strip("-").lower(), m.group(1)))
    return out


BLOCKS = python_blocks(README.read_text())


# ------------------------------------------------------------------------------------------
# the README as a document
# ------------------------------------------------------------------------------------------
def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail to docs/ or benchmarks/RESULTS.md"


def test_no_machine_paths():
    for page in PAGES:
        text = page.read_text()
        for path in ("/tmp/", "/work/"):
            assert path not in text, f"{page.relative_to(ROOT)} names a machine path {path!r}"


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    assert "make demo    # builds .venv (torch 2.13.0 CPU first), then talks with the shipped checkpoints (`hf-persona demo`)" in text
    assert "make test    # builds .venv the same way, then runs the whole test suite offline" in text
    assert re.search(r"^pip install ", text, flags=re.M), "no pip install line"
    assert "torch==2.13.0" in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or page.name != "README.md"
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.relative_to(ROOT)} links to a missing {link}"
        if anchor:
            assert path.is_file() and anchor in _anchors(path), f"{page.relative_to(ROOT)}: no anchor #{anchor} in {target or page.name}"


def test_no_file_links_into_old_readme_sections():
    """Sections moved to docs/: nothing may still point at README anchors."""
    for path in list(ROOT.glob("hf_persona/**/*")) + list(ROOT.glob("docs/*.md")) + [ROOT / "benchmarks" / "RESULTS.md"]:
        if path.is_file() and path.suffix in (".py", ".md"):
            assert "README.md#" not in path.read_text(), path


# ------------------------------------------------------------------------------------------
# the quickstart, run
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir, tiny_llama_dir, minilm_path):
    """A working folder holding ``runs/<name>`` for every folder the README loads."""
    from tests.hub.test_hub_roundtrip import BUILDERS, UNREGISTERED
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from hf_persona.training.ppg import load_generator

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("readme")
    out = work / "runs"
    out.mkdir()
    torch.manual_seed(0)
    for folder, name in [("cobert", "cobert"), ("pal", "pal"), ("pal-smollm2", "pal_causal"),
                         ("receiver", "receiver"), ("tx", "transmitter")]:
        BUILDERS[name][0](tiny_bert_dir, out / folder)
    UNREGISTERED["persona_extractor"][0](tiny_bert_dir, out / "extractor")
    for folder in ("ppg", "drg"):
        model, tok = load_generator(tiny_bert_dir)
        model.save_pretrained(out / folder)
        tok.save_pretrained(out / folder)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    critic = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, num_labels=2))
    critic.save_pretrained(out / "critic")
    tok.save_pretrained(out / "critic")
    yield {"dir": work, "tiny_llama": tiny_llama_dir}
    torch.set_num_threads(before)


def test_readme_has_a_quickstart_per_system():
    text = "\n".join(code for _, code in BLOCKS)
    for folder in ("runs/cobert", "runs/pal", "runs/pal-smollm2", "runs/receiver", "runs/tx", "runs/extractor",
                   "runs/ppg", "runs/drg", "runs/critic"):
        assert f'"{folder}"' in text, folder
    assert "strategy_contrast" in text and "GRPOTrainer" in text and "get_peft_model" in text
    for label, code in BLOCKS:
        assert len(code.splitlines()) <= 20, label


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{i}-{label}" for i, (label, _) in enumerate(BLOCKS)])
def test_readme_block_runs(index, runs, monkeypatch, capsys):
    code = BLOCKS[index][1]
    for old, new in REWRITES.items():
        code = code.replace(old, new)
    monkeypatch.chdir(runs["dir"])
    torch.manual_seed(0)
    namespace = {"__name__": f"readme_block_{index}", "TINY_LLAMA": runs["tiny_llama"]}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    if "register_rewards" in namespace:  # a plugin module: its hook registers working TRL rewards
        registered = {}
        namespace["register_rewards"](register=lambda name, factory: registered.setdefault(name, factory))
        assert registered
        for factory in registered.values():
            scores = factory()(prompts=["hi", "hi"], completions=["fine .", "word " * 40])
            assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
