"""The PPG recipes' configs (issue 24, item 2): the commands build the Python default config when no
recipe option is given, keep their flags, and bad values from Python name the field; the earlier
call forms of train_generator / train_critic / train_rl still build the same config. Nothing trains."""

import warnings

import pytest
from click.testing import CliRunner

from hf_persona.errors import HFPersonaError
from hf_persona.training import ppg as P
from hf_persona.training import ppg_rl as R
from hf_persona.training.configs import CriticTrainingConfig, GeneratorTrainingConfig, PPGRLTrainingConfig
from hf_persona.training.recipe import RecipeConfig, RecipeResult


class Captured(Exception):
    pass


@pytest.fixture
def recipes(monkeypatch):
    """The three recipes replaced by stand-ins recording (data, config, keywords); returns the records."""
    seen = []

    def fake(*args, **kwargs):
        config = next(a for a in args if isinstance(a, RecipeConfig))
        seen.append((args, config, kwargs))
        return RecipeResult({"steps": 0}, config.output_dir)

    monkeypatch.setattr(P, "train_generator", fake)
    monkeypatch.setattr(P, "train_critic", fake)
    monkeypatch.setattr(R, "train_rl", fake)
    return seen


def _invoke(args):
    from hf_persona.cli import cli, register_plugin_commands
    from hf_persona.data import sample_path

    register_plugin_commands()
    res = CliRunner().invoke(cli, ["train", *args[:1], "--data", str(sample_path("personachat")), *args[1:]],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_no_recipe_option_builds_the_python_default_config(recipes, tmp_path):
    out = str(tmp_path / "run")
    model = tmp_path / "model"
    model.mkdir()
    _invoke(["ppg", "--output-dir", out])
    _invoke(["drg", "--output-dir", out])
    _invoke(["critic", "--output-dir", out])
    _invoke(["ppg-rl", "--output-dir", out, "--ppg", str(model), "--drg", str(model), "--critic", str(model)])
    configs = [config for _, config, _ in recipes]
    assert [str(c.output_dir) for c in configs] == [out] * 4
    out = configs[0].output_dir  # as the option's type gives it
    assert configs == [GeneratorTrainingConfig(output_dir=out), GeneratorTrainingConfig(output_dir=out, task="drg"),
                       CriticTrainingConfig(output_dir=out), PPGRLTrainingConfig(output_dir=out)]
    assert recipes[2][2]["dev_rows"] is None  # the sample has fewer than 800 dialogues: all train


def test_the_commands_keep_their_flags(recipes, tmp_path):
    out = str(tmp_path / "run")
    model = tmp_path / "model"
    model.mkdir()
    _invoke(["drg", "--output-dir", out, "--epochs", "1.5", "--lr", "3e-4", "--lora", "q_proj, v_proj", "--lora-r",
             "4", "--no-resume", "--max-prompt-tokens", "100", "--max-context", "2", "--partner-persona", "bm25"])
    _invoke(["critic", "--output-dir", out, "--max-length", "48", "--warmup-ratio", "0.5", "--batch-size", "4",
             "--dev-from", "30"])
    _invoke(["ppg-rl", "--output-dir", out, "--ppg", str(model), "--drg", str(model), "--critic", str(model),
             "--only", "drg", "--rounds", "3", "--steps-per-phase", "4", "--num-generations", "4", "--reward-mode",
             "prob", "--beta", "0.1", "--lr", "5e-6", "--lora", "c_attn", "--seed", "3"])
    drg, critic, rl = (config for _, config, _ in recipes)
    assert (drg.task, drg.epochs, drg.learning_rate, drg.lora_target_modules, drg.lora) == (
        "drg", 1.5, 3e-4, ["q_proj", "v_proj"], 4)
    assert (drg.resume, drg.max_prompt_tokens, drg.max_context, drg.partner_persona) == (False, 100, 2, "bm25")
    assert (critic.max_length, critic.warmup_ratio, critic.batch_size) == (48, 0.5, 4)
    assert len(recipes[1][0][0]) == 30 and recipes[1][2]["dev_rows"]  # --dev-from 30: the rest are dev
    assert (rl.train_ppg, rl.train_drg, rl.rounds, rl.steps_per_phase, rl.num_generations) == (False, True, 3, 4, 4)
    assert (rl.reward_mode, rl.beta, rl.learning_rate, rl.lora_target_modules, rl.seed) == (
        "prob", 0.1, 5e-6, ["c_attn"], 3)


@pytest.mark.parametrize("config_class,values,field", [
    (GeneratorTrainingConfig, {"task": "persona"}, "task"),
    (GeneratorTrainingConfig, {"max_prompt_tokens": 0}, "max_prompt_tokens"),
    (GeneratorTrainingConfig, {"partner_persona": "silver"}, "partner_persona"),
    (GeneratorTrainingConfig, {"lora_target_modules": " , "}, "lora_target_modules"),
    (GeneratorTrainingConfig, {"lora": 0}, "lora"),
    (CriticTrainingConfig, {"warmup_ratio": 1.0}, "warmup_ratio"),
    (CriticTrainingConfig, {"max_length": 0}, "max_length"),
    (PPGRLTrainingConfig, {"num_generations": 1}, "num_generations"),
    (PPGRLTrainingConfig, {"batch_size": 7}, "batch_size"),
    (PPGRLTrainingConfig, {"top_p": 0.0}, "top_p"),
    (PPGRLTrainingConfig, {"rounds": 0}, "rounds"),
])
def test_a_bad_value_from_python_names_the_field(config_class, values, field):
    with pytest.raises(HFPersonaError, match=rf"{config_class.__name__}\.{field} = "):
        config_class(output_dir="x", **values)


def test_a_bad_value_stops_the_recipe_before_it_loads_anything(tmp_path):
    with pytest.raises(HFPersonaError, match=r"GeneratorTrainingConfig\.max_context = 0"):
        P.train_generator([], tmp_path, max_context=0)
    with pytest.raises(HFPersonaError, match=r"PPGRLTrainingConfig: nothing to train"):
        R.train_rl("ppg", "drg", "critic", [], tmp_path, train_ppg=False, train_drg=False)


def test_the_configs_accept_module_lists_and_per_turn_personas():
    assert GeneratorTrainingConfig(output_dir="x", lora_target_modules="q_proj,v_proj").lora_target_modules == [
        "q_proj", "v_proj"]
    assert PPGRLTrainingConfig(output_dir="x", lora_target_modules=("c_attn",)).lora_target_modules == ["c_attn"]
    personas = [["i ski ."], ["i am tall ."]]
    assert GeneratorTrainingConfig(output_dir="x", task="drg", partner_persona=personas).partner_persona == personas
    assert GeneratorTrainingConfig(output_dir="x", task="drg").completion_tokens() == 32


@pytest.fixture
def recorded(monkeypatch):
    """The configs the recipes build, recorded; the recipe then stops (:class:`Captured`)."""
    seen = []

    def recording(cls):
        class Recording(cls):
            def __post_init__(self):
                super().__post_init__()
                seen.append(self)
                raise Captured

        Recording.__name__ = cls.__name__
        return Recording

    monkeypatch.setattr(P, "GeneratorTrainingConfig", recording(GeneratorTrainingConfig))
    monkeypatch.setattr(P, "CriticTrainingConfig", recording(CriticTrainingConfig))
    monkeypatch.setattr(R, "PPGRLTrainingConfig", recording(PPGRLTrainingConfig))
    return seen


def _call(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(Captured):
            fn(*args, **kwargs)
    return sorted(str(w.message) for w in said if issubclass(w.category, DeprecationWarning))


def test_the_earlier_call_forms_build_the_same_config_with_a_warning(recorded, tmp_path):
    said = _call(P.train_generator, "drg", [], tmp_path, "minilm", lora_r=4, learning_rate=1e-3)
    assert said == ["GeneratorTrainingConfig: the keyword 'lora_r' is now 'lora'",
                    "train_generator(task, train_rows, output_dir, ...) is deprecated: use train_generator(train_rows, "
                    "output_dir, task=...) or a GeneratorTrainingConfig",
                    "train_generator: pass backbone by keyword (positionally is deprecated)"]
    assert _call(P.train_generator, [], tmp_path, task="drg", base="minilm") == [
        "GeneratorTrainingConfig: the keyword 'base' is now 'backbone'"]
    assert _call(P.train_generator, [], tmp_path, task="drg", backbone="minilm", lora=4, learning_rate=1e-3) == []
    old, keywords, new = (c.to_dict() for c in recorded[:3])
    assert old == new == GeneratorTrainingConfig(output_dir=tmp_path, task="drg", lora=4, learning_rate=1e-3).to_dict()
    assert keywords == GeneratorTrainingConfig(output_dir=tmp_path, task="drg").to_dict()

    assert _call(P.train_critic, [], tmp_path, "minilm", [], max_length=64) == [
        "train_critic: pass backbone, dev_rows by keyword (positionally is deprecated)"]
    assert _call(P.train_critic, [], tmp_path, dev_rows=[], max_length=64) == []
    assert recorded[3] == recorded[4]
    assert recorded[3].to_dict() == CriticTrainingConfig(output_dir=tmp_path, max_length=64).to_dict()

    assert _call(R.train_rl, "p", "d", "c", [], tmp_path, lora_r=4) == [
        "PPGRLTrainingConfig: the keyword 'lora_r' is now 'lora'"]
    assert _call(R.train_rl, "p", "d", "c", [], output_dir=tmp_path, lora=4) == []
    assert recorded[5] == recorded[6]
    assert recorded[5].to_dict() == PPGRLTrainingConfig(output_dir=tmp_path, lora=4).to_dict()
