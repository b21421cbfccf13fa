"""One ``completion_text`` for every reward, and the old import paths of the moved rewards."""

import pytest

from hf_persona.errors import HFPersonaError
from hf_persona.rewards import PersonaPerceptionReward, completion_text


@pytest.mark.parametrize("completion, text", [
    (" hi there ", " hi there "),
    ({"role": "assistant", "content": "hello"}, "hello"),
    ([{"role": "assistant", "content": "one"}], "one"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
     "a b"),
    ([{"role": "user", "content": "only user"}], "only user"),
    ([{"content": 3}], "3"),
])
def test_completion_text_of_every_trl_shape(completion, text):
    assert completion_text(completion) == text


@pytest.mark.parametrize("bad", [None, 3, [], ["no dict"], [{"role": "assistant"}], {"text": "x"}])
def test_completion_text_names_the_bad_type(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        completion_text(bad)


def test_persona_perception_reports_a_bad_completion_with_its_index():
    reward = PersonaPerceptionReward(receiver=None)  # the texts are checked before anything is scored
    with pytest.raises(HFPersonaError, match="completion #1 is int"):
        reward(["p", "p"], ["fine", 5], persona=[["i like tea ."]] * 2)


@pytest.mark.parametrize("old_module, old, new_module, new", [
    ("hf_persona.training.p2bot_rewards", "LanguageStyleReward", "hf_persona.rewards.p2bot", "LanguageStyleScore"),
    ("hf_persona.training.p2bot_rewards", "DiscourseCoherenceReward", "hf_persona.rewards.p2bot",
     "DiscourseCoherenceScore"),
    ("hf_persona.training.p2bot_rewards", "RepetitionPenalty", "hf_persona.rewards.p2bot", "RepetitionScore"),
    ("hf_persona.training.p2bot_rewards", "bow_cosine", "hf_persona.rewards.p2bot", "bow_cosine"),
    ("hf_persona.training.ppg_rl", "CriticReward", "hf_persona.rewards.critic", "CriticScore"),
    ("hf_persona.training.ppg_rl", "PPGCriticReward", "hf_persona.rewards.critic", "PPGCriticScore"),
])
def test_moved_rewards_still_import_with_a_deprecation_warning(old_module, old, new_module, new):
    import importlib

    module = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{new_module}.{new}"):
        value = getattr(module, old)
    assert value is getattr(importlib.import_module(new_module), new)
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")
