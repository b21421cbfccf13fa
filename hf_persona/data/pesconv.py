"""PESConv: ESConv annotated with the seeker persona inferred by a persona extractor.

For every turn ``i`` of an ESConv dialogue, ``personas[i]`` holds the seeker persona sentences
inferred from the seeker utterances among ``utterances[:i]`` (what a supporter answering at turn
``i`` may know). Following PAL (section 3.2), nothing is inferred before the seeker's third
utterance (``min_seeker_utterances``); after each later seeker utterance the extractor runs on all
seeker utterances so far, and sentences not seen before (case- and punctuation-insensitive) are
appended to the persona, so it only grows. Sentences under 2 or over 25 words are dropped.

The annotation is batched and resumable. Dialogues are processed in shards of
``dialogues_per_shard``; each shard is written atomically (``shards/shard-00000.jsonl``) before
``progress.json`` records it, so a run killed at any moment continues from the first unrecorded
shard and never duplicates rows (a shard written but not yet recorded is simply recomputed and
replaced). When every dialogue is done, the rows are written as ``pesconv.jsonl`` and as a
``datasets`` dataset (``dataset/``, ``save_to_disk``) and ``progress.json`` says ``complete``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import HFPersonaError
from ..training.common import atomic_save_to_disk
from ..training.persona_extractor import MAX_WORDS, MIN_WORDS, persona_key, persona_support, split_persona
from ..utils import atomic_write_json, atomic_write_text, get_logger

logger = get_logger(__name__)

PROGRESS_NAME = "progress.json"
JSONL_NAME = "pesconv.jsonl"
DATASET_DIR = "dataset"
SHARD_DIR = "shards"
PESCONV_COLUMNS = ("dialogue_id", "emotion_type", "problem_type", "situation", "utterances", "speakers",
                   "strategies", "personas")


def _extract_fn(extractor, batch_size: int, num_beams: int | None):
    """Normalise ``extractor`` (folder, PersonaExtractor-like object or callable) to f(list[list[str]])."""
    if isinstance(extractor, (str, os.PathLike)):
        from ..training.persona_extractor import PersonaExtractor

        kwargs = {"num_beams": num_beams} if num_beams else {}
        extractor = PersonaExtractor.from_pretrained(extractor, **kwargs)
    if hasattr(extractor, "extract"):
        return lambda batch: extractor.extract(batch, batch_size=batch_size)
    if callable(extractor):
        return extractor
    raise TypeError(
        f"extractor must be a persona extractor folder, an object with .extract(list_of_utterance_lists) or a "
        f"callable, got {type(extractor).__name__}"
    )


def _extractor_fingerprint(extractor) -> str:
    if isinstance(extractor, (str, os.PathLike)):
        p = Path(extractor).resolve()
        weights = sorted(p.glob("*.safetensors"))
        stamp = [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights]
        return f"{p}:{stamp}"
    return getattr(extractor, "fingerprint", type(extractor).__name__)


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def seeker_queries(speakers: Sequence[str], utterances: Sequence[str], min_seeker_utterances: int = 3):
    """The extractor inputs of one dialogue: ``[(k, seeker utterances 1..k)]`` for k >= ``min_seeker_utterances``."""
    said, queries = [], []
    for utt, spk in zip(utterances, speakers):
        if spk == "usr":
            said.append(utt)
            if len(said) >= min_seeker_utterances:
                queries.append((len(said), list(said)))
    return queries


def personas_per_turn(speakers: Sequence[str], inferred: dict[int, list[str]], min_words: int = MIN_WORDS,
                      max_words: int = MAX_WORDS) -> list[list[str]]:
    """Accumulate inferences into the persona known before each turn.

    ``inferred[k]`` are the sentences inferred after the k-th seeker utterance. The result's
    element ``i`` is the deduplicated, length-filtered union of ``inferred[1..k]`` where ``k`` is
    the number of seeker utterances before turn ``i``, in order of first appearance.
    """
    persona, seen, out, k = [], set(), [], 0
    for spk in speakers:
        out.append(list(persona))
        if spk == "usr":
            k += 1
            for raw in inferred.get(k, []):
                for sentence in split_persona(raw, min_words, max_words):
                    key = persona_key(sentence)
                    if key not in seen:
                        seen.add(key)
                        persona.append(sentence)
    return out


def annotate_dialogues(rows: Sequence[dict], extract: Callable, min_seeker_utterances: int = 3,
                       min_words: int = MIN_WORDS, max_words: int = MAX_WORDS, min_support: float = 0.0) -> list[dict]:
    """Annotate ESConv rows (reader columns) with ``personas``; ``extract`` is called once per batch.

    ``min_support > 0`` drops each inferred sentence whose ``persona_support`` in the seeker
    utterances it was inferred from is below it (an invented persona line shares no words with them).
    """
    jobs = []  # (row index, k, utterances)
    for r, row in enumerate(rows):
        for k, utts in seeker_queries(row["speakers"], row["utterances"], min_seeker_utterances):
            jobs.append((r, k, utts))
    # longest first: batches of similar length pad less; the order is fixed by the rows alone, so an
    # interrupted-and-resumed run builds exactly the same batches as an uninterrupted one
    order = sorted(range(len(jobs)), key=lambda j: -sum(len(u) for u in jobs[j][2]))
    results = extract([jobs[j][2] for j in order]) if jobs else []
    if len(results) != len(jobs):
        raise HFPersonaError(f"the extractor returned {len(results)} results for {len(jobs)} inputs")
    inferred: list[dict[int, list[str]]] = [dict() for _ in rows]
    for j, sentences in zip(order, results):
        r, k, utts = jobs[j]
        if isinstance(sentences, str):
            sentences = [sentences]
        if min_support > 0:
            sentences = [s for raw in sentences for s in split_persona(raw, min_words, max_words)
                         if persona_support(s, utts) >= min_support]
        inferred[r][k] = list(sentences)
    out = []
    for row, inf in zip(rows, inferred):
        new = {c: row[c] for c in PESCONV_COLUMNS if c != "personas"}
        new["personas"] = personas_per_turn(row["speakers"], inf, min_words, max_words)
        out.append(new)
    return out


def _read_rows(data, merge_consecutive: bool, max_dialogues: int | None) -> list[dict]:
    from .readers import read_esconv

    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if not p.is_file():
            raise HFPersonaError(f"{p}: ESConv file not found (expected JSON lines with 'dialog' turns)")
        ds = read_esconv(p, merge_consecutive=merge_consecutive)
    else:
        ds = data
        missing = [c for c in ("utterances", "speakers", "strategies") if c not in ds.column_names]
        if missing:
            raise HFPersonaError(f"ESConv dataset lacks columns {missing}; expected the read_esconv columns")
    rows = [dict(r) for r in ds]
    for r in rows:
        for c in ("dialogue_id", "emotion_type", "problem_type", "situation"):
            r.setdefault(c, None)
    if max_dialogues is not None:
        rows = rows[:max_dialogues]
    return rows


def annotate(extractor, data, out_dir, *, batch_size: int = 32, dialogues_per_shard: int = 16,
             min_seeker_utterances: int = 3, merge_consecutive: bool = False, max_dialogues: int | None = None,
             num_beams: int | None = None, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS,
             min_support: float = 0.0, overwrite: bool = False, on_shard: Callable[[int, int], None] | None = None,
             progress: bool = True) -> dict:
    """Write PESConv for ``data`` (ESConv file or dataset) into ``out_dir``; resume an interrupted run.

    ``extractor``: a folder saved by ``train persona-extractor``, a :class:`PersonaExtractor` or a
    callable ``f(list_of_utterance_lists) -> list_of_sentence_lists``. ``min_support`` (0 to 1, 0 =
    keep all, the paper) drops inferred sentences not grounded in what the seeker said (see
    :func:`annotate_dialogues`). ``on_shard(shard_index,
    dialogues_done)`` is called after each shard is recorded (used by tests to interrupt a run).
    Returns a summary dict (paths, dialogue and supporter-turn counts, coverage).
    """
    if min_seeker_utterances < 1:
        raise ValueError(f"min_seeker_utterances must be >= 1, got {min_seeker_utterances}")
    if not 0.0 <= min_support <= 1.0:
        raise ValueError(f"min_support must be between 0 and 1 (a share of content words), got {min_support}")
    if batch_size < 1 or dialogues_per_shard < 1:
        raise ValueError(f"batch_size and dialogues_per_shard must be >= 1, got {batch_size}, {dialogues_per_shard}")
    out = Path(out_dir)
    rows = _read_rows(data, merge_consecutive, max_dialogues)
    if not rows:
        raise HFPersonaError(f"{data}: no dialogues to annotate")
    fingerprint = {
        "data": str(Path(data).resolve()) if isinstance(data, (str, os.PathLike)) else f"dataset:{len(rows)}",
        "data_sha256": _file_digest(data) if isinstance(data, (str, os.PathLike)) else None,
        "extractor": _extractor_fingerprint(extractor),
        "min_seeker_utterances": min_seeker_utterances,
        "merge_consecutive": merge_consecutive,
        "max_dialogues": max_dialogues,
        "dialogues_per_shard": dialogues_per_shard,
        "min_words": min_words,
        "max_words": max_words,
        "num_beams": num_beams,
    }
    if min_support:  # only when used, so folders annotated before this option existed still resume
        fingerprint["min_support"] = min_support
    progress_path = out / PROGRESS_NAME
    state = None
    if progress_path.is_file():
        state = json.loads(progress_path.read_text(encoding="utf-8"))
        if overwrite:
            for name in (SHARD_DIR, DATASET_DIR):
                shutil.rmtree(out / name, ignore_errors=True)
            state = None
        elif state.get("fingerprint") != fingerprint:
            changed = sorted(k for k in fingerprint if state.get("fingerprint", {}).get(k) != fingerprint[k])
            raise HFPersonaError(
                f"{out} holds an annotation run with different settings ({', '.join(changed)}); "
                "use another --out or pass --overwrite"
            )
    if state is None:
        state = {"fingerprint": fingerprint, "done": 0, "shards": [], "complete": False, "total": len(rows)}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(progress_path, state)
    if state.get("complete"):
        logger.info("%s: annotation already complete (%d dialogues)", out, state["done"])
        return _summary(out, state)

    extract = _extract_fn(extractor, batch_size, num_beams)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    n_shards = (len(rows) + dialogues_per_shard - 1) // dialogues_per_shard
    first = state["done"] // dialogues_per_shard
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), initial=state["done"], desc="annotate-persona", unit="dlg")
    t0 = time.monotonic()
    for shard in range(first, n_shards):
        lo, hi = shard * dialogues_per_shard, min((shard + 1) * dialogues_per_shard, len(rows))
        annotated = annotate_dialogues(rows[lo:hi], extract, min_seeker_utterances, min_words, max_words, min_support)
        name = f"{SHARD_DIR}/shard-{shard:05d}.jsonl"
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in annotated))
        state["shards"] = [s for s in state["shards"] if s != name] + [name]
        state["done"] = hi
        atomic_write_json(progress_path, state)
        if bar is not None:
            bar.update(hi - lo)
        if on_shard is not None:
            on_shard(shard, hi)
    if bar is not None:
        bar.close()
    _finalise(out, state)
    state["complete"] = True
    state["seconds_last_run"] = round(time.monotonic() - t0, 1)
    atomic_write_json(progress_path, state)
    return _summary(out, state)


def _finalise(out: Path, state: dict) -> None:
    from datasets import Dataset

    rows = []
    for name in state["shards"]:
        with open(out / name, encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    if len(rows) != state["done"]:
        raise HFPersonaError(f"{out}: shards hold {len(rows)} dialogues, progress says {state['done']}")
    atomic_write_text(out / JSONL_NAME, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_save_to_disk(Dataset.from_list(rows), out / DATASET_DIR)


def _summary(out: Path, state: dict) -> dict:
    rows = load_pesconv_rows(out)
    sys_turns = with_persona = 0
    for r in rows:
        for spk, persona in zip(r["speakers"], r["personas"]):
            if spk == "sys":
                sys_turns += 1
                with_persona += bool(persona)
    return {
        "out_dir": str(out),
        "jsonl": str(out / JSONL_NAME),
        "dataset": str(out / DATASET_DIR),
        "dialogues": len(rows),
        "supporter_turns": sys_turns,
        "supporter_turns_with_persona": with_persona,
        "mean_persona_sentences_at_last_turn": (
            sum(len(r["personas"][-1]) for r in rows) / len(rows) if rows else 0.0
        ),
    }


def load_pesconv_rows(path) -> list[dict]:
    """Rows of a finished annotation (folder with ``pesconv.jsonl``, or the JSONL file itself)."""
    p = Path(path)
    f = p / JSONL_NAME if p.is_dir() else p
    if not f.is_file():
        raise HFPersonaError(
            f"{p}: no {JSONL_NAME} found (expected the output folder of `hf-persona annotate-persona`, "
            "run to completion)"
        )
    rows = []
    with open(f, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [c for c in ("utterances", "speakers", "strategies", "personas") if c not in row]
            if missing:
                raise HFPersonaError(f"{f}:{number}: expected PESConv columns, missing {missing}")
            rows.append(row)
    return rows


def load_pesconv(path):
    """A finished annotation as a ``datasets.Dataset`` (from ``dataset/`` when present, else the JSONL)."""
    from datasets import Dataset, load_from_disk

    p = Path(path)
    if p.is_dir() and (p / DATASET_DIR).is_dir():
        return load_from_disk(str(p / DATASET_DIR))
    return Dataset.from_list(load_pesconv_rows(p))
