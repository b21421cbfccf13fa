"""Click commands of the persona extractor and PESConv annotation, added to the ``hf-persona`` CLI by
the persona_extractor plugin.

* ``hf-persona train persona-extractor``:
  :func:`hf_persona.training.persona_extractor.train_persona_extractor`;
* ``hf-persona eval persona-extractor``:
  :func:`hf_persona.training.persona_extractor.evaluate_persona_extractor`;
* ``hf-persona annotate-persona``: :func:`hf_persona.data.pesconv.annotate` (builds PESConv from
  ESConv with a trained extractor, resumable).

Heavy imports (torch, transformers) happen inside the commands so that ``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import click

from hf_persona.training.configs import PersonaExtractorTrainingConfig

from ._output import default_data, finish, json_file, json_option, quiet_work
from .options import NONNEG_INT, POS_INT, UNIT_FLOAT, input_dir, input_file, output_dir, recipe_options


def _data_files(data_files, dev_from):
    """(files, dev_from): the given files, else None (the shared data, chosen by the library) or the
    embedded PERSONA-CHAT sample when there is no shared data; a ``dev_from`` that holds nothing of
    the PERSONA-CHAT files back is clamped (with a warning) to hold back their last fifth."""
    from hf_persona.data import detect_format, read_personachat, shared_data_dir

    files = list(data_files) or (None if shared_data_dir() is not None else [default_data()])
    sizes = [len(read_personachat(f)) for f in files or () if detect_format(f) == "personachat"]
    if sizes and dev_from >= max(sizes):
        from hf_persona.utils import get_logger

        n = max(sizes)
        held = max(1, n - max(1, n // 5))
        get_logger("hf_persona.cli").warning(
            f"--dev-from {dev_from} exceeds the {n} dialogues; holding back those from index {held} on")
        dev_from = held
    return files, dev_from

TRAIN_KEYS = ("kind", "train_examples", "global_step", "train_loss", "dev_loss", "bleu1", "persona_recall_f1_50",
              "train_seconds", "resumed_from")
ANNOTATE_KEYS = ("dialogues", "supporter_turns", "supporter_turns_with_persona",
                 "mean_persona_sentences_at_last_turn", "complete")


@click.command("persona-extractor")
@click.option("--data", "data_files", multiple=True, type=input_file(),
              help="PERSONA-CHAT (ParlAI text) or MSC (JSON lines) file; repeat for several. "
                   "Default: ../shared/data personachat original + msc sessions, else the embedded sample.")
@recipe_options(PersonaExtractorTrainingConfig)
@json_option()
@quiet_work(warm_start=True)
def train_persona_extractor_cmd(data_files, json_out, **fields):
    """Fine-tune a persona extractor, causal LM or seq2seq (one speaker's utterances -> persona sentences)."""
    from hf_persona.training.persona_extractor import train_persona_extractor

    data_files, fields["dev_from"] = _data_files(data_files, fields["dev_from"])
    result = train_persona_extractor(PersonaExtractorTrainingConfig(json_out=json_file(json_out), **fields), data_files)
    finish(result, TRAIN_KEYS, saved_to=result.output_dir, json_out=json_out)


@click.command("persona-extractor")
@click.option("--extractor", required=True, type=input_dir(), help="Trained extractor folder.")
@click.option("--data", "data_files", multiple=True, type=input_file(),
              help="PERSONA-CHAT / MSC files (default: the shared data, else the embedded sample); their held-back "
                   "dialogues are evaluated.")
@click.option("--dev-from", default=800, show_default=True, type=NONNEG_INT)
@click.option("--max-examples", default=200, show_default=True, type=POS_INT)
@click.option("--num-beams", default=4, show_default=True, type=POS_INT)
@click.option("--batch-size", default=16, show_default=True, type=POS_INT)
@json_option()
@quiet_work()
def eval_persona_extractor_cmd(extractor, data_files, dev_from, max_examples, num_beams, batch_size, json_out):
    """BLEU / ROUGE-L / Distinct of inferred personas on held-back dialogues."""
    from hf_persona.evaluation import format_table
    from hf_persona.evaluation.persona_extractor import evaluate_persona_extractor

    data_files, dev_from = _data_files(data_files, dev_from)
    metrics = evaluate_persona_extractor(extractor, data_files, dev_from=dev_from,
                                         max_examples=max_examples, num_beams=num_beams, batch_size=batch_size,
                                         json_out=json_file(json_out))
    row = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    finish(metrics, (), json_out=json_out, table=format_table([row]))


@click.command("annotate-persona")
@click.option("--extractor", required=True, type=input_dir(), help="Trained extractor folder.")
@click.option("--data", default=None, type=input_file(), help="ESConv JSON lines file. Default: the embedded sample.")
@click.option("--out", "out_dir", required=True, type=output_dir(), help="Output folder (resumed if it exists).")
@click.option("--batch-size", default=32, show_default=True, type=POS_INT, help="Extractor inputs per generate call.")
@click.option("--dialogues-per-shard", default=16, show_default=True, type=POS_INT,
              help="Dialogues per atomically written shard.")
@click.option("--min-seeker-utterances", default=3, show_default=True, type=POS_INT,
              help="First seeker utterance count that is annotated.")
@click.option("--num-beams", default=None, type=POS_INT, help="Beams for the extractor (default: 4).")
@click.option("--max-dialogues", default=None, type=POS_INT, help="Annotate only the first N dialogues.")
@click.option("--min-support", default=0.0, show_default=True, type=UNIT_FLOAT,
              help="Drop inferred sentences sharing less than this share of their content words with the seeker's "
                   "utterances (0: keep all, the paper).")
@click.option("--merge-consecutive", is_flag=True, help="Merge consecutive turns of one speaker first.")
@click.option("--overwrite", is_flag=True, help="Discard an earlier run in --out (default: resume it).")
@json_option("Write the annotation summary JSON to this file ('-': print it instead of the table).")
@quiet_work()
def annotate_persona_cmd(extractor, data, out_dir, batch_size, dialogues_per_shard, min_seeker_utterances, num_beams,
                         max_dialogues, min_support, merge_consecutive, overwrite, json_out):
    """Build PESConv: add the inferred seeker persona before every turn of ESConv (resumable)."""
    from hf_persona.data.pesconv import annotate

    summary = annotate(extractor, data or default_data("esconv"), out_dir, batch_size=batch_size, dialogues_per_shard=dialogues_per_shard,
                       min_seeker_utterances=min_seeker_utterances, num_beams=num_beams, max_dialogues=max_dialogues,
                       merge_consecutive=merge_consecutive, min_support=min_support, overwrite=overwrite)
    finish(summary, ANNOTATE_KEYS, saved_to=out_dir, json_out=json_out, write_json=True)


def add_commands(cli) -> None:
    """Add the persona extractor's commands to ``cli``: its ``train`` and ``eval`` groups and ``annotate-persona``."""
    cli.commands["train"].add_command(train_persona_extractor_cmd)
    cli.commands["eval"].add_command(eval_persona_extractor_cmd)
    cli.add_command(annotate_persona_cmd)
