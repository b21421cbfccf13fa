"""Speed of strategy contrastive decoding against plain ``generate`` (issue: ratio <= 1.4).

One process, one PAL model (MiniLM warm start by default, or ``--model DIR``), the same inputs
for every mode, exactly ``--new-tokens`` new tokens per sequence (eos suppressed with
``min_new_tokens``), plain and contrastive runs interleaved, median of ``--repeats`` runs each.
Every row decodes with alpha = 0.75 from the second step on (``alpha=0.75`` and
``unknown_strategy_alpha=0.75``), the worst case. For reference it also times the authors'
approach (a second, uncached full decoder pass per step) for greedy decoding.

    python benchmarks/decoding_speed.py --out benchmarks/results/decoding_speed.json
    python benchmarks/decoding_speed.py --backbone smollm2 --out benchmarks/results/decoding_speed_causal.json

Writes flat keys ``ratio.batch1.greedy``, ``ratio.batch8.greedy``, ``ratio.batch8.sampling``,
``ratio.batch4.beam3`` (contrastive / plain wall time), the medians in seconds,
``uncached_ratio.*`` for the authors' approach (``--uncached-modes``) and ``separate_ratio.*``
for the design PAL did not take: a processor that owns a second, cached persona-free pass in
the shape of transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` (``--separate-modes``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList


def _dialogues(n: int):
    from hf_persona.data import read_esconv, sample_path, shared_data_dir

    shared = shared_data_dir()
    path = shared / "esconv" / "valid.json" if shared is not None and (shared / "esconv" / "valid.json").exists() else None
    ds = read_esconv(str(path) if path else sample_path("esconv"))
    return ds, (str(path) if path else "embedded sample")


def _examples(tokenizer, n: int, max_source_length: int, causal: bool = False):
    """The first n supporter turns that follow at least 3 seeker turns, one per dialogue; the
    persona is the seeker's first two utterances (a stand-in for extracted persona sentences:
    decoding speed does not depend on what the persona says). ``causal``: chat-template prompts
    for PAL over a causal LM."""
    from hf_persona.models.pal import build_pal_causal_example, build_pal_example

    build = build_pal_causal_example if causal else build_pal_example

    ds, source = _dialogues(n)
    out = []
    for row in ds:
        utts, spk, strat = row["utterances"], row["speakers"], row["strategies"]
        seen = 0
        for t, who in enumerate(spk):
            if who == "usr":
                seen += 1
            elif seen >= 3 and t > 0:
                seeker = [u for u, s in zip(utts[:t], spk[:t]) if s == "usr"]
                out.append(build(utts[:t], spk[:t], strat[:t], seeker[:2], tokenizer=tokenizer,
                                 max_source_length=max_source_length))
                break
        if len(out) == n:
            break
    while len(out) < n:  # a short sample: reuse rows
        out.append(out[len(out) % max(1, len(out))])
    return out, source


class UncachedPersonaFreePass(LogitsProcessor):
    """The authors' approach, for reference: a second full decoder pass over the whole prefix
    at every step, without a cache (greedy / sampling only)."""

    def __init__(self, model, dialogue_states, attention_mask, alpha):
        self.model, self.states, self.mask, self.alpha = model, dialogue_states, attention_mask, alpha

    def __call__(self, input_ids, scores):
        with torch.no_grad():
            plain = self.model.backbone(encoder_outputs=(self.states,), attention_mask=self.mask,
                                        decoder_input_ids=input_ids, use_cache=False).logits[:, -1]
        if input_ids.shape[1] <= 1:
            return scores
        return (1 + self.alpha) * scores - self.alpha * plain


class SeparateCachedPersonaFreePass(LogitsProcessor):
    """The alternative design, for reference: the processor owns a second persona-free decoder
    pass with its own KV cache and runs it at every step (greedy / sampling only: it does not
    follow beam reorderings)."""

    def __init__(self, model, dialogue_states, attention_mask, alpha):
        from hf_persona.models.pal.generation_pal import cache_argument_name, output_cache

        self.model, self.states, self.mask, self.alpha = model, dialogue_states, attention_mask, alpha
        self.cache_name = cache_argument_name(model.backbone.forward)
        self.output_cache = output_cache
        self.cache = None

    def __call__(self, input_ids, scores):
        ids = input_ids if self.cache is None else input_ids[:, -1:]
        with torch.no_grad():
            out = self.model.backbone(encoder_outputs=(self.states,), attention_mask=self.mask, decoder_input_ids=ids,
                                      use_cache=True, **{self.cache_name: self.cache})
        self.cache = self.output_cache(out)
        if input_ids.shape[1] <= 1:
            return scores
        return (1 + self.alpha) * scores - self.alpha * out.logits[:, -1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a saved PAL checkpoint (default: MiniLM warm start)")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-source-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--uncached-modes", default="batch1.greedy",
                        help="comma-separated greedy modes for which the authors' uncached approach is also timed "
                             "('' = none; seq2seq PAL only)")
    parser.add_argument("--separate-modes", default="batch1.greedy,batch8.greedy",
                        help="comma-separated greedy modes for which a processor-owned separate cached pass is also "
                             "timed (seq2seq PAL only)")
    parser.add_argument("--fusion-layer", type=int, default=None,
                        help="PAL over a causal LM: the decoder layer the persona enters at (default: the last; "
                             "the last layer lets contrastive decoding share the whole pass)")
    parser.add_argument("--out", default="benchmarks/results/decoding_speed.json")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5 (the issue asks for the median of at least 5 runs)")

    from transformers import AutoTokenizer

    from transformers import AutoConfig

    from hf_persona.backbones import is_causal_lm, resolve
    from hf_persona.models.pal import PALCollator, PALForCausalLM, PALForConditionalGeneration
    from hf_persona.utils import atomic_write_json, command_line, set_seed

    torch.set_num_threads(args.threads)
    set_seed(0)
    if args.model:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        causal = AutoConfig.from_pretrained(args.model).model_type == "pal_causal"
        model = (PALForCausalLM if causal else PALForConditionalGeneration).from_pretrained(args.model)
        model_desc = args.model
    else:
        path = resolve(args.backbone)
        causal = is_causal_lm(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        extra = {"fusion_layer": args.fusion_layer} if causal and args.fusion_layer is not None else {}
        model = (PALForCausalLM if causal else PALForConditionalGeneration).from_backbone(path, tokenizer, **extra)
        model_desc = (f"{type(model).__name__}.from_backbone({args.backbone!r}) (untrained; speed does not depend "
                      "on training" + ("; the fusion runs although its gate starts at 0)" if causal else ")"))
    if causal:  # the reference passes below drive a seq2seq decoder
        args.uncached_modes = args.separate_modes = ""
    model = model.to(args.device).eval()
    examples, source = _examples(tokenizer, 8, args.max_source_length, causal)
    collate = PALCollator(tokenizer, padding_side="left" if causal else "right")

    def inputs(n):
        batch = collate(examples[:n])
        return {k: batch[k].to(args.device) for k in ("input_ids", "attention_mask", "persona_input_ids",
                                                    "persona_attention_mask")}

    n_new = args.new_tokens
    common = dict(max_new_tokens=n_new, min_new_tokens=n_new)
    modes = {
        "batch1.greedy": (1, dict(do_sample=False)),
        "batch8.greedy": (8, dict(do_sample=False)),
        "batch8.sampling": (8, dict(do_sample=True, top_k=10, top_p=0.9, temperature=0.5, repetition_penalty=1.03)),
        "batch4.beam3": (4, dict(num_beams=3, do_sample=False)),
    }

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - t0, out

    result = {}
    for name, (n, kw) in modes.items():
        x = inputs(n)

        def plain():
            torch.manual_seed(0)
            return model.generate(**x, **common, **kw)

        def contrast():
            torch.manual_seed(0)
            proc = model.strategy_contrast_processor(alpha=0.75, unknown_strategy_alpha=0.75)
            return model.generate(**x, **common, **kw, logits_processor=LogitsProcessorList([proc]))

        plain(), contrast()  # warm-up
        t_plain, t_contrast = [], []
        for _ in range(args.repeats):
            dt, seq_p = timed(plain)
            t_plain.append(dt)
            dt, seq_c = timed(contrast)
            t_contrast.append(dt)
        assert seq_p.shape[1] == seq_c.shape[1], "both runs must produce the same number of tokens"
        mp, mc = statistics.median(t_plain), statistics.median(t_contrast)
        result[f"ratio.{name}"] = round(mc / mp, 3)
        result[f"plain_s.{name}"] = round(mp, 4)
        result[f"contrast_s.{name}"] = round(mc, 4)
        print(f"{name:16s} plain {mp:.3f}s  contrastive {mc:.3f}s  ratio {mc / mp:.3f}", flush=True)

        if name in {m.strip() for m in args.uncached_modes.split(",")} and "greedy" in name:
            with torch.no_grad():
                enc = model.encode(**x)

            def uncached():
                proc = UncachedPersonaFreePass(model, enc.dialogue_hidden_state, x["attention_mask"], 0.75)
                return model.generate(**x, **common, **kw, logits_processor=LogitsProcessorList([proc]))

            uncached()
            t_unc = [timed(uncached)[0] for _ in range(args.repeats)]
            mu = statistics.median(t_unc)
            result[f"uncached_ratio.{name}"] = round(mu / mp, 3)
            result[f"uncached_s.{name}"] = round(mu, 4)
            print(f"{name:16s} authors-style uncached second pass {mu:.3f}s  ratio {mu / mp:.3f}", flush=True)

        if name in {m.strip() for m in args.separate_modes.split(",")} and "greedy" in name:
            with torch.no_grad():
                enc = model.encode(**x)

            def separate():
                proc = SeparateCachedPersonaFreePass(model, enc.dialogue_hidden_state, x["attention_mask"], 0.75)
                return model.generate(**x, **common, **kw, logits_processor=LogitsProcessorList([proc]))

            separate()
            t_sep = [timed(separate)[0] for _ in range(args.repeats)]
            ms = statistics.median(t_sep)
            result[f"separate_ratio.{name}"] = round(ms / mp, 3)
            result[f"separate_s.{name}"] = round(ms, 4)
            print(f"{name:16s} processor-owned separate cached pass {ms:.3f}s  ratio {ms / mp:.3f}", flush=True)

    result["meta"] = {
        "command": command_line("benchmarks/decoding_speed.py", argv),
        "model": model_desc,
        "model_class": type(model).__name__,
        "fusion_layer": getattr(model.config, "fusion_layer", None),
        "data": f"ESConv ({source}): first supporter turn after 3 seeker turns per dialogue; persona = the seeker's first two utterances",
        "new_tokens": n_new,
        "repeats": args.repeats,
        "max_source_length": args.max_source_length,
        "alpha": "0.75 for every row from the second step (worst case)",
        "device": args.device,
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "note": "wall time on a machine shared with other jobs; plain and contrastive runs are interleaved",
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
