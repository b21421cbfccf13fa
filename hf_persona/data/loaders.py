"""Dataset loaders behind ``get_dataset``: the research formats, the embedded samples and PESConv.

Registered by the built-in plugin :mod:`hf_persona.default_plugins.datasets`.

``get_dataset(name, path=None, split=None, **options)`` (:func:`hf_persona.plugins.get_dataset`):

* ``path`` a file: that file (``split`` must be None).
* ``path`` a folder: the ``split`` file of the dataset's layout below, inside ``path/<name>/`` or ``path``.
* no ``path`` and ``$HF_PERSONA_DATA`` set: the ``split`` file under ``$HF_PERSONA_DATA/<name>/``.
* no ``path`` and no ``$HF_PERSONA_DATA``: the embedded sample (``split`` must be None); PESConv has none.

``split`` defaults to ``"valid"`` when a data folder is read. Layouts (those of ``../shared/data``):
``personachat/<split>_both_<variant>_no_cands.txt`` (``variant="original"`` or ``"revised"``),
``esconv/<split>.json``, ``msc/session_<session>_<split>.txt`` (``session=2``) and
``pesconv/<split>/`` (the output folder of ``hf-persona annotate-persona``). Other options go to the
reader (``skip_malformed``, ``report``, ESConv's ``merge_consecutive``). Columns: ``docs/data.md``.
"""

import os
from pathlib import Path

DATA_ENV = "HF_PERSONA_DATA"
DEFAULT_SPLIT = "valid"


def _error(message):
    from hf_persona.errors import HFPersonaError

    return HFPersonaError(message)


def sample_file(name: str) -> Path:
    """The embedded sample of ``name`` (a file in ``hf_persona/data/sample/``)."""
    from hf_persona import data

    return data.sample_path(name)


def _split_name(name: str, split: str, options: dict) -> str:
    if name == "personachat":
        variant = options.pop("variant", "original")
        if variant not in ("original", "revised"):
            raise _error(f"personachat variant must be 'original' or 'revised', got {variant!r}")
        return f"{split}_both_{variant}_no_cands.txt"
    if name == "esconv":
        return f"{split}.json"
    if name == "msc":
        session = options.pop("session", 2)
        if isinstance(session, bool) or not isinstance(session, int) or session < 1:
            raise _error(f"msc session must be a positive integer, got {session!r}")
        return f"session_{session}_{split}.txt"
    return split  # pesconv: a folder per split


def resolve(name: str, path=None, split=None, options=None) -> Path:
    """The file (or PESConv folder) ``get_dataset(name, path, split)`` reads; see the module docstring.
    ``options`` loses the layout options it uses (``variant``, ``session``)."""
    options = {} if options is None else options
    if split is not None and (not isinstance(split, str) or not split.strip() or "/" in split or "\\" in split):
        raise _error(f"split must be a name such as 'train' or 'valid', got {split!r}")
    if path is None:
        env = os.environ.get(DATA_ENV)
        if not env:
            if split is not None:
                raise _error(f"split={split!r} of {name} needs real data: set {DATA_ENV} to the data folder or pass "
                             "path= (without either, the embedded sample is loaded and has no splits)")
            if name == "pesconv":
                raise _error(f"pesconv has no embedded sample: pass path= (the output folder of `hf-persona "
                             f"annotate-persona`) or set {DATA_ENV} to a folder holding pesconv/{DEFAULT_SPLIT}/")
            for key in ("variant", "session"):
                options.pop(key, None)
            return sample_file(name)
        root = Path(env).expanduser()
        if not root.is_dir():
            raise _error(f"{DATA_ENV}={env} is not a folder")
        roots, where = [root / name], f"{DATA_ENV}={env}"
    else:
        given = Path(path).expanduser()
        if given.is_file() or (name == "pesconv" and (given / "pesconv.jsonl").is_file() and split is None):
            if split is not None:
                raise _error(f"split={split!r} picks a file inside a data folder, but path {given} is a file")
            return given
        if not given.exists():
            raise _error(f"{name} data not found: {given} does not exist")
        roots, where = [given / name, given], str(given)
    target = _split_name(name, split or DEFAULT_SPLIT, options)
    for candidate in roots:
        if (candidate / target).exists():
            return candidate / target
    raise _error(f"{name} split {split or DEFAULT_SPLIT!r} not found in {where} (looked for "
                 f"{' and '.join(str(r / target) for r in roots)})")


def loader(fmt: str):
    """The ``get_dataset`` loader of the format ``fmt`` (``personachat``, ``esconv``, ``msc``)."""

    def load(path=None, split=None, **options):
        from hf_persona import data

        return data.read_dialogues(resolve(fmt, path, split, options), format=fmt, **options)[1]

    load.__doc__ = (f"Load {fmt} dialogues: ``path`` (a file or a data folder), else ``${DATA_ENV}``'s "
                    f"{fmt}/ ``split``, else the embedded sample.")
    return load


def load_pesconv(path=None, split=None, **options):
    """PESConv (ESConv with the seeker persona per turn): an ``hf-persona annotate-persona`` output folder
    (``path``), or ``$HF_PERSONA_DATA/pesconv/<split>/``."""
    from hf_persona.data.pesconv import load_pesconv as load

    if options:
        raise _error(f"pesconv takes no options besides path and split, got {', '.join(sorted(options))}")
    return load(resolve("pesconv", path, split))

