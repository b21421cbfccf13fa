"""The ``critic`` reward family of partner-persona generation (PPG, Lu et al. 2022).

* :func:`critic_reward_factory`, registered as ``critic``: the frozen critic scores
  (persona, completion) pairs (:class:`CriticReward`, built on
  the unbounded :class:`CriticScore`); the DRG's reward.
* :func:`ppg_critic_reward_factory`, registered as ``ppg_critic``: the reward of a generated partner
  persona, through the DRG's greedy response and the critic (:class:`PPGCriticReward`, built on
  the unbounded :class:`PPGCriticScore`); the PPG's reward.

Both return TRL reward functions ``reward(prompts, completions, **columns) -> list[float]``. Range:
``mode="label"`` gives -1 or +1, ``mode="prob"`` the positive-class probability in ``[0, 1]``. An
empty or whitespace-only completion (a response, or a generated persona) is not scored and gets the
minimum, -1 or 0 (:mod:`hf_persona.rewards.bounds`). ``ppg_critic`` gives ``None`` (no reward) for a
prompt that cannot fit the DRG, as before. Heavy imports (torch, transformers) happen inside the
factories.
"""

from __future__ import annotations

import time

from hf_persona.data import ppg as D
from hf_persona.errors import HFPersonaError
from hf_persona.training import ppg as P

from .bounds import BoundedReward
from .text import completion_text

#: the range of each mode: (minimum, maximum)
RANGES = {"label": (-1.0, 1.0), "prob": (0.0, 1.0)}


class _Timed:
    """Accumulates the wall time spent inside ``__call__`` (for the reward share of a step)."""

    seconds = 0.0
    calls = 0

    def _timed(self, fn, *a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


class CriticScore(_Timed):
    """TRL reward ``f(prompts, completions, **columns)``: the critic on (persona column, completion).

    ``mode="label"``: +1 when the critic predicts "relevant", else -1 (the paper);
    ``mode="prob"``: the positive-class probability. ``persona_column`` names the dataset column
    (one persona per completion: a list of sentences or a string).
    """

    __name__ = "critic"

    def __init__(self, critic, mode="label", persona_column="partner_persona", batch_size=64):
        if mode not in ("label", "prob"):
            raise HFPersonaError(f"critic reward mode must be 'label' or 'prob', got {mode!r}")
        self.critic = critic if isinstance(critic, P.CriticScorer) else P.CriticScorer(critic, batch_size=batch_size)
        self.mode = mode
        self.persona_column = persona_column

    def __call__(self, prompts, completions, **columns):
        if self.persona_column not in columns:
            raise HFPersonaError(
                f"the critic reward needs the column {self.persona_column!r} (the persona to judge the completion "
                f"against); got columns {sorted(k for k in columns if k not in ('trainer_state', 'log_extra', 'log_metric'))}")
        personas = columns[self.persona_column]
        if len(personas) != len(completions):
            raise HFPersonaError(f"{len(completions)} completions but {len(personas)} personas")
        completions = [completion_text(c).strip() for c in completions]
        return self._timed(self.critic.rewards, personas, completions, self.mode)


class PPGCriticScore(_Timed):
    """Reward of a generated partner persona p̂: the DRG answers (s, p̂, c) greedily with r̂ and
    the critic judges (p̂, r̂). Needs the columns ``self_persona``, ``context``, ``context_speakers``."""

    __name__ = "ppg_critic"

    def __init__(self, drg_model, drg_tokenizer, critic, mode="label", max_new_tokens=None,
                 max_prompt_tokens=P.DEFAULT_MAX_PROMPT_TOKENS, batch_size=32):
        self.drg_model, self.drg_tok = drg_model, drg_tokenizer
        self.critic = critic if isinstance(critic, P.CriticScorer) else P.CriticScorer(critic)
        if mode not in ("label", "prob"):
            raise HFPersonaError(f"critic reward mode must be 'label' or 'prob', got {mode!r}")
        self.mode = mode
        self.max_new_tokens = max_new_tokens or P.DEFAULT_MAX_COMPLETION_TOKENS[D.DRG]
        self.max_prompt_tokens = max_prompt_tokens
        self.batch_size = batch_size
        self.last_responses = []

    def _score(self, completions, self_persona, context, context_speakers):
        texts = [completion_text(c).strip() for c in completions]
        personas = [D.split_persona(t) or [t or "."] for t in texts]
        turns = [{"self_persona": s, "partner_persona": p, "context": c, "context_speakers": cs, "response": ".",
                  "n_context": len(c)}
                 for s, p, c, cs in zip(self_persona, personas, context, context_speakers)]
        ex = P.task_examples(D.DRG, turns, self.drg_tok, self.max_prompt_tokens, personas, keep_unfit=True)
        ok = [i for i, e in enumerate(ex) if e is not None]
        responses = P.generate(self.drg_model, self.drg_tok, [ex[i]["prompt"] for i in ok], self.max_new_tokens,
                               self.batch_size) if ok else []
        self.last_responses = responses
        scores = self.critic.rewards([personas[i] for i in ok], responses, self.mode) if ok else []
        # a prompt that cannot fit even without context gets no reward (None: TRL gives it zero advantage)
        out = [None] * len(ex)
        for i, r in zip(ok, scores):
            out[i] = r
        return out

    def __call__(self, prompts, completions, **columns):
        need = ("self_persona", "context", "context_speakers")
        missing = [k for k in need if k not in columns]
        if missing:
            raise HFPersonaError(f"the PPG reward needs the columns {list(need)}; missing {missing}")
        return self._timed(self._score, completions, columns["self_persona"], columns["context"],
                           columns["context_speakers"])


class CriticReward(BoundedReward, CriticScore):
    """The critic reward in ``[-1, 1]`` (label) or ``[0, 1]`` (prob); an empty completion gets the minimum."""

    def __init__(self, critic, mode="label", persona_column="partner_persona", batch_size=64):
        super().__init__(critic, mode=mode, persona_column=persona_column, batch_size=batch_size)
        self.reward_range = RANGES[self.mode]


class PPGCriticReward(BoundedReward, PPGCriticScore):
    """The PPG reward in ``[-1, 1]`` (label) or ``[0, 1]`` (prob); an empty generated persona gets the
    minimum. ``last_responses`` holds the DRG responses of the scored (non-empty) completions."""

    def __init__(self, drg_model, drg_tokenizer, critic, mode="label", **options):
        super().__init__(drg_model, drg_tokenizer, critic, mode=mode, **options)
        self.reward_range = RANGES[self.mode]


def critic_reward_factory(model=None, mode="label", persona_column="partner_persona", batch_size=64):
    """``get_reward("critic", model=CRITIC_DIR, mode="label"|"prob", persona_column=...)``."""
    if not model:
        raise HFPersonaError("the critic reward needs model=<folder of a critic trained with 'hf-persona train critic'>")
    return CriticReward(model, mode=mode, persona_column=persona_column, batch_size=batch_size)


def ppg_critic_reward_factory(drg=None, critic=None, mode="label", batch_size=32):
    """``get_reward("ppg_critic", drg=DRG_DIR, critic=CRITIC_DIR)``: reward of generated partner personas."""
    if not drg or not critic:
        raise HFPersonaError("the ppg_critic reward needs drg=<DRG folder> and critic=<critic folder>")
    model, tok = P.load_generator(drg)
    return PPGCriticReward(model, tok, critic, mode=mode, batch_size=batch_size)
