"""A supporter that talks: the four systems in one emotional-support conversation.

Each seeker turn goes through

1. the **persona extractor**: the seeker persona inferred from everything the seeker said so far
   (new sentences merged into what was inferred before);
2. **PAL** over a causal LM: the support strategy (PAL's choice among its eight strategy tokens at
   the reply's first position), then the reply decoded with **strategy contrastive decoding**
   (``(1+α)·logits(dialogue, persona) − α·logits(dialogue)``, α chosen by the strategy, paper
   Table 2) — or with a fixed α, a forced strategy, or no persona;
3. **CoBERT**: the reply ranked against other supporter replies (from the ESConv sample) given
   the dialogue and the inferred persona;
4. the **Receiver**: how well the inferred persona is perceived in the seeker's utterances, and
   its relevance heat-map.

``SupportPipeline.from_shipped()`` loads the checkpoints packaged in :mod:`hf_persona.pretrained`
(one SmolLM2 for PAL and the extractor, MiniLM for CoBERT and the Receiver); ``SupportPipeline.tiny()``
builds tiny random models in seconds, for tests. ``hf-persona chat``, ``hf-persona demo`` and
``hf-persona serve`` are this class with a terminal, a script and a web page around it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import HFPersonaError

#: The eight ESConv support strategies, in PAL's token order.
STRATEGIES = (
    "Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
    "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others",
)
#: Reply decoding: PAL's paper samples (top-k 10, top-p 0.9, temperature 0.7); the reply is short.
DECODING = {"do_sample": True, "top_k": 10, "top_p": 0.9, "temperature": 0.7, "repetition_penalty": 1.03,
            "max_new_tokens": 48}


@dataclass
class SupportTurn:
    """What the pipeline did for one seeker turn."""

    seeker: str
    reply: str
    persona: list[str]                 # the seeker persona inferred so far
    strategy: str                      # the strategy that opened the reply
    alpha: float | None                # the contrastive α used (None: no persona, plain decoding)
    ranking: list[tuple[str, float]]   # CoBERT: candidates, best first (the reply is one of them)
    receiver_score: float | None       # persona perception of the seeker's utterances (None: no persona yet)
    seconds: float
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        row = asdict(self)
        row["ranking"] = [[text, round(score, 4)] for text, score in self.ranking]
        return row


def whole_sentences(text: str) -> str:
    """``text`` up to its last sentence end (``.``, ``!``, ``?``, with a closing quote or bracket),
    for a reply that reached the token limit mid-sentence; ``text`` itself when it holds no sentence
    end before its last word."""
    import re

    ends = [m.end() for m in re.finditer(r"[.!?]+[\"')\]]*(?=\s|$)", text)]
    return text[:ends[-1]].rstrip() if ends else text


def merge_persona(persona: list[str], new: Sequence[str]) -> list[str]:
    """Append the sentences of ``new`` not yet in ``persona`` (compared lower-cased, without end
    punctuation); returns ``persona``."""
    seen = {" ".join(s.lower().split()).strip(" .!?") for s in persona}
    for sentence in new:
        key = " ".join(sentence.lower().split()).strip(" .!?")
        if key and key not in seen:
            persona.append(sentence)
            seen.add(key)
    return persona


def candidate_pool(n: int = 24) -> list[str]:
    """Distinct supporter replies from the embedded ESConv sample, the alternatives CoBERT ranks."""
    from .data import read_esconv, sample_path

    pool = []
    for row in read_esconv(sample_path("esconv")):
        for text, speaker in zip(row["utterances"], row["speakers"]):
            if speaker == "sys" and text not in pool and len(text.split()) > 4:
                pool.append(text)
    return pool[:n]


def strategy_first_processor(strategy_ids, banned_later, only=None):
    """A ``LogitsProcessor`` for PAL replies: the first generated token is a strategy token
    (``only``: that one), no later token is a strategy or another special token (``banned_later``)."""
    from transformers import LogitsProcessor

    first = sorted(set(strategy_ids if only is None else [only]))
    banned = sorted(set(banned_later) | set(strategy_ids))

    class StrategyFirst(LogitsProcessor):
        def __init__(self):
            self.start_length = None

        def __call__(self, input_ids, scores):
            if self.start_length is None:
                self.start_length = input_ids.shape[1]
            scores = scores.clone()
            if input_ids.shape[1] == self.start_length:
                keep = scores[:, first]
                scores.fill_(float("-inf"))
                scores[:, first] = keep
            else:
                scores[:, banned] = float("-inf")
            return scores

    return StrategyFirst()


class _Banned:
    """A logits processor that never lets the listed tokens be generated (the special and strategy
    tokens: a reply is text)."""

    def __init__(self, token_ids):
        self.token_ids = list(token_ids)

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token_ids] = float("-inf")
        return scores


class SupportPipeline:
    """The supporter: persona extractor -> PAL with strategy contrastive decoding -> CoBERT -> Receiver.

    >>> pipe = SupportPipeline.from_shipped()                              # doctest: +SKIP
    >>> turn = pipe.respond("i lost my job and i can not sleep")          # doctest: +SKIP
    >>> turn.strategy, turn.alpha, turn.reply                              # doctest: +SKIP

    ``decoding``: the ``generate`` settings of the reply (default :data:`DECODING`); ``alternatives``:
    how many other supporter replies CoBERT ranks the reply against; ``fresh_tries``: when a reply
    repeats an earlier supporter reply of the conversation word for word, sample it again with other
    seeds, at most this many times (0: never).
    """

    def __init__(self, pal, pal_tokenizer, extractor=None, cobert=None, receiver=None,
                 candidates: Sequence[str] | None = None, decoding: dict | None = None,
                 max_source_length: int = 256, max_persona_length: int = 96, persona_from_turn: int = 1,
                 alternatives: int = 4, fresh_tries: int = 2):
        from .models.pal import STRATEGY_TOKENS

        if getattr(pal.config, "model_type", None) != "pal_causal":
            raise HFPersonaError(f"SupportPipeline needs PAL over a causal LM (PALForCausalLM), got "
                                 f"{type(pal).__name__}")
        self.pal, self.tokenizer = pal.eval(), pal_tokenizer
        self.extractor, self.cobert, self.receiver = extractor, cobert, receiver
        self.candidates = list(candidate_pool() if candidates is None else candidates)
        self.decoding = dict(DECODING if decoding is None else decoding)
        self.max_source_length, self.max_persona_length = max_source_length, max_persona_length
        self.persona_from_turn, self.alternatives = persona_from_turn, alternatives
        if isinstance(fresh_tries, bool) or not isinstance(fresh_tries, int) or fresh_tries < 0:
            raise HFPersonaError(f"fresh_tries must be an integer >= 0, got {fresh_tries!r}")
        #: more samples (other seeds) when a reply repeats an earlier supporter reply word for word
        self.fresh_tries = fresh_tries
        self.last_resamples = 0
        self._strategy_ids = dict(zip(STRATEGIES, pal_tokenizer.convert_tokens_to_ids(list(STRATEGY_TOKENS))))
        self.reset()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_shipped(cls, pal: str = "pal", extractor: str = "persona-extractor", cobert: str = "cobert",
                     receiver: str = "receiver", **kwargs) -> "SupportPipeline":
        """The packaged checkpoints (or other names / folders / ``hf-persona/<name>`` ids, see
        :func:`hf_persona.pretrained.resolve`): PAL and the extractor share one SmolLM2."""
        from . import pretrained
        from .pretrained.causal import load_pal_with_extractor

        model, tokenizer, persona_extractor = load_pal_with_extractor(pretrained.resolve(pal),
                                                                      pretrained.resolve(extractor))
        cobert_model = pretrained.from_pretrained(cobert) if cobert else None
        # the Receiver's adapter joins CoBERT's on one MiniLM
        receiver_model = pretrained.from_pretrained(receiver, base=cobert_model) if receiver else None
        return cls(model, tokenizer, persona_extractor, cobert_model, receiver_model, **kwargs)

    @classmethod
    def tiny(cls, work_dir, **kwargs) -> "SupportPipeline":
        """Tiny random models of the same kinds (a 2-layer llama under PAL and the extractor, one
        adapter each on one LM; a 2-layer BERT under CoBERT and the Receiver), built in seconds in
        ``work_dir``: the whole pipeline for tests. What they write is noise."""
        from .pretrained.causal import load_pal_with_extractor
        from .tiny import tiny_adapters, tiny_encoders

        pal_dir, extractor_dir = tiny_adapters(Path(work_dir))
        model, tokenizer, persona_extractor = load_pal_with_extractor(pal_dir, extractor_dir, max_new_tokens=12)
        cobert, receiver = tiny_encoders(Path(work_dir))
        kwargs.setdefault("decoding", dict(DECODING, max_new_tokens=8))
        return cls(model, tokenizer, persona_extractor, cobert, receiver, **kwargs)

    # ------------------------------------------------------------------ conversation
    def reset(self) -> None:
        """Start a new conversation."""
        self.history: list[tuple[str, str]] = []
        self.strategies: list[str] = []
        self.persona: list[str] = []

    @property
    def seeker_said(self) -> list[str]:
        return [text for speaker, text in self.history if speaker == "seeker"]

    def respond(self, seeker_text: str, persona_off: bool = False, alpha=None, strategy: str | None = None,
                seed: int = 0) -> SupportTurn:
        """The supporter's turn after ``seeker_text``.

        ``persona_off``: PAL without the persona (plain decoding, the persona-free pathway);
        ``alpha``: a fixed α (number >= 0, or "low"/"medium"/"high") instead of the per-strategy
        table; ``strategy``: force the reply's strategy (one of :data:`STRATEGIES`);
        ``seed``: the sampling seed (the same seed and inputs give the same reply)."""
        if not isinstance(seeker_text, str) or not seeker_text.strip():
            raise HFPersonaError("the seeker's turn is empty; type what the seeker says")
        if strategy is not None and strategy not in self._strategy_ids:
            raise HFPersonaError(f"unknown strategy {strategy!r}; expected one of: {', '.join(STRATEGIES)}")
        if alpha is not None:  # checked before the turn enters the history
            from .models.pal import resolve_strategy_alphas

            try:
                resolve_strategy_alphas(alpha, self.pal.config.strategy_alpha)
            except (TypeError, ValueError) as err:
                raise HFPersonaError(f"alpha {alpha!r}: {err}") from None
        started = time.perf_counter()
        timings = {}
        self.history.append(("seeker", seeker_text.strip()))
        self.strategies.append("")
        if self.extractor is not None and len(self.seeker_said) >= self.persona_from_turn:
            t = time.perf_counter()
            merge_persona(self.persona, self.extractor.extract([self.seeker_said])[0])
            timings["persona"] = time.perf_counter() - t
        t = time.perf_counter()
        reply, chosen, used_alpha = self._reply(persona_off, alpha, strategy, seed)
        # a small PAL copies its own earlier turn once the dialogue shows it: sample again (other
        # seeds, at most fresh_tries times) rather than say the same thing twice
        said = {" ".join(text.lower().split()) for speaker, text in self.history if speaker == "supporter"}
        self.last_resamples = 0
        while " ".join(reply.lower().split()) in said and self.last_resamples < self.fresh_tries:
            self.last_resamples += 1
            reply, chosen, used_alpha = self._reply(persona_off, alpha, strategy, seed + 7919 * self.last_resamples)
        timings["reply"] = time.perf_counter() - t
        ranking = []
        if self.cobert is not None:
            t = time.perf_counter()
            ranking = self._rank(reply)
            timings["cobert"] = time.perf_counter() - t
        score = None
        if self.receiver is not None and self.persona:
            import torch

            t = time.perf_counter()
            with torch.no_grad():
                score = float(self.receiver.score(self.seeker_said, self.persona))
            timings["receiver"] = time.perf_counter() - t
        self.history.append(("supporter", reply))
        self.strategies.append(chosen)
        return SupportTurn(seeker=seeker_text.strip(), reply=reply, persona=list(self.persona), strategy=chosen,
                           alpha=used_alpha, ranking=ranking, receiver_score=score,
                           seconds=time.perf_counter() - started, timings={k: round(v, 2) for k, v in timings.items()})

    def _reply(self, persona_off: bool, alpha, strategy: str | None, seed: int):
        import torch
        from transformers import LogitsProcessorList

        from .models.pal import build_pal_causal_example, resolve_strategy_alphas
        from .training.pal import VariantCollator

        utterances = [text for _, text in self.history]
        speakers = ["usr" if speaker == "seeker" else "sys" for speaker, _ in self.history]
        # without a persona yet, PAL reads its placeholder persona, as in training; --persona-off
        # drops the fusion altogether (the persona-free pathway of the same model)
        persona = [] if persona_off else self.persona
        example = build_pal_causal_example(utterances, speakers, self.strategies, persona, tokenizer=self.tokenizer,
                                           system_prompt=self.pal.config.system_prompt,
                                           max_source_length=self.max_source_length,
                                           max_persona_length=self.max_persona_length)
        batch = VariantCollator(self.tokenizer, "no_persona" if persona_off else "pal", padding_side="left")([example])
        batch.pop("labels", None)
        width = batch["input_ids"].shape[1]
        tok = self.tokenizer
        ids = list(self._strategy_ids.values())
        # 1. the strategy: PAL's own choice among the eight strategy tokens at the reply's first
        #    position (sampled with the reply's seed), or the one the caller forces
        torch.manual_seed(seed)
        if strategy:
            chosen = strategy
        else:
            with torch.no_grad():
                first = self.pal(**batch).logits[0, -1, ids]
            probs = torch.softmax(first / self.decoding.get("temperature", 1.0), dim=-1)
            index = int(torch.multinomial(probs, 1)) if self.decoding.get("do_sample") else int(first.argmax())
            chosen = STRATEGIES[index]
        # 2. the reply text, contrasted with the strategy's alpha, decoded where the model expects it
        #    (reply_opening): after the strategy token once an earlier supporter turn opened with one,
        #    else straight after the prompt. Either way the contrastive processor's slot (the first
        #    generated position) holds a text token and takes the chosen strategy's alpha as its
        #    "unknown strategy" alpha, from the second token on
        opening = self.reply_opening(chosen)
        if opening is not None:
            batch["input_ids"] = torch.cat([batch["input_ids"], batch["input_ids"].new_tensor([[opening]])], 1)
            batch["attention_mask"] = torch.cat([batch["attention_mask"], batch["attention_mask"].new_ones((1, 1))], 1)
            width += 1
        processors = []
        used_alpha = None
        if persona:
            used_alpha = float(resolve_strategy_alphas(alpha, self.pal.config.strategy_alpha)[chosen])
            processors.append(self.pal.strategy_contrast_processor(0.0, unknown_strategy_alpha=used_alpha))
        banned = sorted((set(tok.all_special_ids) | set(ids)) - {tok.eos_token_id})
        processors.append(_Banned(banned))
        with torch.no_grad():
            out = self.pal.generate(**batch, **self.decoding, logits_processor=LogitsProcessorList(processors))
        new = out[0, width:].tolist()
        text = tok.decode(new, skip_special_tokens=True).strip()
        cut = tok.eos_token_id not in new and len(new) >= self.decoding.get("max_new_tokens", len(new) + 1)
        return (whole_sentences(text) if cut else text) or "...", chosen, used_alpha

    def reply_opening(self, strategy: str) -> int | None:
        """The token the reply text is decoded after: the strategy token of ``strategy`` when an
        earlier supporter turn of this conversation opened with a strategy token, else ``None``
        (straight after the prompt).

        Measured on the shipped SmolLM2 adapter (``hf-persona demo``'s seeker turns): once the dialogue
        shows supporter turns opened by strategy tokens, the model writes text after a strategy token
        (p("I") ≈ 0.4-0.5) and its distribution straight after the prompt is flat (p("I") ≈ 0.01-0.05, a
        strategy token being what it expects), which sampled stray word pieces ("arf", "zon") at the
        start of a third of the replies; in the first supporter turn it is the other way round."""
        if not any(self.strategies):
            return None
        return self._strategy_ids[strategy]

    def _rank(self, reply: str) -> list[tuple[str, float]]:
        import torch

        turn = len(self.seeker_said)
        pool = [c for c in self.candidates if c != reply]
        start = (turn * self.alternatives) % max(1, len(pool))
        others = (pool[start:] + pool[:start])[: self.alternatives]
        candidates = [reply] + others
        dialogue = [text for _, text in self.history]
        with torch.no_grad():
            scores = self.cobert.rank(dialogue, self.persona, candidates)
        return sorted(((c, float(s)) for c, s in zip(candidates, scores)), key=lambda pair: -pair[1])

    def heatmap(self, path) -> Path | None:
        """The Receiver's relevance grid of the seeker's utterances vs the inferred persona as a
        PNG at ``path``; None before any persona is inferred (or without a Receiver)."""
        import torch

        from .evaluation.plots import render_relevance_heatmap

        if self.receiver is None or not self.persona:
            return None
        with torch.no_grad():
            grid = self.receiver.relevance(self.seeker_said, self.persona)
        return Path(render_relevance_heatmap(grid, self.seeker_said, self.persona, path,
                                             title="Receiver relevance: the seeker vs the inferred persona"))

