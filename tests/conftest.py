import atexit
import os
import shutil
import tempfile

# Before anything imports hf_persona or huggingface_hub: offline, private cache, no entry points.
os.environ["HF_HUB_OFFLINE"] = "1"
if "HF_HOME" not in os.environ:  # a private cache, removed when the test session ends
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_persona_test_home_")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
os.environ["HF_PERSONA_LOAD_PLUGINS"] = ""
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_data():
    """The real datasets folder; tests that need it skip with a reason when it is absent."""
    from hf_persona.data import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set HF_PERSONA_DATA or place it at ../shared/data")
    return path


@pytest.fixture(scope="session")
def minilm_path():
    from hf_persona.backbones import resolve

    return resolve("minilm")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path):
    """A saved tiny random BERT (hidden 32, 2 layers) with the real MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


from hf_persona.tiny import CHATML  # noqa: E402  (tests build chat tokenizers with the package's template)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, minilm_path):
    """A tiny random llama (hidden 32) with the MiniLM vocabulary plus ChatML tokens and template:
    the shape of SmolLM2-Instruct in a second of CPU (:func:`hf_persona.tiny.tiny_llama`)."""
    from hf_persona.tiny import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (they load real pretrained generator weights)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads real pretrained weights (run with --run-slow)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: loads real pretrained weights; run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
