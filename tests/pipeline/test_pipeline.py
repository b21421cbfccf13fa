"""SupportPipeline on tiny random models: every stage runs, options do what they say."""

from __future__ import annotations

import pytest

from hf_persona.errors import HFPersonaError
from hf_persona.pipeline import STRATEGIES, SupportPipeline, SupportTurn


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return SupportPipeline.tiny(tmp_path_factory.mktemp("pipe"))


def test_a_turn_runs_every_stage(pipe):
    pipe.reset()
    turn = pipe.respond("i lost my job and i can not sleep", seed=3)
    assert isinstance(turn, SupportTurn) and turn.reply and turn.seeker == "i lost my job and i can not sleep"
    assert turn.persona and turn.persona == pipe.persona  # the extractor wrote something
    assert turn.strategy in STRATEGIES
    # the contrastive alpha is the config's per-strategy value for the strategy that opened the reply
    assert turn.alpha == pytest.approx(pipe.pal.config.strategy_alpha[turn.strategy])
    texts = [text for text, _ in turn.ranking]
    assert turn.reply in texts and len(texts) == 1 + pipe.alternatives
    scores = [score for _, score in turn.ranking]
    assert scores == sorted(scores, reverse=True)
    assert isinstance(turn.receiver_score, float)
    assert pipe.history == [("seeker", turn.seeker), ("supporter", turn.reply)]
    assert set(turn.timings) == {"persona", "reply", "cobert", "receiver"}
    assert turn.to_dict()["ranking"][0][0] == texts[0]


def test_same_seed_same_reply_and_persona_grows(pipe):
    pipe.reset()
    first = pipe.respond("i feel alone since i moved", seed=5)
    pipe.reset()
    again = pipe.respond("i feel alone since i moved", seed=5)
    assert (again.reply, again.strategy, again.persona) == (first.reply, first.strategy, first.persona)
    second = pipe.respond("my sister lives far away now", seed=5)
    assert second.persona[: len(first.persona)] == first.persona  # merged, never dropped
    assert len(pipe.history) == 4


def test_options_force_strategy_fix_alpha_and_drop_persona(pipe, tmp_path):
    pipe.reset()
    forced = pipe.respond("hello", strategy="Question", alpha=0.5)
    assert forced.strategy == "Question" and forced.alpha == 0.5
    off = pipe.respond("i am tired", persona_off=True, strategy="Self-disclosure")
    assert off.strategy == "Self-disclosure" and off.alpha is None
    assert pipe.strategies == ["", "Question", "", "Self-disclosure"]
    path = pipe.heatmap(tmp_path / "h.png")
    assert path is not None and path.stat().st_size > 1000


def test_bad_input_is_a_clear_error(pipe):
    with pytest.raises(HFPersonaError, match="empty"):
        pipe.respond("   ")
    with pytest.raises(HFPersonaError, match="unknown strategy 'Hug'.*Question"):
        pipe.respond("hi", strategy="Hug")
    before = list(pipe.history)
    with pytest.raises(HFPersonaError, match="alpha 'lots'"):
        pipe.respond("hi", alpha="lots")
    assert pipe.history == before  # a rejected turn leaves no trace
    pipe.reset()
    assert pipe.heatmap("unused.png") is None  # no persona yet
