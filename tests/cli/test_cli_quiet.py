"""A quiet, consistent CLI (issue 27 item 3): expected framework noise hidden unless -v, -q, a short
table and "saved to DIR" at the end of train/eval commands, the full JSON only with --json, the same
option names across commands, sizes beyond the data clamped with a warning."""

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from hf_persona.data import sample_path


def _extractor(batch):
    """A deterministic stand-in for the persona extractor: one sentence per seeker utterance."""
    return [[f"i talk about {' '.join(u.split()[-3:-1]) or 'nothing'} often." for u in utts[-2:]] for utts in batch]


@pytest.fixture(scope="module")
def pesconv_dir(tmp_path_factory):
    from hf_persona.data.pesconv import annotate

    out = tmp_path_factory.mktemp("pesconv")
    annotate(_extractor, sample_path("esconv"), out, progress=False)
    return out


def _hf_persona(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")
    proc = subprocess.run([sys.executable, "-m", "hf_persona.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, proc.stderr


def _lines(stdout, stderr):
    return (stdout + stderr).splitlines()


def test_train_pal_quick_run_is_short_and_v_shows_the_rest(pesconv_dir, tiny_bert_dir, tmp_path):
    quick = ["--data", pesconv_dir, "--backbone", tiny_bert_dir, "--max-steps", 2, "--eval-steps", 1,
             "--batch-size", 4, "--max-eval-examples", 4]
    out = tmp_path / "pal"
    stdout, stderr = _hf_persona("train", "pal", "--output-dir", out, *quick)
    lines = _lines(stdout, stderr)
    assert len(lines) <= 25, "\n".join(lines)
    assert stdout.splitlines()[-1] == f"saved to {out}"
    table = dict(line.split(None, 1) for line in stdout.splitlines()[:-1])
    assert table["variant"] == "pal" and table["global_step"] == "2" and float(table["train_loss"]) > 0
    for noise in ("LOAD REPORT", "pin_memory", "Writing model shards", "Loading weights", "seem corrupted",
                  "There were missing keys", "'loss':", '"eval_history"'):
        assert noise not in stdout + stderr, noise
    assert "step 2/2: eval_loss" in stderr  # one line per evaluation stays

    js = tmp_path / "summary.json"
    v_out, v_err = _hf_persona("-v", "train", "pal", "--output-dir", tmp_path / "pal_v", *quick, "--json", js)
    v_lines = _lines(v_out, v_err)
    assert len(v_lines) > len(lines) + 10
    assert "LOAD REPORT" in v_err and "'loss':" in v_out + v_err
    assert v_out.splitlines()[-1] == f"saved to {tmp_path / 'pal_v'}"
    summary = json.loads(js.read_text())  # --json FILE: the full summary there, the table on stdout
    assert summary["global_step"] == 2 and "eval_history" in summary and "eval_history" not in v_out

    # -q: no per-evaluation line; --json -: the full JSON instead of the table
    q_out, q_err = _hf_persona("-q", "train", "pal", "--output-dir", out, *quick, "--json", "-")
    assert "eval_loss" not in q_err and q_out.splitlines()[-1] == f"saved to {out}"
    assert len(_lines(q_out, q_err)) - len(json.dumps(summary, indent=2).splitlines()) <= len(lines)
    assert json.loads(q_out[:q_out.rindex("saved to")])["resumed_from"] is not None


def test_expected_noise_is_hidden_and_only_that():
    from hf_persona.utils import is_expected_noise

    report = ("\x1b[1mBertLMHeadModel LOAD REPORT\x1b[0m from: x\nKey | Status | \n----+---\n"
              "pooler.dense.weight | UNEXPECTED | \ncls.predictions.bias | MISSING | \n"
              "bert.encoder.layer.{0, 1}.crossattention.self.key.weight | MISSING | \n\nNotes:\n")
    assert is_expected_noise(report, warm_start=True)
    assert not is_expected_noise(report)  # outside a warm start a missing cross-attention is news
    assert not is_expected_noise(report.replace("UNEXPECTED", "MISMATCH"), warm_start=True)
    tied_only = "X LOAD REPORT from: y\nKey | Status |\nlm_head.weight | MISSING |\npooler.dense.bias | UNEXPECTED |\n"
    assert is_expected_noise(tied_only)
    tied = "There were missing keys in the checkpoint model loaded: ['backbone.decoder.cls.predictions.decoder.weight', "
    assert is_expected_noise(tied + "'backbone.decoder.cls.predictions.decoder.bias'].")
    assert is_expected_noise("There were missing keys in the checkpoint model loaded: ['model.lm_head.weight'].")
    assert not is_expected_noise(tied + "'backbone.encoder.layer.0.attention.self.query.weight'].")
    corrupted = ("This checkpoint seem corrupted. The tied weights mapping for this model specifies to tie "
                 "cls.predictions.bias to cls.predictions.decoder.bias, but both are absent from the checkpoint")
    assert is_expected_noise(corrupted, warm_start=True) and not is_expected_noise(corrupted)
    assert not is_expected_noise(corrupted.replace("cls.predictions.bias", "encoder.embed.weight"), warm_start=True)
    assert is_expected_noise("mtime may not be reliable on this filesystem, falling back to numerical ordering")
    assert is_expected_noise("The new embeddings will be initialized from a multivariate normal distribution ...")
    for real in ("Some weights of the model checkpoint were not used", "size mismatch for x", "anything else"):
        assert not is_expected_noise(real, warm_start=True)


def test_the_filter_hides_listed_warnings_and_records_only_and_v_shows_them():
    from transformers.utils import logging as tf_logging

    from hf_persona.utils import cli_verbosity, expected_noise_filtered

    pin = "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used."
    tf_logger = tf_logging.get_logger("transformers.trainer")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root = tf_logging._get_library_root_logger()
    keep = Keep()
    root.addHandler(keep)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with expected_noise_filtered(warm_start=True):
                warnings.warn(pin, UserWarning)
                warnings.warn("a real problem", UserWarning)
                tf_logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
                tf_logger.warning("There were missing keys in the checkpoint model loaded: ['encoder.w'].")
            with cli_verbosity(1), expected_noise_filtered(warm_start=True):
                warnings.warn(pin, UserWarning)
                tf_logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
    finally:
        root.removeHandler(keep)
    messages = [str(w.message) for w in caught]
    assert messages == ["a real problem", pin]
    assert seen == ["There were missing keys in the checkpoint model loaded: ['encoder.w'].",
                    "There were missing keys in the checkpoint model loaded: ['lm_head.weight']."]
    assert not any(h.filters for h in root.handlers if h is not keep)  # nothing left behind


def _cli():
    from hf_persona.cli import cli, register_plugin_commands

    register_plugin_commands()
    return cli


def test_train_cobert_defaults_to_the_sample_and_clamps_with_a_warning(tiny_bert_dir, tmp_path, caplog):
    from click.testing import CliRunner

    out = tmp_path / "cobert"
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(_cli(), ["train", "cobert", "--output-dir", str(out), "--backbone", tiny_bert_dir,
                                          "--max-steps", "1", "--batch-size", "4"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "--dev-from 800 exceeds the 36 dialogues; using 36" in caplog.text
    assert res.output.splitlines()[-1] == f"saved to {out}" and "global_step" in res.output
    assert "{" not in res.stdout  # the JSON only with --json

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(_cli(), ["eval", "cobert", "--model", str(out), "--skip-dialogues", "800",
                                          "--candidates", "10", "--hits-candidates", "5", "--max-examples", "12",
                                          "--json", "-"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "none from index 800 on; evaluating all 36" in caplog.text
    assert json.loads(res.stdout)["examples"] == 12


def test_quiet_and_verbose_exclude_each_other():
    from click.testing import CliRunner

    res = CliRunner().invoke(_cli(), ["-q", "-v", "plugins"])
    assert res.exit_code == 2 and "exclude each other" in res.output


def test_the_same_option_names_across_train_and_eval_commands():
    cli = _cli()
    samples = {("train", "cobert"), ("eval", "cobert"), ("train", "ppg"), ("train", "drg"), ("train", "critic"),
               ("train", "ppg-rl"), ("eval", "ppg"), ("train", "receiver"), ("eval", "receiver"),
               ("train", "transmitter"), ("train", "selfplay"), ("eval", "transmitter")}
    seen = set()
    for group in ("train", "eval"):
        for name, command in cli.commands[group].commands.items():
            seen.add((group, name))
            params = {p.name: p for p in command.params}
            primary = {p.opts[0] for p in command.params if p.opts and not getattr(p, "hidden", False)}
            assert "--json" in primary, (group, name)
            assert not primary & {"--train-dialogues", "--skip-dialogues", "--first"}, (group, name)
            for p in command.params:  # the older spellings: hidden, and only as deprecated aliases of --dev-from
                if p.opts and p.opts[0] in ("--train-dialogues", "--skip-dialogues", "--first"):
                    assert p.hidden and p.help == "Deprecated spelling of --dev-from.", (group, name)
            if (group, name) in samples:
                data = [p for p in command.params if "--data" in p.opts][0]
                assert not data.required, (group, name)
                assert "dev_from" in params, (group, name)
    assert samples <= seen


def test_an_older_split_spelling_still_works_and_names_dev_from(tmp_path, caplog):
    """``--train-dialogues N`` is ``--dev-from N`` with a warning; both at once is a usage error."""
    import click
    from click.testing import CliRunner

    from hf_persona.commands.options import dev_from_option

    seen = []

    @click.command()
    @dev_from_option(800, "--train-dialogues", "--first", help="Split.")
    def split(dev_from):
        seen.append(dev_from)

    runner = CliRunner()
    assert runner.invoke(split, []).exit_code == 0 and seen[-1] == 800
    assert runner.invoke(split, ["--dev-from", "5"]).exit_code == 0 and seen[-1] == 5
    with caplog.at_level("WARNING", logger="hf_persona.cli"):
        assert runner.invoke(split, ["--train-dialogues", "7"]).exit_code == 0 and seen[-1] == 7
    assert "--train-dialogues is deprecated: use --dev-from 7" in caplog.text
    for both in (["--dev-from", "5", "--first", "6"], ["--train-dialogues", "5", "--first", "6"]):
        res = runner.invoke(split, both)
        assert res.exit_code == 2 and "give the split once, as --dev-from" in res.output
    assert "--train-dialogues" not in runner.invoke(split, ["--help"]).output
