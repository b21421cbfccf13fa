"""Option checks of the ``hf-persona`` commands (issue 28, item 3).

Every bad value of every train / eval command ends with exit status 2 and one line on stderr that
names the option, before any model or data set loads. Nothing here trains: the library modules the
commands import (``hf_persona.training.*``, ``hf_persona.evaluation.*``) are replaced by stand-ins
that raise :class:`Reached` when anything is called, and each bad invocation must also end within
``FAST`` seconds. The control test runs each command with good options and checks that it does reach
its stand-in, so every failure below comes from the bad value alone.

Commands run through :func:`hf_persona.cli.main` (as the console script does: click's
``standalone_mode=False`` and the CLI's own error handling) inside ``CliRunner().isolation()``.
"""

from __future__ import annotations

import os
import sys
import time
import types

import click
import pytest
from click.testing import CliRunner

from hf_persona.cli import cli, main, register_plugin_commands
from hf_persona.commands import options
from hf_persona.data import sample_path

FAST = 2.0  # seconds; parsing a command line takes milliseconds

STUBBED = (
    "hf_persona.training.cobert",
    "hf_persona.training.pal",
    "hf_persona.training.persona_extractor",
    "hf_persona.data.pesconv",
    "hf_persona.training.ppg",
    "hf_persona.training.ppg_rl",
    "hf_persona.training.receiver",
    "hf_persona.training.transmitter",
    "hf_persona.training.selfplay",
    "hf_persona.evaluation.cobert",
    "hf_persona.evaluation.pal",
    "hf_persona.evaluation.persona_extractor",
    "hf_persona.evaluation.ppg",
    "hf_persona.evaluation.receiver",
    "hf_persona.evaluation.transmitter",
)


class Reached(Exception):
    """A command got past its option checks into the library (a stand-in was called)."""


class _Stub(types.ModuleType):
    """A library module whose every attribute is a function raising :class:`Reached`."""

    error = Reached

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def called(*args, **kwargs):
            raise self.error(f"{self.__name__}.{attr} was called")

        return called


@pytest.fixture
def stubs(monkeypatch):
    """Replace the training / evaluation modules by stand-ins; returns them by name."""
    import huggingface_hub.constants

    register_plugin_commands()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    mods = {}
    for name in STUBBED:
        mods[name] = _Stub(name)
        monkeypatch.setitem(sys.modules, name, mods[name])
    return mods


def run(args):
    """``hf-persona ARGS`` -> (exit status, stdout, stderr, seconds)."""
    with CliRunner().isolation() as (out, err, _):
        start = time.perf_counter()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        elapsed = time.perf_counter() - start
        return code, out.getvalue().decode(), err.getvalue().decode(), elapsed


@pytest.fixture
def paths(tmp_path):
    """Inputs that exist (an empty model folder, a PESConv folder) and a regular file to misuse."""
    model = tmp_path / "model"
    model.mkdir()
    pesconv = tmp_path / "pesconv"
    pesconv.mkdir()
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder\n")
    return {"pc": str(sample_path("personachat")), "esconv": str(sample_path("esconv")), "model": str(model),
            "pesconv": str(pesconv), "out": str(tmp_path / "out"), "file": str(afile),
            "under_file": str(afile / "run"), "missing": str(tmp_path / "missing.txt")}


def base_args(p):
    """Good options for every train / eval command (what the control test runs)."""
    return {
        "train cobert": ["--data", p["pc"], "--output-dir", p["out"], "--train-dialogues", "4"],
        "train pal": ["--data", p["pesconv"], "--output-dir", p["out"]],
        "train persona-extractor": ["--data", p["pc"], "--output-dir", p["out"]],
        "train ppg": ["--data", p["pc"], "--output-dir", p["out"], "--train-dialogues", "4"],
        "train drg": ["--data", p["pc"], "--output-dir", p["out"], "--train-dialogues", "4"],
        "train critic": ["--data", p["pc"], "--output-dir", p["out"], "--train-dialogues", "4"],
        "train ppg-rl": ["--ppg", p["model"], "--drg", p["model"], "--critic", p["model"], "--data", p["pc"],
                         "--output-dir", p["out"], "--train-dialogues", "4"],
        "train receiver": ["--data", p["pc"], "--output-dir", p["out"]],
        "train transmitter": ["--data", p["pc"], "--output-dir", p["out"]],
        "train selfplay": ["--model", p["model"], "--data", p["pc"], "--output-dir", p["out"]],
        "eval cobert": ["--model", p["model"], "--data", p["pc"]],
        "eval pal": ["--model", p["model"], "--data", p["pesconv"]],
        "eval persona-extractor": ["--extractor", p["model"], "--data", p["pc"]],
        "eval ppg": ["--ppg", p["model"], "--drg", p["model"], "--data", p["pc"], "--skip-dialogues", "4"],
        "eval receiver": ["--model", p["model"], "--data", p["pc"]],
        "eval transmitter": ["--model", p["model"], "--data", p["pc"]],
        "annotate-persona": ["--extractor", p["model"], "--data", p["esconv"], "--out", p["out"]],
    }


TRAIN = ("train cobert", "train pal", "train persona-extractor", "train ppg", "train drg", "train critic",
         "train receiver", "train transmitter")  # the eight commands with --epochs
STEPS = TRAIN  # --max-steps: -1 (epochs) or >= 1
LR = TRAIN + ("train ppg-rl", "train selfplay")
BATCH = TRAIN + ("train ppg-rl", "eval cobert", "eval pal", "eval persona-extractor", "annotate-persona")
OUTPUT_DIR = TRAIN + ("train ppg-rl", "train selfplay")
BACKBONE = TRAIN
SEEDED = TRAIN + ("train ppg-rl", "train selfplay", "eval cobert", "eval pal", "eval ppg", "eval receiver",
                  "eval transmitter")
JSON = ("train cobert", "train pal", "train persona-extractor", "train transmitter", "train selfplay",
        "eval cobert", "eval pal", "eval persona-extractor", "eval ppg", "eval receiver", "eval transmitter")


def _cases():
    """(command, option, bad value) for every check; a value in <> is a key of ``paths``."""
    cases = []
    for cmd in TRAIN:
        cases += [(cmd, "--epochs", v) for v in ("0", "-1", "nan", "inf", "two")]
    for cmd in STEPS:
        cases += [(cmd, "--max-steps", v) for v in ("0", "-2", "1.5")]
    for cmd in LR:
        lr = "--lr"
        cases += [(cmd, lr, v) for v in ("0", "-1e-5", "nan")]
    for cmd in BATCH:
        cases += [(cmd, "--batch-size", v) for v in ("0", "-4")]
    for cmd in OUTPUT_DIR:
        cases += [(cmd, "--output-dir", "<under_file>"), (cmd, "--output-dir", "<file>")]
    for cmd in BACKBONE:
        cases += [(cmd, "--backbone", "no/such"), (cmd, "--backbone", "<file>"), (cmd, "--backbone", "./no/such")]
    for cmd in SEEDED:
        cases.append((cmd, "--seed", "-1"))
    for cmd in JSON:
        cases += [(cmd, "--json", "<under_file>"), (cmd, "--json", "<model>")]
    for cmd in ("train cobert", "train ppg", "train critic", "train persona-extractor", "train transmitter",
                "eval cobert", "eval ppg", "eval persona-extractor", "eval receiver", "eval transmitter",
                "annotate-persona", "train receiver"):
        cases.append((cmd, "--data", "<missing>"))
    cases += [
        ("train cobert", "--grad-accum", "0"), ("train cobert", "--grad-accum", "-1"),
        ("train cobert", "--train-dialogues", "-1"), ("train cobert", "--num-negatives", "-1"),
        ("train cobert", "--eval-steps", "0"), ("train cobert", "--budget-minutes", "0"),
        ("train cobert", "--num-hops", "4"), ("train cobert", "--data", "<model>"),
        ("train pal", "--data", "<missing>"), ("train pal", "--data", "<file>"),
        ("train pal", "--warmup-steps", "-1"), ("train pal", "--eval-steps", "0"),
        ("train pal", "--max-source-length", "0"), ("train pal", "--max-persona-length", "0"),
        ("train pal", "--max-target-length", "0"), ("train pal", "--max-train-examples", "0"),
        ("train pal", "--max-eval-examples", "0"), ("train pal", "--mixture-lr", "-0.1"),
        ("train pal", "--mixture-init", "0,zero,2"), ("train pal", "--mixture-init", "1,2"),
        ("train pal", "--budget-minutes", "-5"),
        ("train persona-extractor", "--dev-from", "0"), ("train persona-extractor", "--eval-steps", "0"),
        ("train persona-extractor", "--num-beams", "0"), ("train persona-extractor", "--min-support", "1.5"),
        ("train persona-extractor", "--min-support", "nan"), ("train persona-extractor", "--eval-examples", "-1"),
        ("train persona-extractor", "--max-source-length", "0"),
        ("train ppg", "--max-prompt-tokens", "0"), ("train ppg", "--max-context", "0"), ("train ppg", "--lora", ","),
        ("train ppg", "--train-dialogues", "-3"), ("train drg", "--max-prompt-tokens", "-1"),
        ("train critic", "--max-length", "0"), ("train critic", "--warmup-ratio", "1"),
        ("train critic", "--warmup-ratio", "-0.1"),
        ("train ppg-rl", "--rounds", "0"), ("train ppg-rl", "--steps-per-phase", "0"),
        ("train ppg-rl", "--num-generations", "1"), ("train ppg-rl", "--beta", "-1"),
        ("train ppg-rl", "--batch-size", "7"), ("train ppg-rl", "--ppg", "no/such"),
        ("train ppg-rl", "--critic", "<file>"),
        ("train receiver", "--dev-fraction", "0"), ("train receiver", "--dev-fraction", "1"),
        ("train receiver", "--first", "0"), ("train receiver", "--freeze-layers", "-1"),
        ("train receiver", "--margin", "-0.1"), ("train receiver", "--loss-temperature", "0"),
        ("train receiver", "--tau-start", "0"), ("train receiver", "--tau-end", "-1"),
        ("train receiver", "--eval-steps", "0"), ("train receiver", "--max-train-utterances", "0"),
        ("train transmitter", "--dev-from", "0"), ("train transmitter", "--lm-weight", "1.5"),
        ("train transmitter", "--label-smoothing", "1"), ("train transmitter", "--save-steps", "0"),
        ("train transmitter", "--max-context-tokens", "0"),
        ("train selfplay", "--model", "<missing>"), ("train selfplay", "--receiver", "<file>"),
        ("train selfplay", "--turns", "0"), ("train selfplay", "--episodes-per-seed", "0"),
        ("train selfplay", "--gamma", "1.5"), ("train selfplay", "--kl-beta", "-1"),
        ("train selfplay", "--sft-weight", "-1"), ("train selfplay", "--sft-batch-size", "0"),
        ("train selfplay", "--max-steps", "0"), ("train selfplay", "--save-steps", "0"),
        ("train selfplay", "--budget-minutes", "0"), ("train selfplay", "--language-model", "no/such"),
        ("eval cobert", "--model", "no/such"), ("eval cobert", "--model", "<missing>"),
        ("eval cobert", "--candidates", "1"), ("eval cobert", "--hits-candidates", "0"),
        ("eval cobert", "--skip-dialogues", "-1"), ("eval cobert", "--max-examples", "0"),
        ("eval pal", "--model", "<missing>"), ("eval pal", "--model", "<file>"), ("eval pal", "--data", "<missing>"),
        ("eval pal", "--max-examples", "0"), ("eval pal", "--max-generate", "0"),
        ("eval pal", "--alpha", "-1"), ("eval pal", "--alpha", "huge"), ("eval pal", "--alpha", "nan"),
        ("eval pal", "--alpha", '{"Flattery": 0.5}'), ("eval pal", "--alpha", '{"Question": "huge"}'),
        ("eval pal", "--alpha", '{"Question": -1}'), ("eval pal", "--alpha", "{not json"),
        ("eval pal", "--alpha", "{}"),
        ("eval persona-extractor", "--extractor", "<missing>"), ("eval persona-extractor", "--max-examples", "0"),
        ("eval persona-extractor", "--num-beams", "0"), ("eval persona-extractor", "--dev-from", "-1"),
        ("eval ppg", "--skip-dialogues", "-1"), ("eval ppg", "--max-examples", "-1"),
        ("eval ppg", "--cold-start-examples", "-1"),
        ("eval receiver", "--model", "no/such"), ("eval receiver", "--candidates", "1"),
        ("eval receiver", "--first", "0"), ("eval receiver", "--dev-fraction", "1.5"),
        ("eval receiver", "--zeroshot-backbone", "no/such"),
        ("eval transmitter", "--model", "<missing>"), ("eval transmitter", "--model", "sft=no/such"),
        ("eval transmitter", "--candidates", "1"), ("eval transmitter", "--num-beams", "0"),
        ("eval transmitter", "--max-examples", "0"), ("eval transmitter", "--alpha", "-0.5"),
        ("eval transmitter", "--selfplay-episodes", "0"), ("eval transmitter", "--dev-from", "-1"),
        ("eval transmitter", "--receiver", "<missing>"), ("eval transmitter", "--user-model", "<file>"),
        ("annotate-persona", "--out", "<under_file>"), ("annotate-persona", "--out", "<file>"),
        ("annotate-persona", "--extractor", "<missing>"), ("annotate-persona", "--dialogues-per-shard", "0"),
        ("annotate-persona", "--min-seeker-utterances", "0"), ("annotate-persona", "--num-beams", "0"),
        ("annotate-persona", "--max-dialogues", "0"), ("annotate-persona", "--min-support", "-0.5"),
    ]
    return cases


CASES = _cases()
HEAVY_CHECK = {"--alpha"}  # its check imports the PAL decoding code (torch) to validate the value


def _replace(args, option, value):
    """``args`` with ``option`` set to ``value`` (replacing a given one, else appended)."""
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
        return args
    return args + [option, value]


@pytest.mark.parametrize("cmd,option,value", CASES, ids=[f"{c}|{o}={v}" for c, o, v in CASES])
def test_bad_value_fails_fast_with_one_line_naming_the_option(stubs, paths, cmd, option, value):
    if value.startswith("<") and value.endswith(">"):
        value = paths[value[1:-1]]
    args = cmd.split() + _replace(base_args(paths)[cmd], option, value)
    code, out, err, elapsed = run(args)  # Reached (a stand-in called) would propagate and fail the test
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert f"'{option}'" in lines[0], lines[0]
    if option not in HEAVY_CHECK:
        assert elapsed < FAST, f"{elapsed:.2f} s"
    assert not os.path.exists(paths["out"]), "the command created its output"


def test_the_good_options_reach_the_library(stubs, paths):
    """Control: with the good options every command gets past its checks (to its stand-in)."""
    for cmd, args in base_args(paths).items():
        with pytest.raises(Reached):
            run(cmd.split() + args)


def test_every_numeric_option_of_every_command_has_a_range():
    """No INT / FLOAT option without a range, no output path without the output check: a new option
    must choose one (``--fusion-layer`` is a Python index into the decoder's layers, any sign)."""
    register_plugin_commands()
    unchecked_numbers, unchecked_outputs, seen = [], [], 0

    def walk(command, path):
        nonlocal seen
        for param in command.params:
            name = f"{path} {param.opts[0]}"
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                seen += 1
                ranged = isinstance(param.type, (click.IntRange, click.FloatRange))
                if not ranged and name != "train pal --fusion-layer":
                    unchecked_numbers.append(name)
                if isinstance(param.type, click.FloatRange) and not isinstance(param.type, options.FiniteFloatRange):
                    unchecked_numbers.append(name + " (accepts nan)")
            if param.name in ("output_dir", "out_dir", "json_out", "out") and isinstance(param.type, click.Path):
                if not isinstance(param.type, options.OutputPath):
                    unchecked_outputs.append(name)
        for sub_name, sub in getattr(command, "commands", {}).items():
            if sub_name not in ("push", "pull"):  # the Hub commands belong to the hub plugin
                walk(sub, f"{path} {sub_name}".strip())

    walk(cli, "")
    assert seen > 100
    assert unchecked_numbers == [] and unchecked_outputs == []


def test_library_errors_are_one_line_unless_verbose(stubs, paths):
    from hf_persona.errors import HFPersonaError

    stubs["hf_persona.training.cobert"].error = HFPersonaError
    args = ["train", "cobert", "--data", paths["pc"], "--output-dir", paths["out"], "--train-dialogues", "4"]
    code, _, err, _ = run(args)
    assert code == 2 and err.count("\n") == 1 and "hf_persona.training.cobert.train_cobert was called" in err
    with pytest.raises(HFPersonaError, match="was called"):  # -v: the exception itself, so Python prints the traceback
        run(["-v", *args])
    code, _, err, _ = run(["--verbose", "train", "cobert", "--data", paths["pc"], "--output-dir", paths["out"],
                           "--epochs", "0"])
    assert code == 2 and "'--epochs'" in err  # a bad option is one line with -v too


def test_plain_value_errors_are_one_line_and_other_exceptions_keep_their_traceback(stubs, paths):
    args = ["train", "cobert", "--data", paths["pc"], "--output-dir", paths["out"], "--train-dialogues", "4"]
    stubs["hf_persona.training.cobert"].error = ValueError
    code, _, err, _ = run(args)
    assert code == 2 and err.count("\n") == 1
    assert "train_cobert was called (run with -v for the traceback)" in err
    with pytest.raises(ValueError):
        run(["-v", *args])
    stubs["hf_persona.training.cobert"].error = KeyError  # a bug, not a user error: never hidden
    with pytest.raises(KeyError):
        run(args)
    stubs["hf_persona.training.cobert"].error = FileNotFoundError
    code, _, err, _ = run(args)
    assert code == 2 and err.count("\n") == 1


def test_top_level_and_click_runner_errors(stubs, paths):
    code, _, err, _ = run(["--no-such-flag"])
    assert code == 2 and err.count("\n") == 1 and "'--no-such-flag'" in err
    code, _, err, _ = run(["train", "no-such-model"])
    assert code == 2 and err.count("\n") == 1 and "no-such-model" in err
    code, _, err, _ = run(["train"])  # a bare group still shows its help (on stderr, as click does)
    assert code == 2 and "Commands:" in err and "error:" not in err
    # click's own runner (standalone mode) gives the same line
    res = CliRunner().invoke(cli, ["train", "cobert", "--data", paths["pc"], "--output-dir", paths["out"],
                                   "--grad-accum", "-1"])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "'--grad-accum'" in res.stderr


def test_backbone_names_folders_and_cached_hub_ids_pass(stubs, paths, monkeypatch, tmp_path):
    assert options.check_model_ref("minilm", "backbone", "x", options.backbone_aliases()) is None
    assert options.check_model_ref("SmolLM2", "backbone", "x", options.backbone_aliases()) is None
    assert options.check_model_ref(paths["model"], "backbone", "x") is None
    problem = options.check_model_ref("no/such", "backbone", options.BACKBONE_ACCEPTED)
    assert problem.startswith("backbone 'no/such' is neither a local folder nor a model in the local Hugging Face "
                              "cache (HF_HUB_OFFLINE is set); accepted: 'minilm', 'smollm2'")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo_id, filename: str(tmp_path) if repo_id == "org/cached" else None)
    assert options.check_model_ref("org/cached", "backbone", "x") is None
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    class Api:
        def repo_exists(self, repo_id):
            if repo_id == "org/down":
                raise ConnectionError("no network")
            return repo_id == "org/online"

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    assert options.check_model_ref("org/online", "backbone", "x") is None
    assert "a model on the Hub" in options.check_model_ref("org/absent", "backbone", "x")
    assert "could not be reached (ConnectionError)" in options.check_model_ref("org/down", "backbone", "x")
