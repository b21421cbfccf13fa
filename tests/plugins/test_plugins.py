import sys
import types

import pytest

import hf_persona
from hf_persona import hookimpl, plugins


@pytest.fixture
def fresh_plugins(monkeypatch):
    plugins.reset_plugins()
    yield monkeypatch
    plugins.reset_plugins()


def test_builtins_register_like_plugins(fresh_plugins):
    listing = hf_persona.list_plugins()
    assert {"personachat", "esconv", "msc"} <= set(listing["datasets"])
    assert "hf_persona.default_plugins.datasets" in listing["plugins"]
    ds = hf_persona.get_dataset("personachat")  # the embedded sample
    assert len(ds) > 10 and set(ds.column_names) >= {"your_persona", "utterances"}


def test_unknown_names_list_the_valid_ones(fresh_plugins):
    with pytest.raises(hf_persona.UnknownNameError, match=r"unknown dataset 'nope'; valid names: .*esconv.*personachat"):
        hf_persona.get_dataset("nope")
    with pytest.raises(KeyError):
        hf_persona.get_reward("nope")
    with pytest.raises(ValueError, match="unknown logits processor 'nope'"):
        hf_persona.get_logits_processor("nope")


def test_entry_point_plugin_found_and_usable(fresh_plugins):
    fresh_plugins.setenv("HF_PERSONA_LOAD_PLUGINS", "hf-persona-distinct")
    listing = hf_persona.list_plugins()
    assert "distinct_n" in listing["rewards"]
    assert any(name.startswith("hf-persona-distinct:") for name in listing["plugins"])
    reward = hf_persona.get_reward("distinct_n", n=1)
    assert reward(["p", "p"], ["a a b b", "a b c"]) == pytest.approx([0.5, 1.0])


def test_env_var_restricts_and_switches_off_entry_points(fresh_plugins):
    fresh_plugins.setenv("HF_PERSONA_LOAD_PLUGINS", "some-other-plugin")
    assert "distinct_n" not in hf_persona.list_plugins()["rewards"]
    plugins.reset_plugins()
    fresh_plugins.setenv("HF_PERSONA_LOAD_PLUGINS", "")
    assert "distinct_n" not in hf_persona.list_plugins()["rewards"]
    plugins.reset_plugins()
    fresh_plugins.delenv("HF_PERSONA_LOAD_PLUGINS")
    plugins.load_plugins(entry_points=False)
    assert "distinct_n" not in hf_persona.list_plugins()["rewards"]


def test_failing_plugin_is_reported_and_others_keep_working(fresh_plugins):
    class Broken:
        @hookimpl
        def register_rewards(self, register):
            register("half_registered", lambda **kw: None)
            raise RuntimeError("boom")

    class Good:
        @hookimpl
        def register_rewards(self, register):
            register("good", lambda **kw: (lambda prompts, completions, **c: [1.0] * len(completions)))

    plugins.load_plugins()
    plugins.pm.register(Broken(), name="broken-dist:broken")
    plugins.pm.register(Good(), name="good-dist:good")
    listing = hf_persona.list_plugins()
    assert "good" in listing["rewards"] and "half_registered" not in listing["rewards"]
    errors = [str(e) for e in hf_persona.plugin_errors()]
    assert any("broken-dist:broken" in e and "boom" in e for e in errors)
    assert hf_persona.get_reward("good")(["p"], ["c"]) == [1.0]


def test_entry_point_import_error_is_reported(fresh_plugins):
    class FakeDist:
        name = "hf-persona-broken"

    class FakeEP:
        name = "broken"
        dist = FakeDist()

        def load(self):
            raise ImportError("missing dependency xyz")

    fresh_plugins.setattr(plugins, "installed_entry_points", lambda: [FakeEP()])
    fresh_plugins.delenv("HF_PERSONA_LOAD_PLUGINS")
    listing = hf_persona.list_plugins()
    assert "personachat" in listing["datasets"]
    assert any("hf-persona-broken:broken" in str(e) and "xyz" in str(e) for e in hf_persona.plugin_errors())


def test_model_registration_goes_to_auto_classes(fresh_plugins):
    from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
    import torch

    class ToyConfig(PretrainedConfig):
        model_type = "hf_persona_toy_test"

        def __init__(self, width=3, **kw):
            self.width = width
            super().__init__(**kw)

    class ToyModel(PreTrainedModel):
        config_class = ToyConfig

        def __init__(self, config):
            super().__init__(config)
            self.lin = torch.nn.Linear(config.width, 1)
            self.post_init()

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register("toy", ToyConfig, ToyModel)

    plugins.load_plugins()
    plugins.pm.register(Plugin(), name="toy-plugin")
    assert "toy" in hf_persona.list_plugins()["models"]
    assert isinstance(AutoModel.from_config(AutoConfig.for_model("hf_persona_toy_test", width=4)), ToyModel)
