"""One recipe shape (issue 24, item 2): the config dataclasses, their checks, the options generated
from them and the result every recipe returns (hf_persona.training.recipe / configs)."""

import dataclasses
import inspect
import math
import warnings
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hf_persona.commands.options import range_type, recipe_options
from hf_persona.errors import HFPersonaError
from hf_persona.training import configs
from hf_persona.training.recipe import STEPS, UNIT_OPEN, Range, RecipeConfig, RecipeResult, field_option

CONFIGS = [c for _, c in inspect.getmembers(configs, inspect.isclass)
           if issubclass(c, RecipeConfig) and c is not RecipeConfig and c.__module__ == configs.__name__]


def _command(config_class, seen: list):
    @click.command()
    @recipe_options(config_class)
    def run(**fields):
        seen.append(config_class(**fields))

    return run


def test_every_recipe_has_a_config_here():
    recipes = {c.__name__ for c in CONFIGS if c.__doc__.startswith("The settings of")}
    assert recipes == {"CoBERTTrainingConfig", "PALTrainingConfig", "PersonaExtractorTrainingConfig",
                       "ReceiverTrainingConfig", "TransmitterTrainingConfig", "SelfPlayTrainingConfig",
                       "GeneratorTrainingConfig", "CriticTrainingConfig", "PPGRLTrainingConfig"}
    for cls in CONFIGS:
        assert dataclasses.is_dataclass(cls) and issubclass(cls, RecipeConfig)


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_the_command_line_defaults_are_the_field_defaults(config_class, tmp_path):
    """One default in one place: the generated options with nothing given build the default config."""
    seen: list = []
    res = CliRunner().invoke(_command(config_class, seen), ["--output-dir", str(tmp_path / "run")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen == [config_class(output_dir=str(tmp_path / "run"))]


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_option_has_help_and_every_number_a_range(config_class):
    for f in dataclasses.fields(config_class):
        spec = field_option(f)
        assert spec is not None, f"{config_class.__name__}.{f.name} has no option() metadata"
        assert spec.help, f"{config_class.__name__}.{f.name} has no help"
        if spec.cli and str(f.type).split(" ")[0] in ("int", "float"):
            assert spec.range is not None, f"{config_class.__name__}.{f.name} is a number without a range"


def test_a_range_and_its_click_type_accept_the_same_values():
    for spec in (Range(int, min=1), Range(int, min=0, max=3), STEPS, Range(float, min=0, min_open=True),
                 UNIT_OPEN, Range(float, min=-1, max=1)):
        kind = range_type(spec)
        for value in (-2, -1, 0, 1, 2, 3, 4, 0.5, 1.0, 0.999, float("nan"), float("inf")):
            if spec.kind is int and not float(value).is_integer() or (spec.kind is int and not math.isfinite(value)):
                continue
            value = int(value) if spec.kind is int else float(value)
            try:
                kind.convert(str(value), None, None)
                parsed = True
            except click.BadParameter:
                parsed = False
            assert parsed == spec.accepts(value), (spec, value)


def test_bad_values_name_the_field_the_value_and_what_is_accepted():
    with pytest.raises(HFPersonaError, match=r"RecipeConfig\.batch_size = 0: expected an integer >= 1"):
        RecipeConfig(output_dir="x", batch_size=0)
    with pytest.raises(HFPersonaError, match=r"max_steps = 0: expected an integer >= 1 or -1"):
        RecipeConfig(output_dir="x", max_steps=0)
    with pytest.raises(HFPersonaError, match=r"learning_rate = nan: expected a finite number > 0"):
        RecipeConfig(output_dir="x", learning_rate=float("nan"))
    with pytest.raises(HFPersonaError, match=r"epochs = True"):
        RecipeConfig(output_dir="x", epochs=True)  # a bool is not a number here
    with pytest.raises(HFPersonaError, match=r"seed = 1.5: expected an integer"):
        RecipeConfig(output_dir="x", seed=1.5)
    with pytest.raises(HFPersonaError, match=r"output_dir = ' ': expected a non-empty path"):
        RecipeConfig(output_dir=" ")
    with pytest.raises(HFPersonaError, match=r"model = 'bert': expected one of 'cobert', 'biencoder'"):
        configs.CoBERTTrainingConfig(output_dir="x", model="bert")
    assert RecipeConfig(output_dir="x", epochs=2).epochs == 2  # an int where a float is asked is fine


def test_build_from_an_output_folder_a_config_or_a_config_with_overrides(tmp_path):
    built = RecipeConfig.build(tmp_path, max_steps=3)
    assert built == RecipeConfig(output_dir=tmp_path, max_steps=3)
    assert RecipeConfig.build(built) is built
    again = RecipeConfig.build(built, seed=5)
    assert again.seed == 5 and again.max_steps == 3 and built.seed == 0  # a copy; the given config is untouched
    assert RecipeConfig.build(output_dir=tmp_path) == RecipeConfig(output_dir=tmp_path)
    with pytest.raises(TypeError, match=r"has no field 'max_step'; its fields: output_dir, backbone"):
        RecipeConfig.build(tmp_path, max_step=3)
    with pytest.raises(TypeError, match="needs output_dir"):
        RecipeConfig.build(max_steps=3)
    with pytest.raises(TypeError, match="output_dir given twice"):
        RecipeConfig.build(tmp_path, output_dir=tmp_path)
    with pytest.raises(TypeError, match="expected a CoBERTTrainingConfig, got a RecipeConfig"):
        configs.CoBERTTrainingConfig.build(built)


def test_older_keyword_names_still_build_the_config_with_a_warning(tmp_path):
    @dataclasses.dataclass(kw_only=True)
    class Old(RecipeConfig):
        renamed = {"num_train_epochs": "epochs", "disable_tqdm": "progress"}

    with pytest.warns(DeprecationWarning, match="is now") as said:
        cfg = Old.build(tmp_path, num_train_epochs=3.0, disable_tqdm=True)
    assert sorted(str(w.message) for w in said) == ["Old: the keyword 'disable_tqdm' is now 'progress'",
                                                    "Old: the keyword 'num_train_epochs' is now 'epochs'"]
    assert cfg.epochs == 3.0 and cfg.progress is False  # disable_tqdm=True: no progress bar
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Old.build(tmp_path, epochs=2.0)  # the new names do not warn


def test_generated_options_keep_their_spellings_and_check_while_parsing(tmp_path):
    seen: list = []
    command = _command(configs.CoBERTTrainingConfig, seen)
    runner = CliRunner()
    res = runner.invoke(command, ["--output-dir", str(tmp_path), "--lr", "1e-4", "--grad-accum", "2", "--pooling",
                                  "mean", "--global-match", "--no-resume", "--max-steps", "7"])
    assert res.exit_code == 0, res.output
    cfg = seen[-1]
    assert (cfg.learning_rate, cfg.gradient_accumulation_steps, cfg.hop1_pooling) == (1e-4, 2, "mean")
    assert cfg.global_match is True and cfg.resume is False and cfg.max_steps == 7
    for bad, name in ((["--batch-size", "0"], "--batch-size"), (["--max-steps", "0"], "--max-steps"),
                      (["--lr", "inf"], "--lr"), (["--pooling", "sum"], "--pooling")):
        res = runner.invoke(command, ["--output-dir", str(tmp_path), *bad])
        assert res.exit_code == 2 and name in res.output, res.output
    res = runner.invoke(command, [])
    assert res.exit_code == 2 and "--output-dir" in res.output  # the field without a default is required


def test_the_result_is_the_summary_with_the_folder_and_the_model(tmp_path):
    model = object()
    result = RecipeResult({"global_step": 3, "train_loss": 1.5}, tmp_path, model)
    assert result == {"global_step": 3, "train_loss": 1.5} and isinstance(result, dict)
    assert result.output_dir == Path(tmp_path) and result.model is model
    assert result.summary == {"global_step": 3, "train_loss": 1.5} and type(result.summary) is dict
    assert "RecipeResult(output_dir=" in repr(result)
    import json

    assert json.loads(json.dumps(result)) == {"global_step": 3, "train_loss": 1.5}


def test_configs_import_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = ("import sys, hf_persona.training.configs, hf_persona.commands.options; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("config_class", [c for c in CONFIGS if c.unused], ids=lambda c: c.__name__)
def test_a_field_the_recipe_does_not_use_is_neither_an_option_nor_silently_ignored(config_class, tmp_path):
    seen: list = []
    command = _command(config_class, seen)
    flags = {opt for p in command.params for opt in p.opts}
    for name in config_class.unused:
        f = next(f for f in dataclasses.fields(config_class) if f.name == name)
        assert "--" + name.replace("_", "-") not in flags, name
        other = {int: 7, float: 0.5, str: "other", bool: not f.default}.get(type(f.default), 7)
        with pytest.raises(HFPersonaError, match=rf"{config_class.__name__}\.{name} = .*not used by this recipe"):
            config_class(output_dir=str(tmp_path), **{name: other})


def test_the_training_page_names_every_recipe_config_and_every_shared_field():
    page = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    for cls in CONFIGS:
        if cls.__doc__ and cls.__doc__.startswith("The settings of"):  # a recipe's own config, not a shared base
            assert f"`{cls.__name__}`" in page, cls.__name__
    for f in dataclasses.fields(RecipeConfig):
        assert f"| `{f.name}` |" in page, f.name
