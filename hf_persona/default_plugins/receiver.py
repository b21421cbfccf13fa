"""P2Bot's Receiver as a built-in plugin: the model, the ``persona_perception`` reward and the CLI
commands ``hf-persona train receiver``, ``hf-persona eval receiver`` and ``hf-persona receiver heatmap``.

Heavy imports (torch, transformers, matplotlib) happen inside the functions so that
``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import click

from hf_persona import hookimpl
from hf_persona.errors import HFPersonaError


# ----------------------------------------------------------------------------- models
@hookimpl
def register_models(register):
    from hf_persona.models.receiver import ReceiverConfig, ReceiverModel

    register("receiver", ReceiverConfig, ReceiverModel, auto_class="AutoModel")


# ----------------------------------------------------------------------------- reward
def discounted_returns(own_scores: Sequence[float], partner_scores: Sequence[float], gamma: float = 0.5) -> list[float]:
    """P2Bot RS.3 (eq. 8) for every own turn of one dialogue.

    The dialogue runs ``x_1, a_1, x_2, a_2, ..., x_N, a_N`` (partner turn ``x_k`` before own turn
    ``a_k``). ``own_scores[k]`` is ``r(a_{k+1})`` (own turn against own persona), ``partner_scores[k]``
    is ``r(x_{k+1})`` (partner turn against the partner's persona; the first one is never used, and
    ``partner_scores`` may be one shorter than ``own_scores``, aligned at the start). Returns

        R3(a_n) = r(a_n) + Σ_{k>n} (γ^{2(k-n)-1} · r(x_k) + γ^{2(k-n)} · r(a_k)).
    """
    if not 0 <= gamma <= 1:
        raise HFPersonaError(f"gamma must lie in [0, 1], got {gamma}")
    own = [float(x) for x in own_scores]
    partner = [float(x) for x in partner_scores]
    if len(partner) not in (len(own), len(own) - 1) and own:
        raise HFPersonaError(
            f"partner_scores must have as many turns as own_scores ({len(own)}) or one fewer, got {len(partner)}"
        )
    out = []
    for n in range(len(own)):
        total = own[n]
        for k in range(n + 1, len(own)):
            if k < len(partner):
                total += gamma ** (2 * (k - n) - 1) * partner[k]
            total += gamma ** (2 * (k - n)) * own[k]
        out.append(total)
    return out


def _text_of(value, what: str, index: int) -> str:
    """A completion/turn as text: a string, or TRL conversational messages (their contents joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        return str(value["content"])
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in value):
        return " ".join(str(m["content"]) for m in value if m.get("role", "assistant") == "assistant") or " ".join(
            str(m["content"]) for m in value
        )
    raise HFPersonaError(
        f"persona_perception: {what} #{index} is {type(value).__name__}; expected a string or a list of "
        "{'role', 'content'} messages"
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _persona_of(value, column: str, index: int) -> list[str]:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split("\n") if p.strip()]
        if len(parts) <= 1:
            parts = [p.strip() for p in _SENTENCE_END.split(value) if p.strip()]
        value = parts
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise HFPersonaError(
            f"persona_perception: column {column!r} row {index} must be a list of persona sentences (or one "
            f"string), got {type(value).__name__}"
        )
    value = [s for s in value if s.strip()]
    if not value:
        raise HFPersonaError(f"persona_perception: column {column!r} row {index} has no persona sentence")
    return list(value)


def load_receiver(model, device=None):
    """A Receiver from a :class:`ReceiverModel`, a saved Receiver folder / Hub id, or a plain encoder.

    A plain encoder (``"minilm"``, ``bert-base-uncased`` ...) gives an *untrained* zero-shot Receiver
    (shared encoder, no segment ids) and logs a warning.
    """
    import json

    from hf_persona.backbones import resolve
    from hf_persona.models.receiver import ReceiverModel
    from hf_persona.utils import get_logger

    if model is None:
        raise HFPersonaError("persona_perception needs model=<Receiver folder, Hub id or ReceiverModel>")
    if isinstance(model, ReceiverModel) or getattr(model, "_is_p2bot_receiver", False):
        receiver = model
    elif isinstance(model, (str, Path)):
        source = resolve(str(model))
        config_file = Path(source) / "config.json"
        is_receiver = True
        if config_file.is_file():
            try:
                is_receiver = json.loads(config_file.read_text()).get("model_type") == "p2bot_receiver"
            except ValueError as err:
                raise HFPersonaError(f"{config_file} is not valid JSON: {err}") from err
        if is_receiver:
            receiver = ReceiverModel.from_pretrained(source)
        else:
            get_logger(__name__).warning(
                "persona_perception: %s is a plain encoder, not a trained Receiver; scoring zero-shot", source
            )
            receiver = ReceiverModel.from_encoder_pretrained(source, share_encoders=True, segment_ids=False)
        receiver.requires_grad_(False)
    else:
        raise HFPersonaError(
            f"persona_perception: model must be a ReceiverModel, a folder or a Hub id, got {type(model).__name__}"
        )
    if device is not None:
        receiver.to(device)
    receiver.eval()
    return receiver


class PersonaPerceptionReward:
    """TRL-style reward ``f(prompts, completions, **columns) -> list[float]`` (see :func:`persona_perception`)."""

    __name__ = "persona_perception"

    def __init__(
        self,
        receiver,
        tokenizer=None,
        persona_column: str = "persona",
        mode: str = "turn",
        gamma: float = 0.5,
        future_column: str = "future_turns",
        partner_persona_column: str = "partner_persona",
        batch_size: int = 256,
    ):
        if mode not in ("turn", "discounted"):
            raise HFPersonaError(f"persona_perception: mode must be 'turn' or 'discounted', got {mode!r}")
        if not 0 <= gamma <= 1:
            raise HFPersonaError(f"persona_perception: gamma must lie in [0, 1], got {gamma}")
        self.receiver, self.tokenizer = receiver, tokenizer
        self.persona_column, self.mode, self.gamma = persona_column, mode, float(gamma)
        self.future_column, self.partner_persona_column = future_column, partner_persona_column
        self.batch_size = batch_size

    def _column(self, columns, name, n):
        if name not in columns:
            raise HFPersonaError(
                f"persona_perception: the dataset has no column {name!r} (columns given: {sorted(columns)}); "
                f"set the matching *_column option"
            )
        values = columns[name]
        if len(values) != n:
            raise HFPersonaError(f"persona_perception: column {name!r} has {len(values)} rows for {n} completions")
        return values

    def __call__(self, prompts=None, completions=None, **columns) -> list[float]:
        if completions is None:
            raise HFPersonaError("persona_perception: no completions given")
        n = len(completions)
        if n == 0:
            return []
        texts = [_text_of(c, "completion", i) for i, c in enumerate(completions)]
        personas = [_persona_of(p, self.persona_column, i) for i, p in enumerate(self._column(columns, self.persona_column, n))]
        # Every (utterance, persona) pair of the batch is scored in one call: one encoder pass over the
        # distinct utterances and one over the distinct persona sentences.
        pair_texts, pair_personas = [[t] for t in texts], list(personas)
        plan = []  # per completion: list of (pair index, discount)
        for i in range(n):
            plan.append([(i, 1.0)])
        if self.mode == "discounted":
            futures = self._column(columns, self.future_column, n)
            partner_personas = None
            for i, future in enumerate(futures):
                future = [] if future is None else list(future)
                for j, turn in enumerate(future):
                    if j % 2 == 0:  # partner turn: scored against the partner's persona
                        if partner_personas is None:
                            partner_personas = self._column(columns, self.partner_persona_column, n)
                        persona = _persona_of(partner_personas[i], self.partner_persona_column, i)
                    else:
                        persona = personas[i]
                    pair_texts.append([_text_of(turn, self.future_column, i)])
                    pair_personas.append(persona)
                    plan[i].append((len(pair_texts) - 1, self.gamma ** (j + 1)))
        scores = self.receiver.utterance_scores_batch(
            pair_texts, pair_personas, tokenizer=self.tokenizer, batch_size=self.batch_size
        )
        return [float(sum(w * scores[idx][0] for idx, w in steps)) for steps in plan]


def persona_perception(
    model=None,
    *,
    tokenizer=None,
    persona_column: str = "persona",
    mode: str = "turn",
    gamma: float = 0.5,
    future_column: str = "future_turns",
    partner_persona_column: str = "partner_persona",
    batch_size: int = 256,
    device=None,
):
    """Reward factory for ``hf_persona.get_reward("persona_perception", model=..., ...)``.

    Returns a TRL reward function ``reward(prompts, completions, **columns) -> list[float]`` that
    scores every completion with P2Bot's Receiver against the speaker's persona.

    Options:
        model: a trained Receiver — a :class:`~hf_persona.models.receiver.ReceiverModel`, a folder
            saved by ``hf-persona train receiver`` / ``save_pretrained``, or a Hub id. A plain encoder
            (``"minilm"``, ``"bert-base-uncased"``) gives an untrained zero-shot Receiver (warning logged).
        tokenizer: tokenizer to use (default: the one saved with the Receiver).
        persona_column: dataset column with the speaker's persona, a list of sentences per row (one
            string is split on newlines, else on sentence ends). Default ``"persona"``.
        mode: ``"turn"`` (default): the reward is the Receiver's per-utterance score of the completion,
            ``Agg(H_n·Wᵀ)/√d`` (paper eq. 15). ``"discounted"``: P2Bot's RS.3 (eq. 8); the column
            ``future_column`` holds the turns that followed the completion in the (self-play) dialogue,
            alternating partner / self starting with the partner, ``[x_{n+1}, a_{n+1}, x_{n+2}, ...]``;
            future turn ``j`` (0-based) adds ``γ^{j+1}`` times its score, partner turns scored against
            ``partner_persona_column`` and own turns against ``persona_column``. An empty list gives the
            plain turn score.
        gamma: discount γ of RS.3 (paper: 0.5).
        future_column / partner_persona_column: column names for the discounted form.
        batch_size: sentences per encoder call; every call of the reward scores all its pairs
            together (each distinct string encoded once), so a batch of up to ``batch_size`` distinct
            utterances costs one encoder pass per side.
        device: where to run the Receiver (default: where it is).

    Scores are unbounded real numbers (scaled dot products of sentence encodings); weight them in
    your RL reward mix (P2Bot: λ3 = 0.5 on RS.3).
    """
    receiver = load_receiver(model, device=device)
    return PersonaPerceptionReward(
        receiver,
        tokenizer=tokenizer,
        persona_column=persona_column,
        mode=mode,
        gamma=gamma,
        future_column=future_column,
        partner_persona_column=partner_persona_column,
        batch_size=batch_size,
    )


@hookimpl
def register_rewards(register):
    register("persona_perception", persona_perception)


# ----------------------------------------------------------------------------- heat-map
def render_relevance_heatmap(U, utterances: Sequence[str], persona: Sequence[str], out, title: str | None = None) -> Path:
    """Draw the relevance grid ``U`` (utterances × persona sentences) as a labelled PNG (paper Figure 6)."""
    import io
    import textwrap

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hf_persona.utils import atomic_write_bytes

    U = np.asarray(U, dtype=float)
    if U.shape != (len(utterances), len(persona)):
        raise HFPersonaError(
            f"relevance grid has shape {U.shape} but there are {len(utterances)} utterances and {len(persona)} persona sentences"
        )

    def label(text):
        return "\n".join(textwrap.wrap(textwrap.shorten(text, 90, placeholder=" …"), 40)) or "(empty)"

    width = 3.5 + 1.6 * len(persona)
    height = 1.5 + 0.75 * len(utterances)
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(U, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(persona)))
    ax.set_xticklabels([label(p) for p in persona], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(utterances)))
    ax.set_yticklabels([label(u) for u in utterances], fontsize=8)
    ax.set_xlabel("persona sentence")
    ax.set_ylabel("utterance")
    span = (U.max() - U.min()) or 1.0
    for i in range(U.shape[0]):
        for j in range(U.shape[1]):
            dark = (U[i, j] - U.min()) / span > 0.6
            ax.text(j, i, f"{U[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="relevance U = H·Wᵀ/√d")
    ax.set_title(title or "Receiver relevance scores")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out


# ----------------------------------------------------------------------------- CLI helpers
def _split_name(path: str) -> str:
    stem = Path(path).name.lower()
    for name in ("revised", "original", "self", "other", "none"):
        if name in stem:
            return name
    return Path(path).stem


def _load_splits(data: Sequence[str], first: int | None, dev_fraction: float | None, seed: int):
    """Read each data file and split it by dialogue into (train, dev); the embedded sample when empty."""
    from hf_persona.data import read_dialogues, sample_path, split_by_dialogue

    paths = list(data) or [str(sample_path("personachat"))]
    out = []
    for path in paths:
        _, ds = read_dialogues(path)
        if first is not None:
            train, dev = split_by_dialogue(ds, first=first)
        else:
            train, dev = split_by_dialogue(ds, test_fraction=dev_fraction or 0.2, seed=seed)
        out.append((_split_name(path), train, dev))
    return out


@hookimpl
def register_commands(cli):
    train_group = cli.commands["train"]
    eval_group = cli.commands["eval"]

    @train_group.command("receiver")
    @click.option("--data", "data", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="PERSONA-CHAT / MSC file(s); repeat for original + revised (distractors never cross files). "
                       "Default: the embedded sample.")
    @click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Where the model is saved.")
    @click.option("--backbone", default="minilm", show_default=True, help="'minilm', a Hub id or a local encoder.")
    @click.option("--first", type=int, default=None, help="Train on the first N dialogues of each file, validate on the rest.")
    @click.option("--dev-fraction", type=float, default=None, help="Else hold out this seeded fraction (default 0.2).")
    @click.option("--max-steps", type=int, default=-1, show_default=True, help="Optimizer steps (-1: use --epochs).")
    @click.option("--epochs", type=float, default=1.0, show_default=True)
    @click.option("--batch-size", type=int, default=16, show_default=True)
    @click.option("--lr", type=float, default=6.25e-5, show_default=True)
    @click.option("--separate-encoders", is_flag=True, help="Separate impression and persona encoders (paper) "
                  "instead of one shared encoder with segment ids (authors' code).")
    @click.option("--negatives", type=click.Choice(["sampled", "in_batch"]), default="sampled", show_default=True,
                  help="One sampled distractor persona per example (paper) or every other persona in the batch.")
    @click.option("--max-train-utterances", type=int, default=None,
                  help="Train on a random subset of at most N utterances per side (cheaper steps).")
    @click.option("--freeze-layers", type=int, default=0, show_default=True,
                  help="Freeze the embeddings and the N lowest encoder layers.")
    @click.option("--allow-shared-sentences", is_flag=True,
                  help="Let a distractor persona share sentences with the true one (older behaviour; by default "
                       "such personas are versions of the same persona and are never distractors).")
    @click.option("--margin", type=float, default=0.4, show_default=True)
    @click.option("--l1-weight", type=float, default=1e-4, show_default=True)
    @click.option("--loss", "loss_type", type=click.Choice(["margin", "softmax"]), default="margin", show_default=True,
                  help="The paper's hinge loss, or cross-entropy of the true persona among the distractors.")
    @click.option("--loss-temperature", type=float, default=0.1, show_default=True,
                  help="Temperature of the softmax loss.")
    @click.option("--tau-start", type=float, default=10.0, show_default=True)
    @click.option("--tau-end", type=float, default=0.5, show_default=True)
    @click.option("--eval-steps", type=int, default=None, help="Evaluate/checkpoint every N steps (default: 4 per run).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--no-resume", is_flag=True, help="Start fresh even if OUTPUT_DIR has checkpoints.")
    def train_receiver_cmd(data, output_dir, backbone, first, dev_fraction, max_steps, epochs, batch_size, lr,
                           separate_encoders, negatives, max_train_utterances, freeze_layers,
                           allow_shared_sentences, margin, l1_weight, loss_type, loss_temperature, tau_start, tau_end,
                           eval_steps, seed, no_resume):
        """Train P2Bot's Receiver (margin or softmax ranking loss + L1, τ annealed) on PERSONA-CHAT-style dialogues."""
        from hf_persona.training.receiver import train_receiver

        splits = _load_splits(data, first, dev_fraction, seed)
        _, metrics = train_receiver(
            [s[1] for s in splits], output_dir, backbone=backbone, eval_ds=[s[2] for s in splits],
            max_steps=max_steps, num_train_epochs=epochs, batch_size=batch_size, learning_rate=lr,
            share_encoders=not separate_encoders, negatives=negatives, max_train_utterances=max_train_utterances,
            freeze_layers=freeze_layers, allow_shared_sentences=allow_shared_sentences, margin=margin,
            l1_weight=l1_weight, loss_type=loss_type,
            loss_temperature=loss_temperature, tau_start=tau_start,
            tau_end=tau_end, eval_steps=eval_steps, seed=seed, resume=not no_resume,
        )
        click.echo(f"saved Receiver to {output_dir}")
        for key in ("train_loss", "eval_hits_at_1", "eval_mean_margin"):
            if key in metrics:
                click.echo(f"{key}: {metrics[key]:.4f}")

    @eval_group.command("receiver")
    @click.option("--model", "model_dir", required=True, help="Trained Receiver folder or Hub id.")
    @click.option("--data", "data", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="PERSONA-CHAT file(s), e.g. original and revised. Default: the embedded sample.")
    @click.option("--first", type=int, default=None,
                  help="Evaluate on the dialogues after the first N of each file (the training split's size).")
    @click.option("--dev-fraction", type=float, default=None, help="Else the seeded held-out fraction used in training.")
    @click.option("--candidates", type=int, default=32, show_default=True, help="Personas per probe item (1 true).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed for the distractors and the split.")
    @click.option("--baselines/--no-baselines", default=True, show_default=True, help="Also run TF-IDF IR and zero-shot cosine.")
    @click.option("--zeroshot-backbone", default="minilm", show_default=True, help="Encoder of the zero-shot baseline.")
    @click.option("--allow-shared-sentences", is_flag=True,
                  help="Let a distractor persona of the probe share sentences with the true one (older "
                       "behaviour; by default such personas are versions of the same persona and are never "
                       "distractors).")
    @click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write flat metrics JSON here.")
    def eval_receiver_cmd(model_dir, data, first, dev_fraction, candidates, seed, baselines, zeroshot_backbone,
                          allow_shared_sentences, json_out):
        """Persona-perception probe: Hits@1 of N candidate personas and MRR of the true persona sentences."""
        from hf_persona.evaluation.metrics import format_table

        metrics = evaluate_receiver(model_dir, data, first=first, dev_fraction=dev_fraction, candidates=candidates,
                                    seed=seed, baselines=baselines, zeroshot_backbone=zeroshot_backbone,
                                    allow_shared_sentences=allow_shared_sentences)
        rows = []
        for method in ("receiver", "zeroshot", "ir"):
            for split in sorted({k.split(".")[-1] for k in metrics if k.startswith(method + ".hits@1.")}):
                rows.append({"method": method, "split": split,
                             f"hits@1/{candidates}": metrics[f"{method}.hits@1.{split}"],
                             "mrr": metrics[f"{method}.mrr.{split}"]})
        click.echo(format_table(rows))
        click.echo(f"receiver pairs/second: {metrics['pairs_per_second']:.1f}")
        if json_out:
            from hf_persona.utils import atomic_write_json

            atomic_write_json(json_out, metrics)
            click.echo(f"wrote {json_out}")

    @cli.group("receiver")
    def receiver_group():
        """Inspect a trained P2Bot Receiver."""

    @receiver_group.command("heatmap")
    @click.option("--model", "model_dir", required=True, help="Trained Receiver folder or Hub id.")
    @click.option("--utterances", "-u", multiple=True, required=True, help="One utterance (repeat the option).")
    @click.option("--persona", "-p", multiple=True, required=True, help="One persona sentence (repeat the option).")
    @click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
    @click.option("--title", default=None)
    def heatmap_cmd(model_dir, utterances, persona, out, title):
        """Render the relevance grid U (utterances × persona sentences) as a labelled heat-map."""
        receiver = load_receiver(model_dir)
        U = receiver.relevance(list(utterances), list(persona))
        path = render_relevance_heatmap(U.numpy(), list(utterances), list(persona), out, title=title)
        click.echo(f"score {receiver.score(list(utterances), list(persona)):.4f}; wrote {path}")


def evaluate_receiver(model, data: Sequence[str] = (), *, first: int | None = None, dev_fraction: float | None = None,
                      candidates: int = 32, seed: int = 0, baselines: bool = True, zeroshot_backbone: str = "minilm",
                      sides=("you", "partner"), allow_shared_sentences: bool = False) -> dict:
    """Run the probe on the held-out dialogues of each data file; return a flat metrics dict.

    Keys: ``<method>.hits@1.<split>``, ``<method>.mrr.<split>`` for method in receiver / zeroshot / ir
    and split = the file's kind (``original``, ``revised`` or its stem), ``pairs_per_second`` (Receiver,
    end-to-end probe scoring of (side, persona) pairs), ``candidates``, ``seed``, ``probe_items.<split>``,
    ``allow_shared_sentences`` (see :func:`~hf_persona.evaluation.receiver_probe.build_probe_items`).
    """
    from hf_persona.backbones import resolve
    from hf_persona.evaluation.receiver_probe import (
        CosineScorer,
        ReceiverScorer,
        TfidfScorer,
        build_probe_items,
        run_probe,
    )
    from hf_persona.training.receiver import dialogue_sides

    receiver = load_receiver(model)
    zeroshot = CosineScorer(resolve(zeroshot_backbone)) if baselines else None
    metrics: dict = {"candidates": candidates, "seed": seed, "allow_shared_sentences": allow_shared_sentences}
    pairs, seconds = 0, 0.0
    for split, _, dev in _load_splits(data, first, dev_fraction, seed):
        items = build_probe_items(dialogue_sides(dev, sides), num_candidates=candidates, seed=seed,
                                  allow_shared_sentences=allow_shared_sentences)
        metrics[f"probe_items.{split}"] = len(items)
        result = run_probe(items, ReceiverScorer(receiver))
        metrics[f"receiver.hits@1.{split}"] = result["hits@1"]
        metrics[f"receiver.mrr.{split}"] = result["mrr"]
        pairs += result["pairs"]
        seconds += result["seconds"]
        if baselines:
            for name, scorer in (("zeroshot", zeroshot), ("ir", TfidfScorer())):
                r = run_probe(items, scorer)
                metrics[f"{name}.hits@1.{split}"] = r["hits@1"]
                metrics[f"{name}.mrr.{split}"] = r["mrr"]
    metrics["pairs_per_second"] = pairs / seconds if seconds > 0 else float("inf")
    return metrics
