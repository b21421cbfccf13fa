"""One recipe shape for P2Bot (issue 24, item 2): ``train_receiver``, ``train_transmitter`` and
``train_selfplay`` take a config from hf_persona.training.configs (or the output folder and keywords),
their commands' options are the configs' fields, and the older keyword names still work.

Nothing here trains: the commands run against stand-in recipe modules that record the config they
get, and the Python calls fail while the config is built, before any model or data loads."""

import sys
import types
import warnings

import pytest
from click.testing import CliRunner

from hf_persona.data import read_personachat, sample_path
from hf_persona.errors import HFPersonaError
from hf_persona.training.configs import ReceiverTrainingConfig, SelfPlayTrainingConfig, TransmitterTrainingConfig
from hf_persona.training.recipe import RecipeResult


@pytest.fixture
def recorded(monkeypatch):
    """Stand-ins for the three recipe modules (and the Receiver's split loader): each call is
    recorded as (function, positional args, keyword args) and returns an empty RecipeResult."""
    from hf_persona.cli import register_plugin_commands

    register_plugin_commands()
    calls = []

    def stand_in(name):
        def called(*args, **kwargs):
            calls.append((name, args, kwargs))
            config = next(a for a in args if hasattr(a, "output_dir"))
            return RecipeResult({"global_step": 0}, config.output_dir)

        return called

    for module, name in (("receiver", "train_receiver"), ("transmitter", "train_transmitter"),
                         ("selfplay", "train_selfplay")):
        fake = types.ModuleType(f"hf_persona.training.{module}")
        setattr(fake, name, stand_in(name))
        fake.REWARD_NAMES = ("language_style", "discourse_coherence", "persona_perception", "repetition_penalty")
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
    splits = types.ModuleType("hf_persona.evaluation.receiver")
    splits.load_splits = lambda data, first, fraction, seed: [("sample", "train", "dev")]
    monkeypatch.setitem(sys.modules, splits.__name__, splits)
    return calls


def _invoke(args):
    from hf_persona.cli import cli

    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_each_command_without_recipe_options_runs_the_python_default_config(recorded, tmp_path):
    data = str(sample_path("personachat"))
    dialogues = len(read_personachat(data))  # fewer than 800: --dev-from is clamped to all of them
    out = tmp_path / "run"
    model = tmp_path / "sft"
    model.mkdir()
    _invoke(["train", "receiver", "--data", data, "--output-dir", out])
    _invoke(["train", "transmitter", "--data", data, "--output-dir", out])
    _invoke(["train", "selfplay", "--model", model, "--data", data, "--output-dir", out])
    (receiver, r_args, r_kw), (transmitter, t_args, t_kw), (selfplay, s_args, s_kw) = recorded
    assert receiver == "train_receiver" and r_args == (["train"], ReceiverTrainingConfig(output_dir=str(out)))
    assert r_kw == {"eval_ds": ["dev"]}
    assert transmitter == "train_transmitter" and t_kw == {"train_data": data}
    assert t_args == (TransmitterTrainingConfig(output_dir=str(out), dev_from=dialogues),)
    assert selfplay == "train_selfplay" and s_kw == {"train_data": data, "receiver": None}
    assert s_args == (str(model), SelfPlayTrainingConfig(output_dir=str(out), dev_from=dialogues))


def test_the_old_flag_spellings_still_set_their_fields(recorded, tmp_path):
    _invoke(["train", "receiver", "--output-dir", tmp_path / "r", "--separate-encoders", "--no-resume", "--loss",
             "softmax", "--lr", "1e-4", "--epochs", "2", "--tau-end", "0.25", "--json", tmp_path / "r.json"])
    _invoke(["train", "selfplay", "--model", tmp_path, "--output-dir", tmp_path / "s", "--weights", "rs1=1",
             "--mask-truncated", "--kl-beta", "0.1", "--max-steps", "5", "--no-resume"])
    receiver, selfplay = recorded[0][1][1], recorded[1][1][1]
    assert (receiver.share_encoders, receiver.resume, receiver.loss_type) == (False, False, "softmax")
    assert (receiver.learning_rate, receiver.epochs, receiver.tau_end) == (1e-4, 2.0, 0.25)
    assert receiver.json_out == str(tmp_path / "r.json")  # the recipe writes the --json file (rank 0)
    assert selfplay.weights == {"language_style": 1.0} and selfplay.mask_truncated is True
    assert (selfplay.kl_beta, selfplay.max_steps, selfplay.resume) == (0.1, 5, False)


def test_the_receivers_older_keywords_still_work_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning) as said:
        cfg = ReceiverTrainingConfig.build(tmp_path, num_train_epochs=3.0, time_budget_minutes=5.0,
                                           disable_tqdm=True)
    assert sorted(str(w.message).split("'")[1] for w in said) == ["disable_tqdm", "num_train_epochs",
                                                                   "time_budget_minutes"]
    assert (cfg.epochs, cfg.budget_minutes, cfg.progress) == (3.0, 5.0, False)
    with pytest.warns(DeprecationWarning):
        # disable_tqdm=None keeps meaning "the Trainer's default", the config's default
        assert ReceiverTrainingConfig.build(tmp_path, disable_tqdm=None) == ReceiverTrainingConfig(output_dir=tmp_path)
    assert ReceiverTrainingConfig(output_dir=tmp_path).progress is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ReceiverTrainingConfig.build(tmp_path, epochs=2.0, budget_minutes=1.0, progress=False)
    # through the recipe: the older name warns, and its bad value names the field it now is
    from hf_persona.training.receiver import train_receiver

    with pytest.warns(DeprecationWarning, match="'time_budget_minutes' is now 'budget_minutes'"):
        with pytest.raises(HFPersonaError, match=r"ReceiverTrainingConfig\.budget_minutes = -1"):
            train_receiver([], tmp_path, time_budget_minutes=-1)


def test_bad_values_from_python_name_the_field_before_anything_loads(tmp_path):
    from hf_persona.training.receiver import train_receiver
    from hf_persona.training.selfplay import train_selfplay
    from hf_persona.training.transmitter import train_transmitter

    with pytest.raises(HFPersonaError, match=r"ReceiverTrainingConfig\.margin = -1: expected a finite number >= 0"):
        train_receiver([], tmp_path, margin=-1)
    with pytest.raises(HFPersonaError, match=r"ReceiverTrainingConfig\.loss_type = 'infonce': expected one of"):
        train_receiver([], tmp_path, loss_type="infonce")
    with pytest.raises(HFPersonaError, match=r"unknown training argument\(s\) \['no_such_argument'\]"):
        train_receiver([], tmp_path, no_such_argument=1)  # keywords that are no field are TrainingArguments'
    with pytest.raises(HFPersonaError, match=r"ReceiverTrainingConfig\.lora = 4: not used by this recipe"):
        train_receiver([], tmp_path, lora=4)  # the Receiver takes a peft_config
    with pytest.raises(HFPersonaError, match=r"TransmitterTrainingConfig\.lm_weight = 1.5: expected a finite number"):
        train_transmitter(tmp_path, lm_weight=1.5)
    with pytest.raises(HFPersonaError, match=r"TransmitterTrainingConfig\.eval_steps = 5: not used"):
        train_transmitter(tmp_path, eval_steps=5)
    with pytest.raises(HFPersonaError, match=r"SelfPlayTrainingConfig\.gamma = 2: expected a finite number >= 0 and"):
        train_selfplay("sft", tmp_path, gamma=2)
    with pytest.raises(HFPersonaError, match=r"SelfPlayTrainingConfig\.baseline = 'median': expected one of"):
        train_selfplay("sft", tmp_path, baseline="median")
    with pytest.raises(HFPersonaError, match=r"SelfPlayTrainingConfig\.batch_size = 4: not used by this recipe"):
        train_selfplay("sft", tmp_path, batch_size=4)  # its batch is seeds_per_step x episodes_per_seed x turns
    with pytest.raises(TypeError, match="has no field 'tau'"):
        train_transmitter(tmp_path, tau=1.0)


def test_a_config_goes_in_whole_or_with_overrides(tmp_path):
    cfg = TransmitterTrainingConfig(output_dir=tmp_path, epochs=3.0)
    assert TransmitterTrainingConfig.build(cfg) is cfg
    assert TransmitterTrainingConfig.build(cfg, seed=4) == TransmitterTrainingConfig(output_dir=tmp_path, epochs=3.0,
                                                                                      seed=4)
    # the defaults each recipe had before its config: one place now
    assert (cfg.learning_rate, cfg.batch_size, cfg.save_steps, cfg.dev_from, cfg.progress) == (6.25e-5, 8, 200, 800,
                                                                                             False)
    play = SelfPlayTrainingConfig(output_dir=tmp_path)
    assert (play.learning_rate, play.max_steps, play.save_steps, play.logging_steps, play.turns) == (1e-6, 1000, 20,
                                                                                                   1, 3)
    receiver = ReceiverTrainingConfig(output_dir=tmp_path)
    assert (receiver.learning_rate, receiver.batch_size, receiver.sides) == (6.25e-5, 16, ("you", "partner"))
