"""Click commands of P2Bot's Receiver, added to the ``hf-persona`` CLI by the receiver plugin.

* ``hf-persona train receiver``: :func:`hf_persona.training.receiver.train_receiver`;
* ``hf-persona eval receiver``: :func:`hf_persona.evaluation.receiver.evaluate_receiver`;
* ``hf-persona receiver heatmap``: :func:`hf_persona.evaluation.plots.render_relevance_heatmap`.

Heavy imports (torch, transformers, matplotlib) happen inside the commands so that
``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import click

from hf_persona.training.configs import ReceiverTrainingConfig

from ._output import finish, json_file, json_option, quiet_work
from .options import (
    CANDIDATES,
    FRACTION,
    POS_INT,
    SEED,
    check_backbone,
    check_model,
    dev_from_option,
    input_file,
    output_file,
    recipe_options,
)

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
    @dev_from_option(None, "--first", type=POS_INT,
                     help="Train on the dialogues before index N of each file, validate on the rest (clamped, with "
                          "a warning, to keep one to validate on).")
    @click.option("--dev-fraction", type=FRACTION, default=None, help="Else hold out this seeded fraction (default 0.2).")
    @recipe_options(ReceiverTrainingConfig)
    @json_option()
    @quiet_work(warm_start=True)
    def train_receiver_cmd(data, dev_from, dev_fraction, json_out, **fields):
        """Train P2Bot's Receiver (margin or softmax ranking loss + L1, τ annealed) on PERSONA-CHAT-style dialogues."""
        from hf_persona.evaluation.receiver import load_splits
        from hf_persona.training.receiver import train_receiver

        config = ReceiverTrainingConfig(json_out=json_file(json_out), **fields)
        splits = load_splits(data, _clamped_first(data, dev_from), dev_fraction, config.seed)
        result = train_receiver([s[1] for s in splits], config, eval_ds=[s[2] for s in splits])
        finish(result, TRAIN_KEYS, saved_to=result.output_dir, json_out=json_out)

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
