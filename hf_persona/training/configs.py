"""The settings of every training recipe, one dataclass each, in one place.

Each extends :class:`hf_persona.training.recipe.RecipeConfig` (the fields all recipes share) with the
recipe's own fields and defaults. A field's default is written here and nowhere else: the ``train_*``
functions take these configs (or build them from keyword arguments), and the options of
``hf-persona train <recipe>`` are generated from the fields' metadata
(:func:`hf_persona.commands.options.recipe_options`). This module imports only the standard library, so
the command line can build its options without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import HFPersonaError
from .recipe import NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT, UNIT_OPEN, Range, RecipeConfig, option

COBERT_MODEL_KINDS = ("cobert", "biencoder")


@dataclass(kw_only=True)
class CoBERTTrainingConfig(RecipeConfig):
    """The settings of :func:`train_cobert` (and of ``hf-persona train cobert``, whose options are
    these fields): :class:`~hf_persona.training.recipe.RecipeConfig`'s plus CoBERT's own."""

    backbone: str = field(default="minilm", metadata=option(
        "'minilm' (offline), a Hub id or a local encoder folder.", kind="backbone"))
    model: str = field(default="cobert", metadata=option(
        "cobert (multi-hop co-attention) or biencoder (the baseline).", choices=COBERT_MODEL_KINDS))
    batch_size: int = field(default=16, metadata=option(
        "Rows per step; the other rows are in-batch negatives.", range=POSITIVE_INT))
    gradient_accumulation_steps: int = field(default=1, metadata=option(
        "Gradient accumulation steps.", flag="--grad-accum", range=POSITIVE_INT))
    warmup_steps: int | None = field(default=None, metadata=option(
        "Linear warm-up steps (default: --warmup-ratio of the training steps).", range=NONNEGATIVE_INT))
    warmup_ratio: float = field(default=0.1, metadata=option(
        "Share of the training steps to warm up over, when --warmup-steps is not given.", range=UNIT_OPEN))
    num_negatives: int = field(default=0, metadata=option(
        "Sampled negatives per row on top of the in-batch ones.", range=NONNEGATIVE_INT))
    num_hops: int | None = field(default=None, metadata=option(
        "CoBERT co-attention hops (default: the model's, 2).", range=Range(int, min=1, max=3)))
    hop1_pooling: str | None = field(default=None, metadata=option(
        "CoBERT hop-1 pooling (default: the model's, max).", flag="--pooling", choices=("max", "mean", "max+mean")))
    global_match: bool = field(default=False, metadata=option(
        "CoBERT: also match the mean-pooled states (adds the Bi-encoder's score; not in the paper)."))
    both_sides: bool = field(default=False, metadata=option(
        "Also train on the partner's turns with the partner persona."))
    eval_steps: int | None = field(default=None, metadata=option(
        "Evaluate/checkpoint every N steps (default: each epoch).", range=POSITIVE_INT))
    eval_examples: int = field(default=200, metadata=option(
        "Held-back examples ranked at each evaluation (0: all).", range=NONNEGATIVE_INT, cli=False))
    eval_candidates: int = field(default=20, metadata=option(
        "Candidates per held-back example (Hits@1/N).", range=Range(int, min=2), cli=False))
    save_total_limit: int = field(default=2, metadata=option("Checkpoints kept.", range=POSITIVE_INT, cli=False))
    peft_config: Any = field(default=None, metadata=option(
        "A peft.LoraConfig: only the adapters train.", cli=False))
    merge_adapter: bool = field(default=True, metadata=option(
        "With peft_config: merge the adapters into the encoder before the final save.", cli=False))
    model_kwargs: dict = field(default_factory=dict, metadata=option(
        "Further CoBERTConfig / BiEncoderConfig fields.", cli=False))

    def model_config(self) -> dict:
        """The CoBERTConfig / BiEncoderConfig fields this run sets."""
        chosen = {"num_hops": self.num_hops, "hop1_pooling": self.hop1_pooling,
                  "global_match": self.global_match or None} if self.model == "cobert" else {}
        return {**{k: v for k, v in chosen.items() if v is not None}, **self.model_kwargs}


# ---------------------------------------------------------------------------------------------
# PAL and the persona extractor

PAL_VARIANTS = ("pal", "no_persona", "hard_prompt")


def _rebased(name: str, default, help: str | None = None, **spec):
    """The shared field ``name`` re-declared with another default (and, when given, another help or
    ``cli`` / ``flag``): its check and flag stay :class:`RecipeConfig`'s."""
    base = next(f for f in dataclasses.fields(RecipeConfig) if f.name == name).metadata["option"]
    changes = {"help": help, **spec} if help else spec
    return field(default=default, metadata={"option": dataclasses.replace(base, **changes)})


def _setting(default, help: str, **spec):
    """A recipe field on one line: its default, then :func:`option`'s help and spec."""
    return field(default=default, metadata=option(help, **spec))


@dataclass(kw_only=True)
class PALTrainingConfig(RecipeConfig):
    """The settings of :func:`hf_persona.training.pal.train_pal` (and of ``hf-persona train pal``)."""

    backbone: str = _rebased("backbone", "minilm", (
        "A causal LM (smollm2 = the packaged SmolLM2-135M-Instruct, or a Hub id: PALForCausalLM), a seq2seq Hub "
        "id (facebook/blenderbot_small-90M) or an encoder warm-started as BERT2BERT (minilm)."))
    warmup_steps: int = _rebased("warmup_steps", 100)
    eval_steps: int = _rebased("eval_steps", 100, "Evaluate, and keep a checkpoint, every N steps.")
    lora: int = _rebased("lora", 0, (
        "Causal backbones: train LoRA adapters of this rank (plus the PAL token rows and the fusion module) "
        "instead of all weights; the folder keeps only what differs from the backbone."), cli=True)
    variant: str = field(default="pal", metadata=option(
        "pal (persona fused by co-attention), no_persona, hard_prompt (persona text before the dialogue).",
        choices=PAL_VARIANTS))
    mixture_learning_rate: float | None = field(default=1e-2, metadata=option(
        "Learning rate of the three eq. 4 mixture logits (None: learning_rate).", flag="--mixture-lr", range=POSITIVE))
    mixture_init: Any = field(default=None, metadata=option(
        "Initial eq. 4 logits (w1, w2, w3) for (H^_D, aligned H^_P, H_D); None: 0,0,0 (the paper)."))
    fusion_norm_init: str | None = field(default=None, metadata=option(
        "Seq2seq backbones: start the two co-attention LayerNorms fresh (default, the paper's code) or as a "
        "copy of the encoder's last one.", choices=("fresh", "encoder")))
    persona_alignment: str | None = field(default=None, metadata=option(
        "Seq2seq backbones: how the refined persona meets the decoder: carried onto dialogue positions by the "
        "eq. 2 attention (default), or appended as extra keys.", choices=("coattention", "concat")))
    fusion_layer: int | None = field(default=None, metadata=option(
        "Causal backbones: the decoder layer whose output PAL fuses (-1 = the last, the default).", range=Range(int)))
    max_train_examples: int | None = field(default=None, metadata=option(
        "Train on at most N examples (shuffled first).", range=POSITIVE_INT))
    max_eval_examples: int = _setting(200, "Validation examples for the loss.", range=POSITIVE_INT)
    max_source_length: int = _setting(256, "Dialogue tokens kept (the latest).", range=POSITIVE_INT)
    max_persona_length: int = _setting(96, "Persona tokens kept.", range=POSITIVE_INT)
    max_target_length: int = _setting(50, "Response tokens kept.", range=POSITIVE_INT)
    warm_start: bool = field(default=True, metadata=option(
        "BERT2BERT backbones: start the cross-attention as a copy of the self-attention.", cli=False))

    def __post_init__(self):
        super().__post_init__()
        init = self.mixture_init
        if init is not None and not (isinstance(init, (list, tuple)) and len(init) == 3
                                     and all(map(Range(float).accepts, init))):
            raise HFPersonaError(f"PALTrainingConfig.mixture_init = {init!r}: expected three finite numbers "
                                 "(the eq. 4 logits w1, w2, w3)")


@dataclass(kw_only=True)
class PersonaExtractorTrainingConfig(RecipeConfig):
    """The settings of :func:`hf_persona.training.persona_extractor.train_persona_extractor` (and of
    ``hf-persona train persona-extractor``)."""

    backbone: str = _rebased("backbone", "minilm", (
        "A causal LM (smollm2 = the packaged SmolLM2-135M-Instruct, or a Hub id), a Hub seq2seq id "
        "(facebook/bart-large-cnn), or an encoder (minilm) warm-started as BERT2BERT."))
    epochs: float = _rebased("epochs", 3.0)
    warmup_steps: int = _rebased("warmup_steps", 50, "Linear learning-rate warm-up.")
    eval_steps: int = _rebased("eval_steps", 100, "Evaluate and checkpoint every N steps.")
    lora: int = _rebased("lora", 0, (
        "Causal LM backbones: train LoRA adapters of this rank instead of all weights (0: all weights); "
        "the folder keeps the adapter alone (a few MB)."), cli=True)
    dev_from: int = field(default=800, metadata=option(
        "PERSONA-CHAT dialogues from this index on (and MSC episodes built on them) are held back.",
        range=POSITIVE_INT))
    max_source_length: int = _setting(256, "Source tokens kept (the latest utterances).", range=POSITIVE_INT)
    max_target_length: int = _setting(64, "Target (persona) tokens.", range=POSITIVE_INT)
    num_beams: int = _setting(4, "Beams for the final generation-based evaluation.", range=POSITIVE_INT)
    min_support: float = field(default=0.0, metadata=option(
        "Train only on persona sentences sharing at least this share of their content words with the "
        "speaker's utterances (0: all, the paper; 0.5 teaches restating over inventing).", range=UNIT))
    eval_generation_examples: int = field(default=100, metadata=option(
        "Held-back examples for BLEU/ROUGE/Distinct (0: skip).", flag="--eval-examples", range=NONNEGATIVE_INT))
    report_eval: bool = field(default=True, metadata=option(
        "Run the generation-based evaluation at the end.", cli=False))
    merge: bool = field(default=False, metadata=option(
        "With --lora: save the merged full model instead of the adapter."))
    max_dev_examples: int = _setting(200, "Held-back examples for the dev loss.", range=POSITIVE_INT)
    max_train_examples: int | None = field(default=None, metadata=option(
        "Train on at most N examples (shuffled first).", range=POSITIVE_INT))


# ---------------------------------------------------------------------------------------------
# P2Bot: the Receiver, the supervised Transmitter and self-play

P2BOT_LEARNING_RATE = 6.25e-5  # the paper's, for the Receiver and the supervised Transmitter
RECEIVER_LOSSES = ("margin", "softmax")  # hf_persona.models.receiver.configuration_receiver.LOSS_TYPES
SELFPLAY_BASELINES = ("mean", "leave_one_out")


@dataclass(kw_only=True)
class P2BotTrainingConfig(RecipeConfig):
    """What P2Bot's three recipes share: the paper's learning rate."""

    output_dir: str | Path = _rebased("output_dir", dataclasses.MISSING, "Checkpoints and the final model.")
    learning_rate: float = _rebased("learning_rate", P2BOT_LEARNING_RATE)


@dataclass(kw_only=True)
class ReceiverTrainingConfig(P2BotTrainingConfig):
    """The settings of :func:`hf_persona.training.receiver.train_receiver` (and of ``hf-persona train
    receiver``). ``warmup_steps`` > 0 wins over ``warmup_ratio``; ``progress=None`` keeps the Trainer's
    default; ``training_args``: further ``TrainingArguments`` fields."""

    renamed: ClassVar[dict] = {"num_train_epochs": "epochs", "time_budget_minutes": "budget_minutes",
                               "disable_tqdm": "progress"}
    unused: ClassVar[tuple] = ("lora",)

    backbone: str = _rebased("backbone", "minilm", "'minilm', a Hub id, a local encoder or a saved Receiver.")
    batch_size: int = _rebased("batch_size", 16)
    eval_steps: int | None = _rebased("eval_steps", None, "Evaluate/checkpoint every N steps (default: 4 per run).")
    progress: bool | None = _rebased("progress", None)
    share_encoders: bool = _setting(True, "One encoder with segment ids (authors' code), or separate impression "
                                          "and persona encoders (paper).", flag="--share-encoders/--separate-encoders")
    negatives: str = _setting("sampled", "One sampled distractor persona per example (paper) or every other "
                                         "persona in the batch.", choices=("sampled", "in_batch"))
    max_train_utterances: int | None = _setting(
        None, "Train on a random subset of at most N utterances per side (cheaper steps).", range=POSITIVE_INT)
    freeze_layers: int = _setting(0, "Freeze the embeddings and the N lowest encoder layers.", range=NONNEGATIVE_INT)
    allow_shared_sentences: bool = _setting(
        False, "Let a distractor persona share sentences with the true one (older behaviour; by default such "
               "personas are versions of the same persona and are never distractors).")
    margin: float = _setting(0.4, "Margin m of the hinge loss.", range=NONNEGATIVE)
    l1_weight: float = _setting(1e-4, "β, the weight of the L1 norm of the relevance grid.", range=NONNEGATIVE)
    loss_type: str = _setting("margin", "The paper's hinge loss, or cross-entropy of the true persona among the "
                                        "distractors.", flag="--loss", choices=RECEIVER_LOSSES)
    loss_temperature: float = _setting(0.1, "Temperature of the softmax loss.", range=POSITIVE)
    tau_start: float = _setting(10.0, "τ at the first step (annealed linearly to --tau-end).", range=POSITIVE)
    tau_end: float = _setting(0.5, "τ at the last step, and of the saved model.", range=POSITIVE)
    max_utterance_length: int = _setting(64, "Tokens kept per utterance.", range=POSITIVE_INT, cli=False)
    max_persona_length: int = _setting(32, "Tokens kept per persona sentence.", range=POSITIVE_INT, cli=False)
    sides: tuple = _setting(("you", "partner"), "PERSONA-CHAT speakers whose sides train.", cli=False)
    eval_negatives: int = _setting(7, "Distractors per dev example for hits_at_1.", range=POSITIVE_INT, cli=False)
    save_steps: int | None = _setting(None, "Checkpoint every N steps (default: --eval-steps).", range=POSITIVE_INT,
                                      cli=False)
    warmup_ratio: float = _setting(0.0, "Share of the steps to warm up over.", range=UNIT_OPEN, cli=False)
    peft_config: Any = _setting(None, "A peft.LoraConfig: only the adapters train.", cli=False)
    merge_adapter: bool = _setting(True, "With peft_config: merge the adapters before the final save.", cli=False)
    training_args: dict = field(default_factory=dict, metadata=option("Other TrainingArguments fields.", cli=False))


@dataclass(kw_only=True)
class P2BotDialogueConfig(P2BotTrainingConfig):
    """What the Transmitter's two recipes share: PERSONA-CHAT dialogues before ``dev_from`` (of a file;
    None: all), no progress bar by default."""

    progress: bool = _rebased("progress", False)
    dev_from: int | None = _setting(800, "Dialogues from this index on are held out.", range=POSITIVE_INT)


@dataclass(kw_only=True)
class TransmitterTrainingConfig(P2BotDialogueConfig):
    """The settings of :func:`hf_persona.training.transmitter.train_transmitter` (and of ``hf-persona train
    transmitter``). ``backbone`` may also be a trained Transmitter folder (training goes on from it)."""

    unused: ClassVar[tuple] = ("eval_steps",)

    backbone: str = _rebased("backbone", "minilm", (
        "minilm (offline, BERT as decoder), smollm2 (offline, chat format), openai-gpt, gpt2, "
        "microsoft/DialoGPT-small, or a path."))
    epochs: float = _rebased("epochs", 2.0)
    lora: int = _rebased("lora", 0, (
        "LoRA rank on every linear layer of the backbone (0: full fine-tuning); the merged model is saved, the "
        "adapter kept in OUTPUT_DIR/adapter."), cli=True)
    gradient_accumulation_steps: int = _setting(1, "Batches summed into one optimiser step.", range=POSITIVE_INT)
    both_sides: bool = _setting(True, "Also train on the partner's turns (with the partner persona).", cli=False)
    lm_weight: float = _setting(0.6, "w in w·LM + (1-w)·NUP.", range=UNIT)
    label_smoothing: float = _setting(0.05, "Label smoothing of the LM loss.", range=UNIT_OPEN)
    max_context_tokens: int = _setting(256, "Persona and history tokens kept (the latest).", range=POSITIVE_INT)
    max_response_tokens: int = _setting(32, "Response tokens kept.", range=POSITIVE_INT, cli=False)
    save_steps: int = _setting(200, "Checkpoint every N steps.", range=POSITIVE_INT)


@dataclass(kw_only=True)
class SelfPlayTrainingConfig(P2BotDialogueConfig):
    """The settings of :func:`hf_persona.training.selfplay.train_selfplay` (and of ``hf-persona train
    selfplay``): a step plays ``seeds_per_step × episodes_per_seed`` episodes of ``turns`` agent turns (its
    batch), from the supervised Transmitter the function is given (so no ``backbone`` either)."""

    unused: ClassVar[tuple] = ("backbone", "epochs", "batch_size", "eval_steps", "lora")

    learning_rate: float = _rebased("learning_rate", 1e-6)
    max_steps: int = _rebased("max_steps", 1000, "Optimisation steps.", range=POSITIVE_INT)
    logging_steps: int = _rebased("logging_steps", 1)
    weights: dict | None = _setting(None, "Reward weights λ by name (default: the paper's).", cli=False)
    baseline: str = _setting("mean", "The baseline of the policy gradient.", choices=SELFPLAY_BASELINES)
    turns: int = _setting(3, "Agent turns per episode.", range=POSITIVE_INT)
    episodes_per_seed: int = _setting(2, "Episodes per seed dialogue (one baseline group).", range=POSITIVE_INT)
    seeds_per_step: int = _setting(1, "Seed dialogues per optimisation step.", range=POSITIVE_INT, cli=False)
    gamma: float = _setting(0.5, "γ, the discount of RS.3 over the episode.", range=UNIT)
    kl_beta: float = _setting(0.0, "KL penalty to the frozen supervised model (0: the paper's plain policy "
                                   "gradient).", range=NONNEGATIVE)
    mask_truncated: bool = _setting(False, "Leave agent turns cut at the token limit (no <eos>) out of the loss.")
    sft_weight: float = _setting(0.0, "Weight of the supervised loss on real turns added to every update (0: the "
                                      "paper's objective).", range=NONNEGATIVE)
    sft_batch_size: int = _setting(8, "Real turns per update for --sft-weight.", range=POSITIVE_INT)
    save_steps: int = _setting(20, "Checkpoint every N steps.", range=POSITIVE_INT)
    language_model: str | None = _setting(None, "Causal LM for RS.1 (default: the frozen supervised model).",
                                          kind="backbone")
    max_new_tokens: int = _setting(32, "Tokens per agent turn at the most.", range=POSITIVE_INT, cli=False)


# ---------------------------------------------------------------------------------------------
# PPG: the supervised generators (PPG and DRG), the critic, and RL on both generators

PPG_TASKS = ("ppg", "drg")  # hf_persona.data.ppg.PPG, DRG
PPG_MAX_PROMPT_TOKENS = 192
PPG_MAX_COMPLETION_TOKENS = {"ppg": 48, "drg": 32}


@dataclass(kw_only=True)
class PPGRecipeConfig(RecipeConfig):
    """What the PPG recipes share: a checkpoint every ``save_steps`` steps, a log line every 20 steps,
    no progress bar; ``base`` is the older keyword of ``backbone``."""

    renamed: ClassVar[dict] = {"base": "backbone"}
    unused: ClassVar[tuple] = ("eval_steps",)  # no evaluation while training

    output_dir: str = _rebased("output_dir", dataclasses.MISSING, "Checkpoints (in checkpoints/), the final model and "
                                                                  "its summary, ppg_meta.json.")
    logging_steps: int = _rebased("logging_steps", 20)
    progress: bool = _rebased("progress", False)
    save_steps: int = _setting(200, "Checkpoint every N steps.", range=POSITIVE_INT)


@dataclass(kw_only=True)
class PPGGeneratorConfig(PPGRecipeConfig):
    """What the generator recipes share (supervised and RL): prompt length, context, LoRA (on the
    ``lora_target_modules``, a list or a comma-separated string, at rank ``lora``; merged at save)."""

    renamed: ClassVar[dict] = {"base": "backbone", "lora_r": "lora"}

    lora: int = _rebased("lora", 8, "LoRA rank (alpha = 2 x rank) of the --lora adapters.", flag="--lora-r",
                         range=POSITIVE_INT, cli=True)
    max_prompt_tokens: int = _setting(PPG_MAX_PROMPT_TOKENS, "Prompt tokens (the oldest context goes first).",
                                      range=POSITIVE_INT)
    max_context: int | None = _setting(None, "Keep at most the last N context utterances.", range=POSITIVE_INT)
    lora_target_modules: list | None = _setting(
        None, "Train LoRA adapters on these comma-separated modules (merged at save), e.g. q_proj,k_proj,v_proj,o_proj "
              "for smollm2.", flag="--lora", kind="modules")
    gradient_checkpointing: bool | None = _setting(None, "Recompute activations (None: TRL's default, on).", cli=False)

    def __post_init__(self):
        given = self.lora_target_modules
        if isinstance(given, str):
            self.lora_target_modules = [m.strip() for m in given.split(",") if m.strip()]
        elif isinstance(given, (list, tuple)):
            self.lora_target_modules = list(given)
        modules = self.lora_target_modules
        if modules is not None and not (isinstance(modules, list) and modules
                                        and all(isinstance(m, str) and m.strip() for m in modules)):
            raise HFPersonaError(f"{type(self).__name__}.lora_target_modules = {given!r}: expected module names, "
                                 "e.g. ['q_proj', 'v_proj'] or 'q_proj,v_proj'")
        super().__post_init__()


@dataclass(kw_only=True)
class GeneratorTrainingConfig(PPGGeneratorConfig):
    """The settings of :func:`hf_persona.training.ppg.train_generator` (and of ``hf-persona train ppg`` /
    ``train drg``, which set ``task``). ``eval_steps`` does not apply (no evaluation while training).
    From Python, ``partner_persona`` may also be a list with one persona (list of sentences) per turn."""

    task: str = _setting("ppg", "ppg: (self persona, context) -> partner persona; drg: (self persona, partner "
                                "persona, context) -> response.", choices=PPG_TASKS, cli=False)
    epochs: float = _rebased("epochs", 2.0, "Training epochs (when --max-steps is -1); the paper: 2.")
    learning_rate: float = _rebased("learning_rate", 1e-4)
    partner_persona: str | list = _setting("gold", "DRG: the gold partner persona in the prompt: all sentences, or "
                                                   "the BM25 top-3 (the paper's baseline).", choices=("gold", "bm25"))
    max_completion_tokens: int | None = _setting(None, "Completion tokens (default: 48 for PPG, 32 for DRG).",
                                                 range=POSITIVE_INT)
    num_layers: int | None = _setting(None, "Keep the first N layers of a BERT backbone (a cheaper warm start).",
                                      range=POSITIVE_INT)

    def __post_init__(self):
        personas = self.partner_persona
        if isinstance(personas, (list, tuple)):  # one per turn: data, matched to the turns when they are built
            self.partner_persona = "gold"
        super().__post_init__()
        self.partner_persona = personas

    def completion_tokens(self) -> int:
        """``max_completion_tokens``, or the task's default."""
        return self.max_completion_tokens or PPG_MAX_COMPLETION_TOKENS[self.task]


@dataclass(kw_only=True)
class CriticTrainingConfig(PPGRecipeConfig):
    """The settings of :func:`hf_persona.training.ppg.train_critic` (and of ``hf-persona train critic``).
    ``warmup_steps`` > 0 wins over ``warmup_ratio``; ``eval_steps`` does not apply (the dev accuracy is
    measured once, on the saved critic)."""

    backbone: str = _rebased("backbone", "minilm", "'minilm', distilbert-base-uncased, a Hub id or a local encoder "
                                                   "(a 2-label classifier starts from it).")
    learning_rate: float = _rebased("learning_rate", 2e-5)
    batch_size: int = _rebased("batch_size", 32, "(persona, response) pairs per optimiser step and process.")
    max_length: int = _setting(128, "Word pieces per (persona, response) pair; too few cut the persona off.",
                               range=POSITIVE_INT)
    warmup_ratio: float = _setting(0.06, "Linear warm-up, fraction of the steps (when --warmup-steps is 0).",
                                   range=UNIT_OPEN)
    max_dev_pairs: int = _setting(2000, "Held-back (persona, response) pairs scored for the dev accuracy.",
                                  range=POSITIVE_INT)
    num_layers: int | None = _setting(None, "Keep the first N encoder layers.", range=POSITIVE_INT)


@dataclass(kw_only=True)
class PPGRLTrainingConfig(PPGGeneratorConfig):
    """The settings of :func:`hf_persona.training.ppg_rl.train_rl` (and of ``hf-persona train ppg-rl``):
    ``rounds`` x (a PPG phase, then a DRG phase) of ``steps_per_phase`` RLOO steps each, from the
    generators the function is given. :class:`RecipeConfig`'s ``backbone``, ``epochs``, ``max_steps``,
    ``budget_minutes``, ``warmup_steps``, ``eval_steps`` and ``resume`` do not apply (a re-run always
    resumes after the last finished phase)."""

    unused: ClassVar[tuple] = ("backbone", "epochs", "max_steps", "budget_minutes", "warmup_steps", "eval_steps",
                               "resume")

    output_dir: str = _rebased("output_dir", dataclasses.MISSING, "A folder per phase (roundR-ppg, roundR-drg: "
                                                                  "checkpoints, final model) and rl_state.json.")
    batch_size: int = _rebased("batch_size", 8, "Completions per step (prompts x generations); a multiple of "
                                                "--num-generations.")
    learning_rate: float = _rebased("learning_rate", 1e-5, "Learning rate (the paper: 5e-6, Adam).")
    logging_steps: int = _rebased("logging_steps", 1)
    save_steps: int = _setting(5, "Checkpoint every N steps of a phase.", range=POSITIVE_INT)
    rounds: int = _setting(2, "Alternations of a PPG phase and a DRG phase.", range=POSITIVE_INT)
    steps_per_phase: int = _setting(10, "RLOO steps per phase.", range=POSITIVE_INT)
    train_ppg: bool = _setting(True, "Update the PPG (False: it stays frozen, the paper's ablation).", cli=False)
    train_drg: bool = _setting(True, "Update the DRG (False: it stays frozen).", cli=False)
    reward_mode: str = _setting("label", "The critic's reward: +1/-1 from its label (the paper) or its probability.",
                                choices=("label", "prob"))
    num_generations: int = _setting(2, "Samples per prompt (RLOO needs at least 2).", range=Range(int, min=2))
    beta: float = _setting(0.0, "KL penalty to the phase's starting model (0: none).", range=NONNEGATIVE)
    temperature: float = _setting(1.0, "Sampling temperature.", range=POSITIVE)
    top_p: float = _setting(0.9, "Nucleus sampling: the probability mass kept.", range=Range(float, 0, 1, True))
    max_prompts: int | None = _setting(None, "Draw the prompts from the first N shuffled turns.", range=POSITIVE_INT)
    normalize_advantages: bool = _setting(False, "Divide the RLOO advantages by their standard deviation.")

    def __post_init__(self):
        super().__post_init__()
        name = type(self).__name__
        if not (self.train_ppg or self.train_drg):
            raise HFPersonaError(f"{name}: nothing to train: both train_ppg and train_drg are False")
        if self.batch_size % self.num_generations:
            raise HFPersonaError(f"{name}.batch_size = {self.batch_size}: expected a multiple of num_generations "
                                 f"({self.num_generations})")
