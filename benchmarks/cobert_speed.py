"""Ranking latency and peak memory of CoBERT relative to the Bi-encoder, with cached candidates.

Both models use the same backbone (packaged all-MiniLM-L6-v2 unless ``--cobert-model`` /
``--biencoder-model`` name trained folders) and the same inputs: ``--queries`` PERSONA-CHAT
development queries (context + persona; the shared data when present, else the embedded sample)
and ``--candidates`` responses, encoded once with ``encode_candidates``. One repetition ranks every
query with ``model.rank(context, persona, cache)``, one query at a time (tokenization, the encoder
pass over context and persona, and the matching against all cached candidates). The two models
alternate within each repetition; the reported latency is the median over repetitions of the mean
per-query time. Peak memory: a separate process per model loads the model, resets the kernel's
resident-set high-water mark, builds the cache and ranks all queries once; ``memory_ratio`` is the
ratio of those peaks (weights + cache + working memory, as a whole process), and
``memory_ratio_above_model`` the ratio of the peaks minus the resident size after loading.

    python benchmarks/cobert_speed.py --reps 7

Writes ``benchmarks/results/cobert_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _inputs(num_queries, num_candidates):
    from hf_persona.data import read_personachat, sample_path, shared_data_dir, split_by_dialogue
    from hf_persona.training.cobert import candidate_sets, ranking_examples

    root = shared_data_dir()
    path = root / "personachat" / "valid_both_original_no_cands.txt" if root else None
    if path is not None and path.is_file():
        source = "personachat valid_both_original, dev dialogues 800-999"
        examples = ranking_examples(split_by_dialogue(read_personachat(path), first=800)[1])
    else:
        source = "embedded PERSONA-CHAT sample"
        examples = ranking_examples(read_personachat(sample_path("personachat")))
    pool, indices = candidate_sets(examples, num_candidates, seed=0, queries=[0])
    candidates = [pool[i] for i in indices[0]]
    queries = [(e["context"], e["persona"]) for e in examples[:num_queries]]
    return source, queries, candidates


def _load(kind, path):
    from hf_persona.training.cobert import build_model, load_selector

    model = load_selector(path) if path else build_model(kind, "minilm")
    return model.eval()


def _rank_all(model, queries, cache):
    start = time.perf_counter()
    for context, persona in queries:
        model.rank(context, persona, cache)
    return (time.perf_counter() - start) / len(queries)


def _rss_mb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(kind, path, inputs_file, threads):
    """Peak RSS while building the cache and ranking, measured after the model is loaded.

    The high-water mark is reset (``/proc/self/clear_refs`` <- 5) after loading, so the peak covers
    the model weights, the cache and the ranking working memory, not the import/loading transients.
    """
    import ctypes
    import gc

    import torch

    torch.set_num_threads(threads)
    data = json.loads(Path(inputs_file).read_text())
    queries, candidates = data["queries"], data["candidates"]
    model = _load(kind, path)
    with torch.no_grad():  # warm-up, so lazily allocated buffers are not counted for one model only
        model.rank(queries[0][0], queries[0][1], candidates[:2])
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    baseline = _rss_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    cache = model.encode_candidates(candidates)
    _rank_all(model, queries, cache)
    peak = _rss_mb("VmHWM")
    print(json.dumps({"peak_rss_mb": peak, "rss_after_load_mb": baseline, "cache_mb": cache.nbytes() / 2**20}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cobert-model", default=None)
    parser.add_argument("--biencoder-model", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cobert_speed.json"))
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 5:
        parser.error("--reps must be >= 5 (the latency is a median over repetitions)")

    if args.memory_child:
        kind, inputs_file = args.memory_child.split(":", 1)
        path = args.cobert_model if kind == "cobert" else args.biencoder_model
        _memory_child(kind, path, inputs_file, args.threads)
        return

    import torch

    torch.set_num_threads(args.threads)
    from hf_persona.utils import atomic_write_json

    source, queries, candidates = _inputs(args.queries, args.candidates)
    models = {"cobert": _load("cobert", args.cobert_model), "biencoder": _load("biencoder", args.biencoder_model)}
    caches, cache_seconds = {}, {}
    for kind, model in models.items():
        t0 = time.perf_counter()
        caches[kind] = model.encode_candidates(candidates)
        cache_seconds[kind] = time.perf_counter() - t0
        _rank_all(model, queries[:3], caches[kind])  # warm-up
    times = {kind: [] for kind in models}
    for rep in range(args.reps):
        order = list(models) if rep % 2 == 0 else list(reversed(list(models)))
        for kind in order:
            times[kind].append(_rank_all(models[kind], queries, caches[kind]))

    # where CoBERT's time goes: the shared query encoding vs the co-attention matching
    cob = models["cobert"]
    with torch.no_grad():
        t_enc, t_match = [], []
        for _ in range(3):
            for context, persona in queries:
                t0 = time.perf_counter()
                q = cob.encode_query_texts([context], [persona])
                t1 = time.perf_counter()
                cob.score_query_states(q, cob._cache_states(caches["cobert"]))
                t_match.append(time.perf_counter() - t1)
                t_enc.append(t1 - t0)

    memory = {}
    import tempfile

    inputs_file = Path(tempfile.mkdtemp(prefix="cobert_speed_")) / "inputs.json"
    inputs_file.write_text(json.dumps({"queries": queries, "candidates": candidates}))
    for kind in models:
        cmd = [sys.executable, __file__, "--memory-child", f"{kind}:{inputs_file}", "--threads", str(args.threads)]
        if args.cobert_model:
            cmd += ["--cobert-model", args.cobert_model]
        if args.biencoder_model:
            cmd += ["--biencoder-model", args.biencoder_model]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        memory[kind] = json.loads(proc.stdout.strip().splitlines()[-1])

    med = {kind: statistics.median(v) for kind, v in times.items()}
    result = {
        "inputs": source, "queries": len(queries), "candidates": len(candidates), "repetitions": args.reps,
        "threads": args.threads, "device": "cpu", "backbone": "all-MiniLM-L6-v2 (packaged)",
        "cobert.ms_per_query": 1000 * med["cobert"], "biencoder.ms_per_query": 1000 * med["biencoder"],
        "latency_ratio": med["cobert"] / med["biencoder"],
        "cobert.ms_per_query_all_reps": [round(1000 * t, 2) for t in times["cobert"]],
        "biencoder.ms_per_query_all_reps": [round(1000 * t, 2) for t in times["biencoder"]],
        "cobert.query_encoding_ms": 1000 * statistics.median(t_enc),
        "cobert.matching_ms": 1000 * statistics.median(t_match),
        "cobert.cache_build_s": cache_seconds["cobert"], "biencoder.cache_build_s": cache_seconds["biencoder"],
        "cobert.cache_mb": memory["cobert"]["cache_mb"], "biencoder.cache_mb": memory["biencoder"]["cache_mb"],
        "cobert.peak_rss_mb": memory["cobert"]["peak_rss_mb"], "biencoder.peak_rss_mb": memory["biencoder"]["peak_rss_mb"],
        "memory_ratio": memory["cobert"]["peak_rss_mb"] / memory["biencoder"]["peak_rss_mb"],
        "memory_ratio_above_model": (
            (memory["cobert"]["peak_rss_mb"] - memory["cobert"]["rss_after_load_mb"])
            / max(1e-9, memory["biencoder"]["peak_rss_mb"] - memory["biencoder"]["rss_after_load_mb"])
        ),
        "paper_table7": {"latency_ratio": 2.0, "memory_ratio": 1.14},
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
