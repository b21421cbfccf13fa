"""PPG reinforcement learning with TRL's ``RLOOTrainer``: critic rewards, alternation, resume.

What the paper does (section 3.3): sample p̂ from PPG and r̂ from DRG, ask the frozen critic
about (p̂, r̂), turn its label into R = +1/-1 and apply plain REINFORCE,
Δθ = -R ∇ log P, to both generators. What this module does instead:

* ``trl.RLOOTrainer`` with ``num_generations >= 2`` samples per prompt; each sample's
  advantage is its reward minus the mean reward of the other samples of the same prompt
  (leave-one-out baseline). With ±1 rewards this is REINFORCE with a variance-reducing
  baseline; the expected gradient direction is the paper's.
* PPG phase: the completion is p̂; the reward (``PPGCriticReward``) builds the DRG
  prompt from (s, p̂, c), lets the current (frozen during the phase) DRG answer greedily and
  asks the critic about (p̂, r̂).
* DRG phase: prompts are built with personas generated (greedily) by the current PPG; the
  completion is r̂; the reward (``CriticReward``) asks the critic about (p̂, r̂).
* Schedule: ``rounds`` x (PPG phase of ``steps_per_phase`` steps, then DRG phase of
  ``steps_per_phase`` steps). Alternating keeps each phase's reward stationary (the other
  generator is fixed while one learns), which a simultaneous update would not.
* Resume: ``rl_state.json`` records finished phases; an interrupted phase resumes from its
  newest intact checkpoint (each phase trains through ``hf_persona.training.common.train_resumable``:
  checkpoint manifests, SIGTERM/SIGINT save a checkpoint first, the phase's ``train_loss`` covers the
  whole phase across resumes).
* Rewards: the phases score with :mod:`hf_persona.rewards.critic`'s ``CriticReward`` and
  ``PPGCriticReward`` (what ``hf_persona.get_reward("critic" | "ppg_critic")`` gives): an empty completion (response or generated persona) gets the
  minimum (-1 for ``mode="label"``, 0 for ``"prob"``) without being scored.

The one adaptation of ``RLOOTrainer`` (:class:`PPGRLOOTrainer`): TRL computes the
per-token log-probabilities with a "fused LM head" that multiplies the backbone's last hidden
state directly by ``get_output_embeddings().weight``. For ``BertLMHeadModel`` that skips the
MLM prediction-head transform (dense + GELU + LayerNorm) between the encoder and the output
matrix, so the log-probs of the policy being trained are not those of the policy that sampled
(:func:`fused_head_mismatch` measures the gap). In addition TRL scores sequences without
``position_ids``, while ``generate`` counts positions over real tokens; with left-padded
prompts that shifts the absolute position embeddings of BERT and GPT-2. The subclass
overrides ``_get_per_token_logps_and_entropies`` only: a plain forward with mask-derived
``position_ids``, ``log_softmax(logits / temperature)`` gathered at the completion tokens.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..data import ppg as D
from ..errors import HFPersonaError
from ..utils import atomic_write_json, moved_names
from . import ppg as P
from .configs import PPGRLTrainingConfig
from .recipe import RecipeResult, trainer_arguments

STATE_FILE = "rl_state.json"

__getattr__ = moved_names(__name__, {"CriticReward": "hf_persona.rewards.critic:CriticScore",
                                     "PPGCriticReward": "hf_persona.rewards.critic:PPGCriticScore"})


# ----------------------------------------------------------------------------------------------
# the RLOO adaptation
# ----------------------------------------------------------------------------------------------
def fused_head_mismatch(model, input_ids) -> float:
    """Largest |log p| gap between TRL's fused LM head and the model's own logits on ``input_ids``.

    About 0 for GPT-2-style heads; large for ``BertLMHeadModel`` (the prediction-head transform
    is skipped by the fused head). Works on a copy; ``model`` is not patched.
    """
    import copy

    import torch
    from trl.trainer.utils import add_fused_lm_head

    m = copy.deepcopy(model).eval()
    ref = copy.deepcopy(model).eval()
    add_fused_lm_head(m)
    with torch.no_grad():
        fused = m(input_ids=input_ids, labels=input_ids.clone(), fused_lm_head=True).log_probs
        logits = ref(input_ids=input_ids).logits[:, :-1].float()
        plain = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return float((fused - plain).abs().max())


def _make_trainer_class():
    import torch
    from trl import RLOOTrainer

    class PPGRLOOTrainer(RLOOTrainer):
        """``RLOOTrainer`` scoring with the model's own LM head and mask-derived positions."""

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **unused):
            extra = {k: v for k, v in unused.items() if v is not None}
            if extra:
                raise HFPersonaError(f"PPG RL handles text-only causal LMs; unexpected inputs {sorted(extra)}")
            batch_size = batch_size or input_ids.size(0)
            logps, ents = [], []
            for start in range(0, input_ids.size(0), batch_size):
                ids = input_ids[start:start + batch_size]
                mask = attention_mask[start:start + batch_size]
                pos = P.position_ids_from_mask(mask)
                with self.accelerator.autocast():
                    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
                logits = logits[:, -logits_to_keep - 1:-1].float() / self.temperature
                lp = torch.log_softmax(logits, -1)
                logps.append(lp.gather(-1, ids[:, -logits_to_keep:].unsqueeze(-1)).squeeze(-1))
                if compute_entropy:
                    ents.append(-(lp.exp() * lp).sum(-1))
            return torch.cat(logps), (torch.cat(ents) if compute_entropy else None), None

    return PPGRLOOTrainer


def make_rloo_trainer(model, tokenizer, reward, train_dataset, output_dir, config=None, *, max_steps=None,
                      max_completion_length=32, callbacks=None, **settings):
    """An ``RLOOTrainer`` (with the adaptation above) for one generator and one reward, checkpoints in
    ``output_dir``, for ``max_steps`` steps (None: ``steps_per_phase``).

    The settings (batch, generations, learning rate, sampling, LoRA...) are those of ``config``, a
    :class:`~hf_persona.training.configs.PPGRLTrainingConfig`, or ``settings``, its fields (``config``
    None: the defaults). Prompts in ``train_dataset`` are strings (already rendered with the chat
    template by :func:`hf_persona.training.ppg.task_examples` for chat tokenizers): TRL tokenizes them
    with ``tokenizer(text=prompts)``, the ids :func:`hf_persona.data.ppg.encode_prompt` gives."""
    from trl import RLOOConfig

    cfg = PPGRLTrainingConfig.build(output_dir if config is None else config, **settings)
    checkpointing = cfg.gradient_checkpointing
    args = trainer_arguments(
        RLOOConfig, output_dir, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
        max_steps=cfg.steps_per_phase if max_steps is None else max_steps, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, progress=cfg.progress,
        num_generations=cfg.num_generations,
        max_completion_length=max_completion_length, beta=cfg.beta, temperature=cfg.temperature, top_p=cfg.top_p,
        remove_unused_columns=False,
        normalize_advantages=cfg.normalize_advantages,
        # the sequence-level importance ratio exp(sum log p - sum log p_old) explodes when dropout makes the
        # two passes differ; sampling and scoring must use the same (deterministic) policy
        disable_dropout=True,
        **({} if checkpointing is None else {"gradient_checkpointing": bool(checkpointing)}),
    )
    modules = cfg.lora_target_modules
    peft_config = P.lora_config(modules, r=cfg.lora) if modules else None
    cls = _make_trainer_class()
    return cls(model=model, reward_funcs=reward, args=args, train_dataset=train_dataset, processing_class=tokenizer,
               peft_config=peft_config, callbacks=callbacks)


# ----------------------------------------------------------------------------------------------
# the alternating schedule
# ----------------------------------------------------------------------------------------------
def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds = 0.0
            self.steps = 0
            self._t = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t is not None:
                self.seconds += time.perf_counter() - self._t
                self.steps += 1
                self._t = None

    return StepTimer()


def _load_state(out):
    f = Path(out) / STATE_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def _save_model(trainer, tokenizer, path, meta):
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / P.META_FILE, meta)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)


def train_rl(ppg_path, drg_path, critic_path, train_rows, config=None, *, log=None, callbacks=None,
             **kwargs) -> RecipeResult:
    """Alternate RLOO phases on PPG and DRG, starting from the supervised generators in ``ppg_path`` and
    ``drg_path``, with the frozen critic in ``critic_path``, on prompts from ``train_rows``.

    ``config``: a :class:`~hf_persona.training.configs.PPGRLTrainingConfig`, or the output folder (then
    ``kwargs`` are its fields; ``lora_r`` is the older keyword of ``lora``). ``train_ppg=False`` /
    ``train_drg=False`` freeze one generator (the paper's ablation). Re-running with the same
    ``output_dir`` resumes after a kill. ``log``: a function given each progress line (default: the
    logger); ``callbacks``: more ``TrainerCallback``s for every phase.

    Returns a :class:`~hf_persona.training.recipe.RecipeResult` whose summary is the run's state, also
    in ``output_dir/rl_state.json``: ``ppg`` / ``drg`` (the folders of the final generators),
    ``done`` (finished phases), ``phases`` (per phase: steps, seconds, rewards, loss), ``steps``,
    timings and ``config``; its ``model`` is None (the generators are the folders named there).
    """
    import random

    from datasets import Dataset

    from ..rewards.critic import CriticReward, PPGCriticReward
    from ..utils import is_main_process, set_seed
    from .common import last_checkpoint, train_resumable

    cfg = PPGRLTrainingConfig.build(config, **kwargs)
    rounds, steps_per_phase, batch_size, reward_mode = cfg.rounds, cfg.steps_per_phase, cfg.batch_size, cfg.reward_mode
    max_prompt_tokens, seed = cfg.max_prompt_tokens, cfg.seed
    for name, p in (("PPG", ppg_path), ("DRG", drg_path), ("critic", critic_path)):
        if not (Path(str(p)) / "config.json").is_file():
            raise HFPersonaError(f"{name} model folder {str(p)!r} has no config.json (train it first)")
    P.use_omp_threads()
    set_seed(seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorded = ("rounds", "steps_per_phase", "train_ppg", "train_drg", "learning_rate", "batch_size",
                "num_generations", "beta", "normalize_advantages", "reward_mode")
    state = _load_state(out) or {
        "ppg": str(ppg_path), "drg": str(drg_path), "done": [], "train_seconds": 0.0, "reward_seconds": 0.0,
        "steps": 0, "phases": {}, "config": {k: getattr(cfg, k) for k in recorded}}
    schedule = []
    for r in range(rounds):
        if cfg.train_ppg:
            schedule.append((r, D.PPG))
        if cfg.train_drg:
            schedule.append((r, D.DRG))
    critic = P.CriticScorer(critic_path)
    turns = D.build_turns(train_rows, min_context=1, max_context=cfg.max_context)
    rng = random.Random(seed)
    rng.shuffle(turns)
    prompts_per_phase = steps_per_phase * batch_size // cfg.num_generations
    if cfg.max_prompts:
        turns = turns[:cfg.max_prompts]
    say = log or (lambda msg: P._log().info(msg))

    for idx, (r, task) in enumerate(schedule):
        name = f"round{r}-{task}"
        if name in state["done"]:
            continue
        phase_dir = out / name
        phase_dir.mkdir(exist_ok=True)
        # each phase sees fresh prompts (wrapping around the pool)
        lo = (idx * prompts_per_phase) % max(1, len(turns))
        chunk = (turns + turns)[lo:lo + prompts_per_phase] if turns else []
        if not chunk:
            raise HFPersonaError("no RL prompts: the training dialogues gave no turns")
        if task == D.PPG:
            model, tok = P.load_generator(state["ppg"])
            drg_model, drg_tok = P.load_generator(state["drg"])
            drg_max = P.read_meta(state["drg"]).get("max_completion_tokens")
            reward = PPGCriticReward(drg_model, drg_tok, critic, reward_mode, max_new_tokens=drg_max,
                                            max_prompt_tokens=max_prompt_tokens)
            ex = P.task_examples(D.PPG, chunk, tok, max_prompt_tokens)
            ds = Dataset.from_list([{"prompt": e["prompt"], "self_persona": e["self_persona"],
                                     "context": e["context"], "context_speakers": e["context_speakers"]}
                                    for e in ex])
            max_len = P.read_meta(state["ppg"]).get("max_completion_tokens", P.DEFAULT_MAX_COMPLETION_TOKENS[D.PPG])
        else:
            model, tok = P.load_generator(state["drg"])
            cache = phase_dir / "generated_personas.json"
            if cache.is_file():
                personas = json.loads(cache.read_text())
            else:
                ppg_model, ppg_tok = P.load_generator(state["ppg"])
                ppg_max = P.read_meta(state["ppg"]).get("max_completion_tokens")
                _, personas = P.generate_personas(ppg_model, ppg_tok, chunk, max_prompt_tokens, ppg_max)
                del ppg_model
                atomic_write_json(cache, personas)
            reward = CriticReward(critic, reward_mode, persona_column="partner_persona")
            ex = P.task_examples(D.DRG, chunk, tok, max_prompt_tokens, personas)
            ds = Dataset.from_list([{"prompt": e["prompt"], "partner_persona": e["partner_persona"]} for e in ex])
            max_len = P.read_meta(state["drg"]).get("max_completion_tokens", P.DEFAULT_MAX_COMPLETION_TOKENS[D.DRG])
        if len(ds) == 0:
            raise HFPersonaError(f"RL phase {name}: no prompt fits max_prompt_tokens={max_prompt_tokens}; raise it")
        timer = _step_timer()
        trainer = make_rloo_trainer(model, tok, reward, ds, phase_dir / "checkpoints",
                                    dataclasses.replace(cfg, seed=seed + idx), max_completion_length=max_len,
                                    callbacks=[timer, *(callbacks or [])])
        resume = last_checkpoint(phase_dir / "checkpoints")
        say(f"RL phase {name}: {len(ds)} prompts, {steps_per_phase} steps" + (f", resuming {resume}" if resume else ""))
        result = train_resumable(trainer)  # SIGTERM/SIGINT: checkpoint, then stop; the next run resumes
        rewards = [x.get("reward") for x in trainer.state.log_history if "reward" in x]
        final = phase_dir / "final"
        meta = dict(P.read_meta(state[task]))
        meta.update({"rl_phase": name, "rl_steps": trainer.state.global_step})
        _save_model(trainer, tok, final, meta)
        state[task] = str(final)
        state["done"].append(name)
        state["train_seconds"] += timer.seconds
        state["reward_seconds"] += reward.seconds
        state["steps"] += timer.steps
        state["phases"][name] = {"steps": timer.steps, "seconds": timer.seconds, "reward_seconds": reward.seconds,
                                 "mean_train_reward": (sum(rewards) / len(rewards)) if rewards else None,
                                 "train_rewards": rewards, "train_loss": result.training_loss,
                                 "resumed_from": resume}
        atomic_write_json(out / STATE_FILE, state)
        say(f"RL phase {name} done: mean train reward {state['phases'][name]['mean_train_reward']}")
        del trainer, model
    if state["train_seconds"] > 0:
        state["seconds_per_step"] = state["train_seconds"] / max(1, state["steps"])
        state["reward_share"] = state["reward_seconds"] / state["train_seconds"]
    atomic_write_json(out / STATE_FILE, state)
    if cfg.json_out and is_main_process():
        atomic_write_json(cfg.json_out, state)
    return RecipeResult(state, out)
