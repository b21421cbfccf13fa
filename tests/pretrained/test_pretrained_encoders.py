"""Shipped CoBERT / Receiver adapters: save -> load round trips on tiny random BERTs, one shared
base for both, clear errors, and the real packaged folders over the packaged MiniLM."""

from __future__ import annotations

import json
import math

import pytest
import torch

peft = pytest.importorskip("peft")

from hf_persona.errors import HFPersonaError  # noqa: E402
from hf_persona.pretrained import HERE, from_pretrained  # noqa: E402
from hf_persona.pretrained.encoders import (AdapterEncoder, load_cobert, load_receiver,  # noqa: E402
                                            save_encoder_adapter)

WORDS = ("i have two dogs . do you like pets ? my favorite color is blue . hello how are you today "
         "work love read books cats cook pizza music play guitar").split()
CONTEXT = ["hello how are you today ?", "i love to read books ."]
PERSONA = ["i have two dogs .", "i play guitar ."]
CANDIDATES = ["i have two dogs .", "my favorite color is blue .", "do you like pizza ?"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def _lora():
    # init_lora_weights=False: B is random too, so the adapter changes the scores
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], init_lora_weights=False)


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    """An in-memory CoBERT and Receiver with (random) LoRA adapters, their scores, and their saved folders."""
    from hf_persona.models.receiver import ReceiverModel
    from hf_persona.training.cobert import build_model

    torch.manual_seed(1)
    cobert = peft.get_peft_model(build_model("cobert", tiny_base), _lora()).eval()
    receiver = peft.get_peft_model(ReceiverModel.from_encoder_pretrained(tiny_base), _lora()).eval()
    scores = {"cobert": cobert.rank(CONTEXT, PERSONA, CANDIDATES).clone(),
              "receiver": [receiver.score(CONTEXT, PERSONA), receiver.score(CONTEXT, CANDIDATES[1:])]}
    root = tmp_path_factory.mktemp("shipped")
    folders = {"cobert": save_encoder_adapter(cobert, root / "cobert", "cobert", base=tiny_base,
                                              manifest={"command": "test"}),
               "receiver": save_encoder_adapter(receiver, root / "receiver", "receiver", base=tiny_base)}
    return scores, folders


def _receiver_scores(model):
    return [model.score(CONTEXT, PERSONA), model.score(CONTEXT, CANDIDATES[1:])]


def test_folder_holds_only_the_adapter_and_config(trained):
    _, folders = trained
    for name, folder in folders.items():
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["adapter_config.json", "adapter_model.safetensors", "config.json", "manifest.json"], files
        assert json.loads((folder / "manifest.json").read_text())["name"] == name
        from safetensors import safe_open

        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
            keys = list(handle.keys())
        # over the bare encoder (BertModel), not over CoBERT/Receiver ("dense" also matches the pooler)
        assert keys and all(k.startswith(("base_model.model.encoder.layer.", "base_model.model.pooler."))
                            and ".lora_" in k for k in keys)


def test_round_trip_gives_the_in_memory_scores(trained, tiny_base):
    scores, folders = trained
    cobert = load_cobert(folders["cobert"], base=tiny_base)
    assert not cobert.training
    torch.testing.assert_close(cobert.rank(CONTEXT, PERSONA, CANDIDATES), scores["cobert"], atol=1e-5, rtol=1e-5)
    receiver = load_receiver(folders["receiver"], base=tiny_base)
    assert not receiver.training
    assert _receiver_scores(receiver) == pytest.approx(scores["receiver"], abs=1e-5)


def test_the_adapter_matters(trained, tiny_base):
    from hf_persona.training.cobert import build_model

    scores, _ = trained
    plain = build_model("cobert", tiny_base).eval()
    assert not torch.allclose(plain.rank(CONTEXT, PERSONA, CANDIDATES), scores["cobert"], atol=1e-4)


def test_two_adapters_share_one_base(trained, tiny_base):
    scores, folders = trained
    cobert = load_cobert(folders["cobert"], base=tiny_base)
    receiver = load_receiver(folders["receiver"], base=cobert)
    assert isinstance(receiver.encoder, AdapterEncoder) and receiver.encoder.peft is cobert.encoder.peft
    assert set(cobert.encoder.peft.peft_config) == {"cobert", "receiver"}
    for _ in range(2):  # interleaved calls switch the active adapter each time
        torch.testing.assert_close(cobert.rank(CONTEXT, PERSONA, CANDIDATES), scores["cobert"], atol=1e-5, rtol=1e-5)
        assert _receiver_scores(receiver) == pytest.approx(scores["receiver"], abs=1e-5)
    base_params = {id(p) for n, p in cobert.named_parameters() if "lora_" not in n}
    assert base_params == {id(p) for n, p in receiver.named_parameters() if "lora_" not in n}


def test_plain_transformers_and_peft_load_the_adapter(trained, tiny_base):
    from transformers import AutoModel

    from hf_persona.models.cobert import CoBERTConfig, CoBERTForResponseSelection

    scores, folders = trained
    encoder = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_base), str(folders["cobert"]))
    model = CoBERTForResponseSelection(CoBERTConfig.from_pretrained(str(folders["cobert"])),
                                       encoder=encoder.merge_and_unload()).eval()
    from transformers import AutoTokenizer

    model.tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    torch.testing.assert_close(model.rank(CONTEXT, PERSONA, CANDIDATES), scores["cobert"], atol=1e-5, rtol=1e-5)


def test_loader_errors_are_clear(tmp_path, trained, tiny_base):
    _, folders = trained
    with pytest.raises(HFPersonaError, match="missing manifest.json"):
        load_cobert(tmp_path, base=tiny_base)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "cobert", "base": "minilm"}))
    with pytest.raises(HFPersonaError, match="adapter_config.json"):
        load_cobert(tmp_path, base=tiny_base)
    with pytest.raises(HFPersonaError, match="unknown shipped checkpoint"):
        from_pretrained(str(tmp_path / "nothing_here_but_a_folder"))
    with pytest.raises(HFPersonaError, match="manifest names 'receiver'"):
        load_cobert(folders["receiver"], base=tiny_base)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HFPersonaError, match="no manifest.json"):
        from_pretrained(str(empty))
    with pytest.raises(HFPersonaError, match="hidden size 32"):
        from transformers import BertConfig, BertModel

        other = BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32))
        load_cobert(folders["cobert"], base=other)


def test_saving_needs_a_peft_model(tiny_base, tmp_path):
    from hf_persona.training.cobert import build_model

    with pytest.raises(HFPersonaError, match="PeftModel"):
        save_encoder_adapter(build_model("cobert", tiny_base), tmp_path / "x", "cobert")


@pytest.mark.skipif(not ((HERE / "cobert" / "manifest.json").is_file() and (HERE / "receiver" / "manifest.json").is_file()),
                    reason="the shipped cobert/receiver folders are not in this checkout")
def test_shipped_cobert_and_receiver_over_packaged_minilm():
    cobert = from_pretrained("cobert")
    receiver = from_pretrained("receiver", base=cobert)  # one MiniLM for both
    assert receiver.encoder.peft is cobert.encoder.peft
    context = ["hi ! what do you do for fun ?", "i like to go hiking on weekends . do you have any pets ?"]
    persona = ["i have two dogs .", "i work as a nurse ."]
    gold = "yes , i have two dogs . they love to go on walks with me ."
    others = ["my favorite food is sushi .", "i am going to paris next month .", "the weather is cold today .",
              "i just finished reading a book about history ."]
    scores = cobert.rank(context, persona, [gold, *others])
    assert int(torch.argmax(scores)) == 0
    value = receiver.score(["i walk my dogs every morning before my shift at the hospital ."], persona)
    assert math.isfinite(value)
