"""P2Bot self-play fine-tuning (paper section 3.2) on TRL's ``GRPOTrainer`` with a custom rollout.

Two Transmitters talk: the *user* (interlocutor A, frozen) opens with the first utterance of a
real dialogue, the *agent* (B, learning) answers; they alternate for ``turns`` agent turns. Every
agent utterance is one TRL "completion" whose prompt is the agent's state (persona + history at
that turn). The rewards (RS.1 language style, RS.2 discourse coherence, RS.3 persona perception
discounted over the episode, minus the information penalty) are plain TRL reward functions with
weights. TRL's group-mean advantage with ``scale_rewards="none"``, ``beta=0`` (the default;
``kl_beta`` adds a KL penalty to the supervised model) and one policy update per rollout
(``num_iterations=1``) is REINFORCE with a mean baseline over each seed dialogue's group; with one
seed dialogue per optimisation step (``seeds_per_step=1``) that group is the batch, as in the paper.
``baseline="leave_one_out"`` scales the weights by ``G/(G-1)``, which turns the group-mean advantage
into the exact leave-one-out one (``r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_j r_j)``).
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

from ..errors import HFPersonaError
from ..utils import get_logger
from .configs import SelfPlayTrainingConfig
from .recipe import RecipeResult, trainer_arguments, write_summary

logger = get_logger(__name__)

PAPER_WEIGHTS = {"language_style": 0.4, "discourse_coherence": 0.1, "persona_perception": 0.5,
                 "repetition_penalty": 0.1}
REWARD_NAMES = tuple(PAPER_WEIGHTS)
_KEY = re.compile(r"^\[(\d+)\] ")


def selfplay_seeds(dataset) -> list:
    """One seed per dialogue: the opener (user) persona, the answerer (agent) persona, the opening line.

    In PERSONA-CHAT the partner usually speaks first; when the responder opened (no partner line),
    the roles swap so the user is always the one who spoke first in the data.
    """
    needed = {"your_persona", "partner_persona", "utterances", "speakers"}
    if needed - set(dataset.column_names):
        raise HFPersonaError(f"self-play seeds need PERSONA-CHAT rows with {sorted(needed)}")
    seeds = []
    for row in dataset:
        utts, speakers = list(row["utterances"]), list(row["speakers"])
        if not utts or not utts[0].strip():
            continue
        personas = {"you": list(row["your_persona"]), "partner": list(row["partner_persona"])}
        opener = speakers[0]
        other = "you" if opener == "partner" else "partner"
        seeds.append({"user_persona": personas[opener], "agent_persona": personas[other],
                      "first_utterance": utts[0], "dialogue_id": row.get("dialogue_id", -1)})
    if not seeds:
        raise HFPersonaError("no self-play seeds: no dialogue has a non-empty first utterance")
    return seeds


def simulate_episodes(agent, user, tokenizer, seeds, turns: int = 3, agent_decoding: str = "sample",
                      user_num_beams: int = 2, agent_num_beams: int = 2, max_new_tokens: int | None = None) -> list:
    """Run one self-play episode per seed, all seeds batched turn by turn.

    The user's first line comes from the seed; afterwards the user answers with beam search
    re-ranked by eq. 3 (``x*``), the agent by multinomial sampling (``agent_decoding="sample"``,
    training) or the same beam re-ranking (``"beam"``). Returns per episode the utterances of both
    speakers, the agent's context/response token ids and the history before each agent turn.
    """
    if turns < 1:
        raise HFPersonaError(f"turns must be at least 1, got {turns}")
    if agent_decoding not in ("sample", "beam"):
        raise HFPersonaError(f"agent_decoding must be 'sample' or 'beam', got {agent_decoding!r}")
    episodes = [{"user_persona": s["user_persona"], "agent_persona": s["agent_persona"],
                 "user_utterances": [s["first_utterance"]], "agent_utterances": [], "histories": [],
                 "context_ids": [], "response_ids": []} for s in seeds]
    dialogue = [[s["first_utterance"]] for s in seeds]
    for n in range(turns):
        histories = [list(d) for d in dialogue]
        if agent_decoding == "sample":
            texts, contexts, resp = agent.respond_batch(tokenizer, [e["agent_persona"] for e in episodes], histories,
                                                        do_sample=True, max_new_tokens=max_new_tokens,
                                                        return_ids=True)
        else:
            texts, contexts, resp = agent.respond_batch(tokenizer, [e["agent_persona"] for e in episodes], histories,
                                                        num_beams=agent_num_beams, max_new_tokens=max_new_tokens,
                                                        return_ids=True)
        for e, d, h, t, c, r in zip(episodes, dialogue, histories, texts, contexts, resp):
            e["histories"].append(h)
            e["agent_utterances"].append(t)
            e["context_ids"].append(c)
            e["response_ids"].append(r)
            d.append(t)
        if n + 1 < turns:
            replies = user.respond_batch(tokenizer, [e["user_persona"] for e in episodes],
                                         [list(d) for d in dialogue], num_beams=user_num_beams,
                                         max_new_tokens=max_new_tokens)
            for e, d, t in zip(episodes, dialogue, replies):
                e["user_utterances"].append(t)
                d.append(t)
    return episodes


def episode_columns(episodes) -> dict:
    """Flatten episodes into per-agent-turn columns for the reward functions.

    ``persona`` / ``history``: the agent's persona and the dialogue before its turn (RS.2, penalty);
    ``partner_persona`` and ``future_turns`` (the turns after it, ``[x_{n+1}, a_{n+1}, ...]``,
    partner first): the columns of the Receiver's ``persona_perception`` reward in its
    ``mode="discounted"`` form, which is RS.3 (eq. 8).
    """
    cols = {k: [] for k in ("persona", "history", "partner_persona", "future_turns", "turn", "completion")}
    for e in episodes:
        agent, user = e["agent_utterances"], e["user_utterances"]
        for n, text in enumerate(agent):
            future = []
            for k in range(n + 1, len(agent)):
                future += [user[k], agent[k]]
            cols["persona"].append(e["agent_persona"])
            cols["history"].append(e["histories"][n])
            cols["partner_persona"].append(e["user_persona"])
            cols["future_turns"].append(future)
            cols["turn"].append(n)
            cols["completion"].append(text)
    return cols


def build_rewards(names, frozen_model, tokenizer, persona_scorer=None, gamma: float = 0.5,
                  language_model=None, coherence_form: str = "log_prob") -> list:
    """The reward callables for ``names`` (a subset of ``REWARD_NAMES``), in that order.

    RS.1 scores with ``language_model`` (a path / Hub id of a causal LM) or, by default, the frozen
    supervised Transmitter; RS.2 with the frozen supervised Transmitter's NUP head; RS.3 is
    ``persona_scorer``: the Receiver's ``persona_perception`` reward in ``mode="discounted"``
    (see :func:`persona_scorer_from_receiver`), or any callable with the same columns.

    RS.1, RS.2 and the penalty are the reward classes of :mod:`hf_persona.rewards.p2bot` (what
    ``hf_persona.get_reward`` gives): an empty or whitespace-only agent turn is not scored and gets
    the reward's minimum (-20 for RS.1 and RS.2, -0.5 for RS.2 with ``coherence_form="prob_minus_half"``,
    -1 for the penalty); other turns score as in :mod:`hf_persona.training.p2bot_rewards`, clipped
    into the documented range.
    """
    # hf_persona.rewards' classes: the same scores, with each reward's documented floor for an empty turn
    from ..rewards.p2bot import DiscourseCoherenceReward, LanguageStyleReward, RepetitionPenalty

    out = []
    for name in names:
        if name == "language_style":
            if language_model is not None:
                out.append(LanguageStyleReward(model=language_model))
            else:
                out.append(LanguageStyleReward(model=frozen_model, tokenizer=tokenizer))
        elif name == "discourse_coherence":
            out.append(DiscourseCoherenceReward(model=frozen_model, tokenizer=tokenizer, form=coherence_form))
        elif name == "persona_perception":
            if persona_scorer is None:
                raise HFPersonaError("the persona_perception reward (RS.3) needs a Receiver: pass receiver=DIR "
                                     "(a trained Receiver) or drop RS.3 from the weights")
            out.append(persona_scorer)
        elif name == "repetition_penalty":
            out.append(RepetitionPenalty())
        else:
            raise HFPersonaError(f"unknown self-play reward {name!r}; valid: {', '.join(REWARD_NAMES)}")
    return out


def make_rollout_func(user, tokenizer, seeds: list, turns: int, episodes_per_seed: int,
                      max_new_tokens: int | None = None):
    """A TRL ``rollout_func``: each group of ``num_generations`` identical prompts is one seed,
    played ``episodes_per_seed`` times; every agent turn becomes one completion."""

    def rollout(prompts, trainer):
        group = trainer.num_generations
        if group != turns * episodes_per_seed:
            raise HFPersonaError(f"num_generations ({group}) must equal turns × episodes_per_seed "
                                 f"({turns} × {episodes_per_seed})")
        if len(prompts) % group:
            raise HFPersonaError(f"got {len(prompts)} prompts, not a multiple of num_generations={group}")
        keys = []
        for g in range(0, len(prompts), group):
            block = prompts[g:g + group]
            if any(p != block[0] for p in block):
                raise HFPersonaError("self-play expects each prompt repeated num_generations times in a row")
            match = _KEY.match(block[0])
            if not match:
                raise HFPersonaError(f"self-play prompt {block[0][:40]!r} does not start with its seed key '[i] '")
            keys.append(int(match.group(1)))
        agent = trainer.accelerator.unwrap_model(trainer.model)
        run_seeds = [seeds[k] for k in keys for _ in range(episodes_per_seed)]
        episodes = simulate_episodes(agent, user, tokenizer, run_seeds, turns=turns, agent_decoding="sample",
                                     max_new_tokens=max_new_tokens)
        cols = episode_columns(episodes)
        prompt_ids = [c for e in episodes for c in e["context_ids"]]
        completion_ids = [r for e in episodes for r in e["response_ids"]]
        completion_ids = [r if r else [tokenizer.eos_token_id] for r in completion_ids]
        cols.pop("completion")
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, **cols}

    return rollout


def persona_scorer_from_receiver(receiver, gamma: float = 0.5, mode: str = "discounted"):
    """The Receiver plugin's ``persona_perception`` reward for ``receiver`` (a folder or model).

    ``mode="discounted"`` is RS.3 (eq. 8) over the self-play columns of :func:`episode_columns`;
    ``mode="turn"`` the plain per-utterance score r(a).
    """
    import hf_persona

    return hf_persona.get_reward("persona_perception", model=receiver, mode=mode, gamma=gamma)


def train_selfplay(sft_model, config=None, /, train_data=None, receiver=None, persona_scorer=None,
                   **kwargs) -> RecipeResult:
    """Self-play fine-tuning of the supervised Transmitter in ``sft_model`` (a folder); returns a
    :class:`~hf_persona.training.recipe.RecipeResult` (the summary, also saved to ``json_out``; the model
    is in ``output_dir``).

    ``config``: a :class:`~hf_persona.training.configs.SelfPlayTrainingConfig`, or the output folder (then
    ``kwargs`` are its fields). ``train_data``: the seed dialogues, as for
    :func:`~hf_persona.training.transmitter.train_transmitter`. ``weights`` maps reward names to λ
    (default: the paper's 0.4 / 0.1 / 0.5 and 0.1 for the penalty); a reward left out or with weight 0 is
    not computed. ``receiver`` is a trained Receiver folder or model (RS.3), or pass ``persona_scorer``
    directly. Each optimisation step plays ``seeds_per_step × episodes_per_seed`` episodes; the paper's
    2000 dialogues of 3 turns correspond to ``max_steps = 2000 / episodes_per_seed``.

    ``kl_beta`` > 0 adds TRL's per-token KL penalty to a frozen copy of the supervised model
    (``beta`` of GRPO), a brake on drifting away from the supervised language model. The paper
    has no such term (0 reproduces it).

    ``mask_truncated`` leaves agent turns cut at ``max_new_tokens`` (no ``<eos>``) out of the loss
    (TRL's ``mask_truncated_completions``); a weak supervised start rarely ends its samples. See
    ``benchmarks/RESULTS.md`` (P2Bot Transmitter and self-play) for what either option did in the benchmark.

    ``sft_weight`` > 0 keeps the supervised objective in the loss (the "pretraining mix" of
    InstructGPT's PPO-ptx): every optimisation step adds ``sft_weight`` × the Transmitter's own
    supervised loss (LM + NUP, as in :func:`~hf_persona.training.transmitter.train_transmitter`) on
    the next ``sft_batch_size`` real turns of the training dialogues. Where the KL term only pulls
    the sampled turns towards the supervised model, this term keeps fitting the real replies
    (their words and where they end). The paper has no such term (0 reproduces it).

    ``warmup_steps`` > 0 warms the (otherwise constant) learning rate up over that many steps.
    """
    cfg = SelfPlayTrainingConfig.build(config, **kwargs)  # a bad setting fails before anything loads
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from hf_persona.training.common import last_checkpoint, time_budget_callback, train_resumable
    from hf_persona.training.transmitter import load_transmitter, training_dialogues
    from hf_persona.utils import set_seed

    seed, gamma, turns, episodes_per_seed, seeds_per_step = (cfg.seed, cfg.gamma, cfg.turns, cfg.episodes_per_seed,
                                                             cfg.seeds_per_step)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    set_seed(seed)
    weights = dict(PAPER_WEIGHTS if cfg.weights is None else cfg.weights)
    unknown = set(weights) - set(REWARD_NAMES)
    if unknown:
        raise HFPersonaError(f"unknown reward weights {sorted(unknown)}; valid: {', '.join(REWARD_NAMES)}")
    names = [n for n in REWARD_NAMES if weights.get(n, 0.0) != 0.0]
    if not names:
        raise HFPersonaError("self-play needs at least one reward with a non-zero weight")
    if "persona_perception" in names and persona_scorer is None and receiver is None:
        raise HFPersonaError("RS.3 (persona_perception) needs receiver=<trained Receiver folder> (or 'minilm' "
                             "for the zero-shot Receiver); or leave persona_perception out of the weights")
    group = turns * episodes_per_seed
    if group < 2:
        raise HFPersonaError("a baseline needs at least 2 agent turns per group (turns × episodes_per_seed)")

    dataset = training_dialogues(train_data, cfg.dev_from)
    seeds = selfplay_seeds(dataset)
    order = list(range(len(seeds)))
    random.Random(seed).shuffle(order)
    prompts = [f"[{i}] {seeds[i]['first_utterance']}" for i in order]

    agent, tokenizer = load_transmitter(sft_model)
    user, _ = load_transmitter(sft_model)
    user.eval()
    for p in user.parameters():
        p.requires_grad_(False)
    tokenizer.padding_side = "left"
    if "persona_perception" in names and persona_scorer is None:
        persona_scorer = persona_scorer_from_receiver(receiver, gamma=gamma)
    reward_funcs = build_rewards(names, user, tokenizer, persona_scorer=persona_scorer, gamma=gamma,
                                 language_model=cfg.language_model)
    scale = group / (group - 1) if cfg.baseline == "leave_one_out" else 1.0
    reward_weights = [float(weights[n]) * scale for n in names]

    output_dir = Path(cfg.output_dir)
    resume_from = last_checkpoint(output_dir) if cfg.resume else None
    args = trainer_arguments(
        GRPOConfig, output_dir, batch_size=group * seeds_per_step, learning_rate=cfg.learning_rate, seed=seed,
        max_steps=cfg.max_steps, logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, progress=cfg.progress,
        warmup_steps=cfg.warmup_steps, lr_scheduler_type="constant_with_warmup" if cfg.warmup_steps else "constant",
        steps_per_generation=1,
        num_generations=group,
        num_iterations=1,
        beta=float(cfg.kl_beta),
        mask_truncated_completions=bool(cfg.mask_truncated),
        loss_type="dr_grpo",
        scale_rewards="none",
        max_completion_length=cfg.max_new_tokens,
        temperature=1.0,
        reward_weights=reward_weights,
        disable_dropout=True,
        bf16=False,  # on a GPU too: the rewards' and the policy's log-probabilities are compared in fp32
        log_completions=False,
        shuffle_dataset=False,
    )
    trainer_class = GRPOTrainer
    if cfg.sft_weight:
        batches = supervised_batches(dataset, tokenizer, agent.config, cfg.sft_batch_size, seed=seed)
        for _ in range(_checkpoint_step(resume_from)):  # a resumed run goes on with the batches it had not seen
            next(batches)
        trainer_class = _anchored_trainer_class(GRPOTrainer, float(cfg.sft_weight), batches)
    trainer = trainer_class(
        model=agent,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        rollout_func=make_rollout_func(user, tokenizer, seeds, turns, episodes_per_seed, cfg.max_new_tokens),
        callbacks=[time_budget_callback(cfg.budget_minutes)] if cfg.budget_minutes else None,
    )
    start = time.monotonic()
    result = train_resumable(trainer, resume=cfg.resume)  # SIGTERM/SIGINT: checkpoint, then stop
    seconds = time.monotonic() - start
    trainer.save_model(str(output_dir))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(output_dir))
    history = [h for h in trainer.state.log_history if "reward" in h]
    steps_run = trainer.state.global_step - _checkpoint_step(resume_from)
    summary = {
        "output_dir": str(output_dir),
        "sft_model": str(sft_model),
        "rewards": names,
        "weights": {n: weights[n] for n in names},
        "baseline": cfg.baseline,
        "global_step": trainer.state.global_step,
        "episodes": trainer.state.global_step * seeds_per_step * episodes_per_seed,
        "seconds": seconds,
        "seconds_per_episode": seconds / max(1, steps_run * seeds_per_step * episodes_per_seed),
        "learning_rate": cfg.learning_rate,
        "kl_beta": float(cfg.kl_beta),
        "mask_truncated": bool(cfg.mask_truncated),
        "sft_weight": float(cfg.sft_weight),
        "train_loss": result.training_loss,  # the whole run's mean, across resumes
        "first_reward": history[0]["reward"] if history else None,
        "last_reward": history[-1]["reward"] if history else None,
        "resumed_from": resume_from,
        "budget_minutes": cfg.budget_minutes,
    }
    kls = [h["kl"] for h in history if "kl" in h]
    if kls:  # logged by TRL only when kl_beta > 0
        summary["kl.first"], summary["kl.last"] = kls[0], kls[-1]
    for key, name in (("sft_loss", "sft_loss"), ("completions/clipped_ratio", "clipped_ratio"),
                      ("completions/mean_length", "completion_length")):
        vals = [h[key] for h in history if h.get(key) is not None]
        if vals:
            summary[f"{name}.first"], summary[f"{name}.last"] = vals[0], vals[-1]
    for n in names:
        key = f"rewards/{n}/mean"
        vals = [h[key] for h in history if key in h]
        if vals:
            summary[f"{n}.first"] = vals[0]
            summary[f"{n}.last"] = vals[-1]
    return RecipeResult(write_summary(summary, cfg.json_out, args), output_dir)


def _checkpoint_step(checkpoint) -> int:
    """The global step of a ``checkpoint-N`` folder (0 for None)."""
    return int(Path(checkpoint).name.split("-")[1]) if checkpoint else 0


def supervised_batches(dataset, tokenizer, config, batch_size: int, seed: int = 0):
    """Endless supervised batches for ``sft_weight``: every turn of ``dataset`` with one sampled
    distractor (the supervised recipe), shuffled with ``seed``, reshuffled after each pass."""
    from hf_persona.training.transmitter import TransmitterCollator, add_distractors, dialogue_examples

    examples = add_distractors(dialogue_examples(dataset, both_sides=True), seed=seed)
    if len(examples) < batch_size:
        raise HFPersonaError(f"sft_batch_size={batch_size} but the training dialogues hold only {len(examples)} turns")
    collate = TransmitterCollator(tokenizer, config.max_context_tokens, config.max_response_tokens)

    def endless():
        rng = random.Random(seed)
        while True:
            order = list(range(len(examples)))
            rng.shuffle(order)
            for start in range(0, len(order) - batch_size + 1, batch_size):
                yield collate([examples[i] for i in order[start:start + batch_size]])

    return endless()


def _anchored_trainer_class(base, weight: float, batches):
    """``base`` (GRPOTrainer) whose loss adds ``weight`` × the supervised loss of the next batch."""

    class AnchoredGRPOTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
            device = loss.device
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in next(batches).items()}
            sft = model(**batch).loss
            self._metrics["train" if model.training else "eval"]["sft_loss"].append(float(sft.detach()))
            return loss + weight * sft

    return AnchoredGRPOTrainer


def evaluate_selfplay(agent, user, tokenizer, seeds, receiver, gamma: float = 0.5, turns: int = 3,
                      agent_decoding: str = "sample", batch_size: int = 16, seed: int = 0,
                      max_new_tokens: int | None = None) -> dict:
    """Mean RS.3 (eq. 8, ``persona_reward``) and mean per-utterance persona score r(a)
    (``persona_score``) of the agent's turns on self-play episodes with the frozen ``user``.

    ``receiver``: a Receiver folder or model (scored through the ``persona_perception`` plugin).
    """
    import torch

    discounted = persona_scorer_from_receiver(receiver, gamma=gamma, mode="discounted")
    turn = persona_scorer_from_receiver(receiver, gamma=gamma, mode="turn")
    torch.manual_seed(seed)
    rs3, raw = [], []
    for start in range(0, len(seeds), batch_size):
        episodes = simulate_episodes(agent, user, tokenizer, seeds[start:start + batch_size], turns=turns,
                                     agent_decoding=agent_decoding, max_new_tokens=max_new_tokens)
        cols = episode_columns(episodes)
        completions = cols.pop("completion")
        prompts = [""] * len(completions)
        rs3.extend(discounted(prompts, completions, **cols))
        raw.extend(turn(prompts, completions, **cols))
    if not rs3:
        raise HFPersonaError("no self-play episodes to evaluate")
    return {"persona_reward": sum(rs3) / len(rs3), "persona_score": sum(raw) / len(raw), "episodes": len(seeds)}
