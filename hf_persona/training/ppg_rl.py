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

import json
import time
from pathlib import Path

from ..data import ppg as D
from ..errors import HFPersonaError
from ..utils import atomic_write_json, moved_names
from . import ppg as P
from .recipe import trainer_arguments

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


def make_rloo_trainer(model, tokenizer, reward, train_dataset, output_dir, *, max_steps, learning_rate=1e-5,
                      batch_size=8, num_generations=2, max_completion_length=32, beta=0.0, temperature=1.0,
                      top_p=0.9, save_steps=10, seed=0, lora_target_modules=None, callbacks=None,
                      normalize_advantages=False, lora_r=8, gradient_checkpointing=None):
    """An ``RLOOTrainer`` (with the adaptation above) for one generator and one reward.

    Prompts in ``train_dataset`` are strings (already rendered with the chat template by
    :func:`hf_persona.training.ppg.task_examples` for chat tokenizers): TRL tokenizes them with
    ``tokenizer(text=prompts)``, the ids :func:`hf_persona.data.ppg.encode_prompt` gives."""
    from trl import RLOOConfig

    if num_generations < 2:
        raise HFPersonaError(f"RLOO needs at least 2 generations per prompt (leave-one-out baseline), got "
                             f"{num_generations}")
    if batch_size % num_generations:
        raise HFPersonaError(f"batch_size ({batch_size}) must be a multiple of num_generations ({num_generations})")
    args = trainer_arguments(
        RLOOConfig, output_dir, batch_size=batch_size, learning_rate=learning_rate, seed=seed, max_steps=max_steps,
        logging_steps=1, save_steps=save_steps,
        num_generations=num_generations,
        max_completion_length=max_completion_length, beta=beta, temperature=temperature, top_p=top_p,
        remove_unused_columns=False,
        normalize_advantages=normalize_advantages,
        # the sequence-level importance ratio exp(sum log p - sum log p_old) explodes when dropout makes the
        # two passes differ; sampling and scoring must use the same (deterministic) policy
        disable_dropout=True,
        **({} if gradient_checkpointing is None else {"gradient_checkpointing": bool(gradient_checkpointing)}),
    )
    peft_config = P.lora_config(lora_target_modules, r=lora_r) if lora_target_modules else None
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


def train_rl(
    ppg_path,
    drg_path,
    critic_path,
    train_rows,
    output_dir,
    *,
    rounds=2,
    steps_per_phase=10,
    train_ppg=True,
    train_drg=True,
    reward_mode="label",
    learning_rate=1e-5,
    batch_size=8,
    num_generations=2,
    beta=0.0,
    temperature=1.0,
    top_p=0.9,
    max_prompt_tokens=P.DEFAULT_MAX_PROMPT_TOKENS,
    max_context=None,
    lora_target_modules=None,
    save_steps=5,
    seed=0,
    max_prompts=None,
    log=None,
    callbacks=None,
    normalize_advantages=False,
    lora_r=8,
    gradient_checkpointing=None,
):
    """Alternate RLOO phases on PPG and DRG; returns the state dict (paths of the final models, timings).

    ``train_ppg=False`` / ``train_drg=False`` freeze one generator (the paper's ablation).
    Re-running with the same ``output_dir`` resumes after a kill.
    """
    import random

    from datasets import Dataset

    from ..rewards.critic import CriticReward, PPGCriticReward
    from ..utils import set_seed
    from .common import last_checkpoint, train_resumable

    if not (train_ppg or train_drg):
        raise HFPersonaError("nothing to train: both train_ppg and train_drg are False")
    if rounds < 1 or steps_per_phase < 1:
        raise HFPersonaError(f"rounds and steps_per_phase must be >= 1, got {rounds} and {steps_per_phase}")
    for name, p in (("PPG", ppg_path), ("DRG", drg_path), ("critic", critic_path)):
        if not (Path(str(p)) / "config.json").is_file():
            raise HFPersonaError(f"{name} model folder {str(p)!r} has no config.json (train it first)")
    P.use_omp_threads()
    set_seed(seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out) or {
        "ppg": str(ppg_path), "drg": str(drg_path), "done": [], "train_seconds": 0.0, "reward_seconds": 0.0,
        "steps": 0, "phases": {}, "config": {"rounds": rounds, "steps_per_phase": steps_per_phase,
                                             "train_ppg": train_ppg, "train_drg": train_drg,
                                             "learning_rate": learning_rate, "batch_size": batch_size,
                                             "num_generations": num_generations, "beta": beta,
                                             "normalize_advantages": normalize_advantages,
                                             "reward_mode": reward_mode}}
    schedule = []
    for r in range(rounds):
        if train_ppg:
            schedule.append((r, D.PPG))
        if train_drg:
            schedule.append((r, D.DRG))
    critic = P.CriticScorer(critic_path)
    turns = D.build_turns(train_rows, min_context=1, max_context=max_context)
    rng = random.Random(seed)
    rng.shuffle(turns)
    prompts_per_phase = steps_per_phase * batch_size // num_generations
    if max_prompts:
        turns = turns[:max_prompts]
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
        trainer = make_rloo_trainer(
            model, tok, reward, ds, phase_dir / "checkpoints", max_steps=steps_per_phase,
            learning_rate=learning_rate, batch_size=batch_size, num_generations=num_generations,
            max_completion_length=max_len, beta=beta, temperature=temperature, top_p=top_p, save_steps=save_steps,
            seed=seed + idx, lora_target_modules=lora_target_modules, callbacks=[timer, *(callbacks or [])],
            normalize_advantages=normalize_advantages, lora_r=lora_r,
            gradient_checkpointing=gradient_checkpointing)
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
    return state
