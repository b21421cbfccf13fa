"""Loaders of the shipped checkpoints over SmolLM2: PAL and the persona extractor (LoRA adapters).

One copy of the LM serves both: :func:`load_pal_with_extractor` loads the two adapters on it and
gives a :class:`~hf_persona.training.persona_extractor.PersonaExtractor` that switches the shared
LM to the extractor's adapter for the length of each call.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HFPersonaError

#: Adapter names on the shared LM.
PAL_ADAPTER = "pal"
EXTRACTOR_ADAPTER = "persona-extractor"


def _base(folder: Path, base) -> str:
    if base is not None:
        return base
    manifest = folder / "manifest.json"
    return json.loads(manifest.read_text()).get("base") if manifest.is_file() else None  # None: pal_training.json


def load_pal(folder, base=None, **_):
    """``(model, tokenizer)``: PAL over its causal LM (``base``: the LM's name or folder; default the
    manifest's ``base``, else the backbone in ``pal_training.json``)."""
    from ..training.pal import load_pal_adapter

    folder = Path(folder)
    model, tokenizer, _ = load_pal_adapter(folder, backbone=_base(folder, base), adapter_name=PAL_ADAPTER)
    return model, tokenizer


def load_pal_with_extractor(pal_folder, extractor_folder, base=None, num_beams: int = 1, max_new_tokens: int = 48):
    """``(model, tokenizer, extractor)``: PAL and the persona extractor on ONE copy of their LM
    (two PEFT adapters; the extractor switches to its own for the length of each call)."""
    from transformers import AutoTokenizer

    from ..training.pal import load_pal_adapter
    from ..training.persona_extractor import EXTRACTOR_CONFIG_NAME, ExtractorFormat, PersonaExtractor

    pal_folder, extractor_folder = Path(pal_folder), Path(extractor_folder)
    config = extractor_folder / EXTRACTOR_CONFIG_NAME
    if not config.is_file() or not (extractor_folder / "adapter_config.json").is_file():
        raise HFPersonaError(f"{extractor_folder}: not a persona-extractor LoRA adapter folder (expected "
                             f"{EXTRACTOR_CONFIG_NAME} and adapter_config.json, written by "
                             "`train persona-extractor --lora`)")
    fmt = ExtractorFormat(**json.loads(config.read_text(encoding="utf-8")))
    model, tokenizer, peft_backbone = load_pal_adapter(
        pal_folder, backbone=_base(pal_folder, base), adapter_name=PAL_ADAPTER,
        extra_adapters={EXTRACTOR_ADAPTER: extractor_folder})
    extractor_tokenizer = AutoTokenizer.from_pretrained(str(extractor_folder))
    view = _AdapterView(peft_backbone, EXTRACTOR_ADAPTER, len(extractor_tokenizer))
    extractor = PersonaExtractor(view, extractor_tokenizer, fmt, num_beams=num_beams, max_new_tokens=max_new_tokens)
    return model, tokenizer, extractor


class _AdapterView:
    """The shared LM as the persona extractor sees it: ``generate`` runs with the extractor's
    adapter active (PAL's back afterwards) and never emits a token the extractor's tokenizer
    lacks (PAL's special tokens sit at the end of the shared vocabulary)."""

    def __init__(self, peft_model, adapter: str, vocab_size: int):
        self.peft_model, self.adapter, self.vocab_size = peft_model, adapter, vocab_size

    def eval(self):
        self.peft_model.eval()
        return self

    @property
    def device(self):
        return self.peft_model.device

    def generate(self, **kwargs):
        rows = self.peft_model.get_base_model().get_output_embeddings().weight.shape[0]
        if rows > self.vocab_size:
            kwargs.setdefault("suppress_tokens", list(range(self.vocab_size, rows)))
        previous = self.peft_model.active_adapter
        self.peft_model.set_adapter(self.adapter)
        try:
            return self.peft_model.get_base_model().generate(**kwargs)
        finally:
            self.peft_model.set_adapter(previous)


def load_persona_extractor(folder, base=None, num_beams: int = 1, max_new_tokens: int = 48, **_):
    """The persona extractor on its own LM (merged for speed); :func:`load_pal_with_extractor`
    shares PAL's."""
    from ..training.persona_extractor import PersonaExtractor

    if base is not None:
        raise HFPersonaError("load_persona_extractor loads its own LM; to share PAL's, use "
                             "load_pal_with_extractor(pal_folder, extractor_folder)")
    return PersonaExtractor.from_pretrained(folder, num_beams=num_beams, max_new_tokens=max_new_tokens)
