"""Shipped encoder checkpoints: CoBERT and the P2Bot Receiver as LoRA adapters over MiniLM.

A folder written by :func:`save_encoder_adapter` holds only what differs from the base encoder:

* ``adapter_config.json`` + ``adapter_model.safetensors``: a PEFT LoRA adapter over the bare
  encoder (a ``BertModel``; keys ``base_model.model.encoder.layer.*``), so plain
  ``PeftModel.from_pretrained(AutoModel.from_pretrained(minilm), folder)`` loads it;
* ``config.json``: the CoBERT / Bi-encoder / Receiver configuration (input limits, τ, ...). Neither
  model has parameters of its own beyond the encoder (the co-attention matching and the Receiver's
  aggregation are parameter-free), so there are no head weights to store;
* the tokenizer only when it differs from the base's; ``manifest.json`` (see
  :mod:`hf_persona.pretrained`).

Sharing one base: :func:`load_cobert` and :func:`load_receiver` take ``base=`` (a backbone name or
folder, a loaded encoder, a ``PeftModel``, or a model returned by either loader). Given a loaded
model, the new adapter is added to the same ``PeftModel`` (``load_adapter``), so CoBERT and the
Receiver sit on one copy of MiniLM; each model's encoder is an :class:`AdapterEncoder` that switches
the shared ``PeftModel`` to its own adapter (``set_adapter``) before every forward pass. The switch
is not thread-safe: do not run the two models in parallel threads on one shared base.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import HFPersonaError

#: The Hub id of the packaged MiniLM, written into ``adapter_config.json`` so that
#: ``AutoPeftModel``-style loading works online too.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt")
_KINDS = {"cobert": ("cobert", "persona_biencoder"), "receiver": ("p2bot_receiver",)}


class AdapterEncoder(nn.Module):
    """The encoder of a loaded CoBERT / Receiver: a (possibly shared) ``PeftModel`` over the base
    encoder plus the name of this model's adapter, made active before each forward pass."""

    def __init__(self, peft_model, adapter_name: str):
        super().__init__()
        self.peft = peft_model
        self.adapter_name = adapter_name

    @property
    def config(self):
        return self.peft.get_base_model().config

    def activate(self) -> None:
        if self.peft.active_adapter != self.adapter_name:
            self.peft.set_adapter(self.adapter_name, inference_mode=True)

    def get_input_embeddings(self):
        return self.peft.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        self.activate()
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.peft(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


# ----------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------


def save_encoder_adapter(model, folder, name: str, base: str = "minilm", base_name_or_path: str = MINILM_HUB_ID,
                         adapter_name: str = "default", manifest: dict | None = None, tokenizer=None) -> Path:
    """Write a trained CoBERT / Receiver as a shippable adapter folder (see the module docstring).

    Args:
        model: the ``PeftModel`` a recipe returns with ``merge_adapter=False`` (LoRA over the whole
            CoBERT / Receiver, adapters inside its ``encoder`` only).
        name: ``"cobert"`` or ``"receiver"`` (the manifest's ``name``).
        base: the backbone name recorded in the manifest (``"minilm"``).
        base_name_or_path: written as the adapter's ``base_model_name_or_path``.
        manifest: extra manifest fields (``command``, ``benchmark``, ``figures``).
        tokenizer: saved into the folder only when given (i.e. when it differs from the base's).
    """
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if name not in _KINDS:
        raise HFPersonaError(f"name must be one of {sorted(_KINDS)}, got {name!r}")
    if not isinstance(model, PeftModel):
        raise HFPersonaError(f"save_encoder_adapter needs the PeftModel a recipe returns with merge_adapter=False, "
                             f"got {type(model).__name__}")
    inner = model.get_base_model()
    if inner.config.model_type not in _KINDS[name]:
        raise HFPersonaError(f"{name!r} expects a model of type {_KINDS[name]}, got {inner.config.model_type!r}")
    if getattr(inner, "persona_encoder", None) is not None:
        raise HFPersonaError("only Receivers with share_encoders=True (one encoder) ship as one adapter")
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    prefix, converted = "base_model.model.", {}
    for key, value in state.items():
        rest = key[len(prefix):] if key.startswith(prefix) else key
        if not rest.startswith("encoder."):
            raise HFPersonaError(f"adapter weight {key!r} lies outside the encoder; only encoder adapters ship")
        converted[prefix + rest[len("encoder."):]] = value.detach().to("cpu", torch.float32).contiguous()
    if not converted:
        raise HFPersonaError("the model holds no adapter weights")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.peft_config[adapter_name])
    config.base_model_name_or_path = base_name_or_path
    config.task_type = None
    config.inference_mode = True
    config.save_pretrained(str(folder))
    save_file(converted, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    inner.config.to_json_file(str(folder / "config.json"))  # no copied configuration_*.py in the package
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    info = {"name": name, "model": inner.config.model_type, "base": base, **(manifest or {})}
    (folder / "manifest.json").write_text(json.dumps(info, indent=1, sort_keys=False) + "\n")
    return folder


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _check_folder(folder, name: str) -> tuple[Path, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise HFPersonaError(f"{folder}: no such checkpoint folder")
    missing = [f for f in ("manifest.json", *ADAPTER_FILES, "config.json") if not (folder / f).is_file()]
    if missing:
        raise HFPersonaError(f"{folder}: not a shipped {name} adapter checkpoint; missing {', '.join(missing)} "
                             f"(expected manifest.json, {', '.join(ADAPTER_FILES)} and config.json)")
    try:
        info = json.loads((folder / "manifest.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise HFPersonaError(f"{folder}: unreadable manifest.json or config.json ({exc})") from exc
    if str(info.get("name", "")).replace("_", "-") != name:
        raise HFPersonaError(f"{folder}: the manifest names {info.get('name')!r}; this loader reads {name!r}")
    if config.get("model_type") not in _KINDS[name]:
        raise HFPersonaError(f"{folder}/config.json is a {config.get('model_type')!r} config; expected one of "
                             f"{_KINDS[name]}")
    return folder, info


def _shared_peft(base):
    """The ``PeftModel`` inside ``base`` when it is one or a model from these loaders, else None."""
    from peft import PeftModel

    if isinstance(base, PeftModel):
        return base
    encoder = getattr(base, "encoder", None)
    if isinstance(encoder, AdapterEncoder):
        return encoder.peft
    return None


def _attach(folder: Path, info: dict, base, name: str):
    """Put the adapter of ``folder`` on the base; returns ``(AdapterEncoder, tokenizer)``."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer, PreTrainedModel

    from ..backbones import resolve

    peft, encoder, source = _shared_peft(base), None, None
    if peft is None:
        if base is None or isinstance(base, (str, Path)):
            source = resolve(str(base) if base is not None else info.get("base") or "minilm")
            try:
                encoder = AutoModel.from_pretrained(source)
            except (OSError, ValueError) as exc:
                raise HFPersonaError(f"cannot load the base encoder {source!r} for {folder}: {exc}") from exc
        elif isinstance(base, PreTrainedModel):
            encoder, source = base, getattr(base, "name_or_path", None)
        else:
            raise HFPersonaError(f"base must be a backbone name or folder, a loaded encoder, a PeftModel or a model "
                                 f"from load_cobert/load_receiver; got {type(base).__name__}")
    base_config = (peft.get_base_model() if peft is not None else encoder).config
    wanted = json.loads((folder / "config.json").read_text()).get("encoder", {}).get("hidden_size")
    if wanted is not None and getattr(base_config, "hidden_size", None) != wanted:
        raise HFPersonaError(f"{folder} was trained over an encoder of hidden size {wanted}; the base has "
                             f"{getattr(base_config, 'hidden_size', None)} (expected {info.get('base')!r})")
    try:
        if peft is None:
            adapter = name
            peft = PeftModel.from_pretrained(encoder, str(folder), adapter_name=adapter)
        else:
            adapter, i = name, 1
            while adapter in peft.peft_config:
                i += 1
                adapter = f"{name}_{i}"
            peft.load_adapter(str(folder), adapter_name=adapter)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise HFPersonaError(f"cannot put the adapter of {folder} on the base encoder "
                             f"({type(exc).__name__}: {exc})") from exc
    if any((folder / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    else:
        tokenizer = getattr(peft, "_hf_persona_tokenizer", None)
        if tokenizer is None:
            source = source or getattr(peft.get_base_model(), "name_or_path", None)
            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
            except (OSError, ValueError, TypeError) as exc:
                raise HFPersonaError(f"cannot load the base tokenizer from {source!r} for {folder}: {exc}") from exc
    if getattr(peft, "_hf_persona_tokenizer", None) is None:
        peft._hf_persona_tokenizer = tokenizer
    peft.eval()
    return AdapterEncoder(peft, adapter), tokenizer


def load_cobert(folder, base=None, **kwargs):
    """CoBERT (or the Bi-encoder) from a shipped adapter folder, in eval mode, tokenizer attached.

    ``base``: None (the manifest's base, the packaged MiniLM), a backbone name or folder, a loaded
    encoder, a ``PeftModel``, or a model from :func:`load_receiver` / :func:`load_cobert` to share
    its encoder (one MiniLM in memory for both). ``kwargs``: config overrides (e.g.
    ``max_context_length``)."""
    from ..models.cobert import BiEncoderForResponseSelection, CoBERTForResponseSelection

    folder, info = _check_folder(folder, "cobert")
    encoder, tokenizer = _attach(folder, info, base, "cobert")
    classes = {"cobert": CoBERTForResponseSelection, "persona_biencoder": BiEncoderForResponseSelection}
    model_type = json.loads((folder / "config.json").read_text())["model_type"]
    cls = classes[model_type]
    config = cls.config_class.from_pretrained(str(folder), **kwargs)
    # Build around a placeholder and swap the encoder in afterwards: passing it to the constructor
    # would run post_init's weight initialisation over the (not yet flagged) LoRA layers.
    with torch.device("meta"):
        model = cls(config)
    model.encoder = encoder
    model.tokenizer = tokenizer
    return model.eval()


def load_receiver(folder, base=None, **kwargs):
    """The P2Bot Receiver from a shipped adapter folder, in eval mode, tokenizer attached.

    ``base``: as for :func:`load_cobert` (pass the loaded CoBERT to share its MiniLM).
    ``kwargs``: config overrides (e.g. ``tau``)."""
    from ..models.receiver import ReceiverConfig, ReceiverModel

    folder, info = _check_folder(folder, "receiver")
    config = ReceiverConfig.from_pretrained(str(folder), **kwargs)
    if not config.share_encoders:
        raise HFPersonaError(f"{folder}: a Receiver with two encoders cannot ship as one adapter")
    encoder, tokenizer = _attach(folder, info, base, "receiver")
    with torch.device("meta"):  # the placeholder encoder is replaced at once: allocate nothing
        model = ReceiverModel(config)
    model.encoder = encoder
    model.tokenizer = tokenizer
    return model.eval()


__all__ = ["AdapterEncoder", "MINILM_HUB_ID", "load_cobert", "load_receiver", "save_encoder_adapter"]
