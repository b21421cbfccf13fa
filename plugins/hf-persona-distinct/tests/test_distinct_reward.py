import pytest

from hf_persona_distinct import DistinctNReward


def test_hand_computed_values():
    reward = DistinctNReward(n=2)
    # "fine fine fine fine": bigrams (fine,fine) x3 -> 1 distinct / 3
    # "i like red apples": 3 distinct / 3; "hi": no bigram -> empty_score 0
    assert reward(["q", "q", "q"], ["fine fine fine fine", "i like red apples", "hi"]) == pytest.approx([1 / 3, 1.0, 0.0])


def test_copy_penalty_and_chat_format():
    reward = DistinctNReward(n=1, copy_weight=0.5)
    # completion tokens: i, like, dogs -> 3 distinct/3 = 1; "dogs" and "i" occur in prompt -> 2/3 copied
    got = reward(prompts=["do i like dogs ?"], completions=[[{"role": "assistant", "content": "I like dogs"}]])
    assert got == pytest.approx([1 - 0.5 * 3 / 3])
    got = reward(prompts=["cats ?"], completions=["i like dogs"])
    assert got == pytest.approx([1.0])


def test_bad_input():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        DistinctNReward(n=0)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        DistinctNReward()(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="expected a string"):
        DistinctNReward()(["a"], [42])
