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


def test_whole_sentences_cuts_a_reply_at_its_last_sentence_end():
    from hf_persona.pipeline import whole_sentences

    assert whole_sentences("I am sorry. Have you tried talking to someone") == "I am sorry."
    assert whole_sentences("Hi! How are you?") == "Hi! How are you?"
    assert whole_sentences('He said "stop." Then he') == 'He said "stop."'
    assert whole_sentences("Really?! and then") == "Really?!"
    assert whole_sentences("no sentence end here") == "no sentence end here"
    assert whole_sentences("version 2.5 is out and") == "version 2.5 is out and"  # a dot inside a number is no end


def _recording_generate(pipe, new_text=None):
    """Wrap ``pipe.pal.generate``: record each prompt; with ``new_text``, return it (tokenised, cut or
    repeated to ``max_new_tokens``, no end-of-turn) as the generated tokens."""
    import torch

    prompts, original = [], pipe.pal.generate

    def generate(**kwargs):
        prompts.append(kwargs["input_ids"][0].tolist())
        if new_text is None:
            return original(**kwargs)
        ids = pipe.tokenizer(new_text, add_special_tokens=False)["input_ids"]
        n = kwargs["max_new_tokens"]
        new = (ids * n)[:n]
        return torch.cat([kwargs["input_ids"], torch.tensor([new])], 1)

    return prompts, generate


def test_the_reply_is_decoded_after_its_strategy_token_once_the_dialogue_shows_one(pipe, monkeypatch):
    pipe.reset()
    prompts, generate = _recording_generate(pipe)
    monkeypatch.setattr(pipe.pal, "generate", generate)
    first = pipe.respond("i lost my job and i can not sleep", seed=1)
    assert pipe.reply_opening(first.strategy) is not None  # the next turn follows a strategy-opened one
    second = pipe.respond("my wife says i should talk to someone", seed=1)
    strategy_ids = set(pipe._strategy_ids.values())
    # turn 1: no supporter turn yet, the text starts right after the generation prompt
    assert prompts[0][-1] not in strategy_ids
    # turn 2: the prompt ends with the strategy token PAL chose, and the reply is the text after it
    assert prompts[1][-1] == pipe._strategy_ids[second.strategy]
    assert pipe.strategies == ["", first.strategy, "", second.strategy]


def test_a_reply_cut_by_the_token_limit_ends_at_its_last_sentence(pipe, monkeypatch):
    pipe.reset()
    _, generate = _recording_generate(pipe, "i hear you. maybe a walk would")
    monkeypatch.setattr(pipe.pal, "generate", generate)
    turn = pipe.respond("i can not sleep", seed=0)
    assert turn.reply == "i hear you."
    assert pipe.history[-1] == ("supporter", "i hear you.")


def test_a_reply_that_repeats_an_earlier_one_is_sampled_again(pipe, monkeypatch):
    import torch

    texts = iter(["i hear you.", "I hear  you.", "tell me more.", "unused."])  # the second repeats the first
    calls = []

    def generate(**kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        ids = pipe.tokenizer(next(texts), add_special_tokens=False)["input_ids"] + [pipe.tokenizer.eos_token_id]
        return torch.cat([kwargs["input_ids"], torch.tensor([ids])], 1)

    monkeypatch.setattr(pipe.pal, "generate", generate)
    pipe.reset()
    assert pipe.respond("i can not sleep", seed=0).reply == "i hear you." and pipe.last_resamples == 0
    second = pipe.respond("i worry all night", seed=0)
    assert second.reply == "tell me more." and pipe.last_resamples == 1 and len(calls) == 3
    monkeypatch.setattr(pipe, "fresh_tries", 0)
    texts = iter(["tell me more."])
    assert pipe.respond("still awake", seed=0).reply == "tell me more." and pipe.last_resamples == 0
    with pytest.raises(HFPersonaError, match="fresh_tries must be an integer >= 0, got -1"):
        SupportPipeline(pipe.pal, pipe.tokenizer, fresh_tries=-1)
