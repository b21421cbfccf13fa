"""Click commands of P2Bot's Receiver, added to the ``hf-persona`` CLI by the receiver plugin.

* ``hf-persona train receiver``: :func:`hf_persona.training.receiver.train_receiver`;
* ``hf-persona eval receiver``: :func:`hf_persona.evaluation.receiver.evaluate_receiver`;
* ``hf-persona receiver heatmap``: :func:`hf_persona.evaluation.plots.render_relevance_heatmap`.

Heavy imports (torch, transformers, matplotlib) happen inside the commands so that
``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import click

from .options import (CANDIDATES, FRACTION, MAX_STEPS, NONNEG_FLOAT, NONNEG_INT, POS_FLOAT, POS_INT, SEED,
                       check_backbone, check_model, input_file, output_dir, output_file)
from ._output import dev_from_option, finish, json_option, quiet_work

TRAIN_KEYS = ("train_loss", "eval_hits_at_1", "eval_mean_margin", "global_step")


def _clamped_first(data, first):
    """``--dev-from`` per file: a count that leaves no dialogue to validate on is clamped (with a
    warning) so that the last dialogue of the smallest file is held out."""
    if first is None:
        return None
    from hf_persona.data import read_dialogues, sample_path

    from ._output import clamp_warning

    sizes = [len(read_dialogues(path)[1]) for path in (list(data) or [str(sample_path("personachat"))])]
    limit = max(1, min(sizes) - 1)
    if first > limit:
        clamp_warning("--dev-from", first, min(sizes), "dialogues (one is kept to validate on)")
        return limit
    return first


def add_commands(cli) -> None:
    """Add the Receiver's commands to ``cli`` (its ``train`` and ``eval`` groups and a ``receiver`` group)."""
    train_group = cli.commands["train"]
    eval_group = cli.commands["eval"]

    @train_group.command("receiver")
    @click.option("--data", "data", multiple=True, type=input_file(),
                  help="PERSONA-CHAT / MSC file(s); repeat for original + revised (distractors never cross files). "
                       "Default: the embedded sample.")
    @click.option("--output-dir", required=True, type=output_dir(), help="Where the model is saved.")
    @click.option("--backbone", default="minilm", show_default=True, callback=check_backbone,
                  help="'minilm', a Hub id or a local encoder.")
    @dev_from_option(None, "--first", type=POS_INT,
                     help="Train on the dialogues before index N of each file, validate on the rest (clamped, with "
                          "a warning, to keep one to validate on).")
    @click.option("--dev-fraction", type=FRACTION, default=None, help="Else hold out this seeded fraction (default 0.2).")
    @click.option("--max-steps", type=MAX_STEPS, default=-1, show_default=True, help="Optimizer steps (-1: use --epochs).")
    @click.option("--epochs", type=POS_FLOAT, default=1.0, show_default=True)
    @click.option("--batch-size", type=POS_INT, default=16, show_default=True)
    @click.option("--lr", type=POS_FLOAT, default=6.25e-5, show_default=True)
    @click.option("--separate-encoders", is_flag=True, help="Separate impression and persona encoders (paper) "
                  "instead of one shared encoder with segment ids (authors' code).")
    @click.option("--negatives", type=click.Choice(["sampled", "in_batch"]), default="sampled", show_default=True,
                  help="One sampled distractor persona per example (paper) or every other persona in the batch.")
    @click.option("--max-train-utterances", type=POS_INT, default=None,
                  help="Train on a random subset of at most N utterances per side (cheaper steps).")
    @click.option("--freeze-layers", type=NONNEG_INT, default=0, show_default=True,
                  help="Freeze the embeddings and the N lowest encoder layers.")
    @click.option("--allow-shared-sentences", is_flag=True,
                  help="Let a distractor persona share sentences with the true one (older behaviour; by default "
                       "such personas are versions of the same persona and are never distractors).")
    @click.option("--margin", type=NONNEG_FLOAT, default=0.4, show_default=True)
    @click.option("--l1-weight", type=NONNEG_FLOAT, default=1e-4, show_default=True)
    @click.option("--loss", "loss_type", type=click.Choice(["margin", "softmax"]), default="margin", show_default=True,
                  help="The paper's hinge loss, or cross-entropy of the true persona among the distractors.")
    @click.option("--loss-temperature", type=POS_FLOAT, default=0.1, show_default=True,
                  help="Temperature of the softmax loss.")
    @click.option("--tau-start", type=POS_FLOAT, default=10.0, show_default=True)
    @click.option("--tau-end", type=POS_FLOAT, default=0.5, show_default=True)
    @click.option("--eval-steps", type=POS_INT, default=None, help="Evaluate/checkpoint every N steps (default: 4 per run).")
    @click.option("--seed", type=SEED, default=0, show_default=True)
    @click.option("--no-resume", is_flag=True, help="Start fresh even if OUTPUT_DIR has checkpoints.")
    @json_option()
    @quiet_work(warm_start=True)
    def train_receiver_cmd(data, output_dir, backbone, dev_from, dev_fraction, max_steps, epochs, batch_size, lr,
                           separate_encoders, negatives, max_train_utterances, freeze_layers,
                           allow_shared_sentences, margin, l1_weight, loss_type, loss_temperature, tau_start, tau_end,
                           eval_steps, seed, no_resume, json_out):
        """Train P2Bot's Receiver (margin or softmax ranking loss + L1, τ annealed) on PERSONA-CHAT-style dialogues."""
        from hf_persona.evaluation.receiver import load_splits
        from hf_persona.training.receiver import train_receiver

        splits = load_splits(data, _clamped_first(data, dev_from), dev_fraction, seed)
        _, metrics = train_receiver(
            [s[1] for s in splits], output_dir, backbone=backbone, eval_ds=[s[2] for s in splits],
            max_steps=max_steps, num_train_epochs=epochs, batch_size=batch_size, learning_rate=lr,
            share_encoders=not separate_encoders, negatives=negatives, max_train_utterances=max_train_utterances,
            freeze_layers=freeze_layers, allow_shared_sentences=allow_shared_sentences, margin=margin,
            l1_weight=l1_weight, loss_type=loss_type,
            loss_temperature=loss_temperature, tau_start=tau_start,
            tau_end=tau_end, eval_steps=eval_steps, seed=seed, resume=not no_resume,
        )
        finish(dict(metrics), TRAIN_KEYS, saved_to=output_dir, json_out=json_out, write_json=True)

    @eval_group.command("receiver")
    @click.option("--model", "model_dir", required=True, callback=check_model, help="Trained Receiver folder or Hub id.")
    @click.option("--data", "data", multiple=True, type=input_file(),
                  help="PERSONA-CHAT file(s), e.g. original and revised. Default: the embedded sample.")
    @dev_from_option(None, "--first", type=POS_INT,
                     help="Evaluate on the dialogues from index N on of each file (the training split's size; "
                          "clamped, with a warning, to keep one).")
    @click.option("--dev-fraction", type=FRACTION, default=None, help="Else the seeded held-out fraction used in training.")
    @click.option("--candidates", type=CANDIDATES, default=32, show_default=True, help="Personas per probe item (1 true).")
    @click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for the distractors and the split.")
    @click.option("--baselines/--no-baselines", default=True, show_default=True, help="Also run TF-IDF IR and zero-shot cosine.")
    @click.option("--zeroshot-backbone", default="minilm", show_default=True, callback=check_backbone,
                  help="Encoder of the zero-shot baseline.")
    @click.option("--allow-shared-sentences", is_flag=True,
                  help="Let a distractor persona of the probe share sentences with the true one (older "
                       "behaviour; by default such personas are versions of the same persona and are never "
                       "distractors).")
    @json_option()
    @quiet_work()
    def eval_receiver_cmd(model_dir, data, dev_from, dev_fraction, candidates, seed, baselines, zeroshot_backbone,
                          allow_shared_sentences, json_out):
        """Persona-perception probe: Hits@1 of N candidate personas and MRR of the true persona sentences."""
        from hf_persona.evaluation.metrics import format_table
        from hf_persona.evaluation.receiver import evaluate_receiver

        metrics = evaluate_receiver(model_dir, data, first=_clamped_first(data, dev_from), dev_fraction=dev_fraction,
                                    candidates=candidates,
                                    seed=seed, baselines=baselines, zeroshot_backbone=zeroshot_backbone,
                                    allow_shared_sentences=allow_shared_sentences)
        rows = []
        for method in ("receiver", "zeroshot", "ir"):
            for split in sorted({k.split(".")[-1] for k in metrics if k.startswith(method + ".hits@1.")}):
                rows.append({"method": method, "split": split,
                             f"hits@1/{candidates}": metrics[f"{method}.hits@1.{split}"],
                             "mrr": metrics[f"{method}.mrr.{split}"]})
        finish(metrics, (), json_out=json_out, write_json=True,
               table=f"{format_table(rows)}\nreceiver pairs/second: {metrics['pairs_per_second']:.1f}")

    @cli.group("receiver")
    def receiver_group():
        """Inspect a trained P2Bot Receiver."""

    @receiver_group.command("heatmap")
    @click.option("--model", "model_dir", required=True, callback=check_model, help="Trained Receiver folder or Hub id.")
    @click.option("--utterances", "-u", multiple=True, required=True, help="One utterance (repeat the option).")
    @click.option("--persona", "-p", multiple=True, required=True, help="One persona sentence (repeat the option).")
    @click.option("--out", required=True, type=output_file(), help="PNG file to write.")
    @click.option("--title", default=None)
    @quiet_work()
    def heatmap_cmd(model_dir, utterances, persona, out, title):
        """Render the relevance grid U (utterances × persona sentences) as a labelled heat-map."""
        from hf_persona.evaluation.plots import render_relevance_heatmap
        from hf_persona.rewards.persona_perception import load_receiver

        receiver = load_receiver(model_dir)
        U = receiver.relevance(list(utterances), list(persona))
        path = render_relevance_heatmap(U.numpy(), list(utterances), list(persona), out, title=title)
        click.echo(f"saved to {path}")
