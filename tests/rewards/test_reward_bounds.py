"""Issue 28 item 4: every reward has a documented range and an empty or whitespace-only completion scores
exactly its minimum (RL must not learn to say nothing); CoBERT's score_candidates type-checks its indices.

Expectations are hand-computed: the minimum of each documented range, and the scores of the non-empty
completions equal to what the same reward gives them alone (the empty ones are left out of the batch).
"""

import math

import pytest
import torch

import hf_persona
from hf_persona.errors import HFPersonaError
from hf_persona.plugins import load_plugins
from hf_persona.rewards.bounds import floor_blank, is_blank

P = ["i play the guitar in a band .", "i like to go fishing .", "i love horror movies ."]
Q = ["i bake bread every sunday .", "my favorite color is green ."]
BLANKS = ["", "   ", "\n\t", [{"role": "assistant", "content": " "}], {"content": ""}, []]


@pytest.fixture(scope="module", autouse=True)
def plugins_and_one_thread():
    load_plugins(entry_points=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_is_blank():
    assert all(is_blank(b) for b in BLANKS)
    for text in ("a", " . ", [{"role": "assistant", "content": "hi"}], {"content": "x"},
                 [{"role": "user", "content": ""}, {"role": "assistant", "content": "yes"}]):
        assert not is_blank(text)
    assert not is_blank(3) and not is_blank([1, 2])  # not a completion: the reward reports it


def test_floor_blank_subsets_every_per_completion_column():
    seen = {}

    def score(prompts, completions, **columns):
        seen.update(prompts=prompts, completions=completions, **columns)
        return [10.0, -10.0, None]

    state = object()
    out = floor_blank(score, "toy", (-1.0, 1.0), ["p0", "p1", "p2", "p3"], ["a", "", "b", "c"],
                      {"persona": [0, 1, 2, 3], "completion_ids": [[0], [1], [2], [3]], "trainer_state": state})
    assert out == [1.0, -1.0, -1.0, None]  # clipped to the range; None (no reward) kept
    assert seen == {"prompts": ["p0", "p2", "p3"], "completions": ["a", "b", "c"], "persona": [0, 2, 3],
                    "completion_ids": [[0], [2], [3]], "trainer_state": state}
    with pytest.raises(HFPersonaError, match="column 'persona' has 2 rows for 3 completions"):
        floor_blank(score, "toy", (-1.0, 1.0), None, ["a", "", "b"], {"persona": [1, 2]})
    with pytest.raises(HFPersonaError, match="single str"):
        floor_blank(score, "toy", (-1.0, 1.0), None, "abc", {})
    assert floor_blank(score, "toy", (-1.0, 1.0), None, ["", " "], {}) == [-1.0, -1.0]  # nothing scored


# ---------------------------------------------------------------- persona_perception (P2Bot RS.3)
def test_empty_completion_scores_the_minimum_below_an_off_persona_reply(minilm_path):
    """The issue's probe: a zero-shot MiniLM Receiver rated "" at 0.30, above off-persona replies (0.27,
    0.21, 0.19). Now "" scores exactly the documented minimum, -1.0, and the replies keep their scores."""
    from hf_persona.rewards.persona_perception import MIN_SCORE

    assert MIN_SCORE == -1.0
    reward = hf_persona.get_reward("persona_perception", model=minilm_path)
    off = ["the weather is nice today .", "what time is it ?", "ok ."]
    got = reward(prompts=["hi"] * 6, completions=["", "   ", [{"role": "assistant", "content": ""}]] + off,
                 persona=[P] * 6)
    assert got[:3] == [-1.0, -1.0, -1.0]
    alone = [reward(prompts=["hi"], completions=[t], persona=[P])[0] for t in off]
    assert got[3:] == pytest.approx(alone, abs=1e-5)
    assert all(-1.0 < s for s in alone)  # every off-persona reply now beats saying nothing
    # what the Receiver itself says about "" (the old reward): above at least one off-persona reply
    receiver = reward.receiver
    assert receiver.score("", P) > min(alone)


@pytest.fixture(scope="module")
def receiver(tiny_bert_dir):
    from hf_persona.models.receiver import ReceiverModel

    torch.manual_seed(0)
    return ReceiverModel.from_encoder_pretrained(tiny_bert_dir).eval()


def test_persona_perception_min_score_option_and_clipping(receiver, monkeypatch):
    texts = ["i play guitar", "i bake bread"]
    raw = [receiver.score(t, P) for t in texts]
    floor = (raw[0] + raw[1]) / 2  # between the two scores: the lower one is raised to it
    reward = hf_persona.get_reward("persona_perception", model=receiver, min_score=floor)
    encoded = []
    original = receiver.encode_texts
    monkeypatch.setattr(receiver, "encode_texts", lambda texts, *a, **k: encoded.extend(texts) or original(texts, *a, **k))
    got = reward(prompts=["a"] * 3, completions=[" ", *texts], persona=[P] * 3)
    assert "" not in encoded and " " not in encoded  # the empty completion is never scored
    assert got[0] == floor
    assert got[1:] == pytest.approx([max(r, floor) for r in raw], abs=1e-6)
    for bad in (float("nan"), float("inf"), "low", True, None):
        with pytest.raises(HFPersonaError, match="min_score must be a finite number"):
            hf_persona.get_reward("persona_perception", model=receiver, min_score=bad)
    with pytest.raises(HFPersonaError, match="completions must be a list"):
        reward(prompts=["a"], completions="i play guitar", persona=[P])


def test_discounted_reward_floors_empty_turns(receiver):
    reward = hf_persona.get_reward("persona_perception", model=receiver, mode="discounted", gamma=0.5,
                                   min_score=-3.0)
    future = ["i baked bread today", "  ", "green is nice"]
    got = reward(prompts=["a", "b", "c"], completions=["i play guitar", "", "i play guitar"], persona=[P] * 3,
                 partner_persona=[Q] * 3, future_turns=[future, future, []])
    r = receiver.score
    # own turn, then partner (γ), the empty own turn (γ², counted as min_score), partner (γ³)
    expected = r("i play guitar", P) + 0.5 * r(future[0], Q) + 0.25 * -3.0 + 0.125 * r(future[2], Q)
    assert got[0] == pytest.approx(max(expected, -3.0), abs=1e-5)
    assert got[1] == -3.0  # an empty completion: the minimum, whatever followed it
    assert got[2] == pytest.approx(r("i play guitar", P), abs=1e-5)


# ---------------------------------------------------------------- P2Bot RS.1, RS.2, penalty
def test_repetition_penalty_range_is_minus_one_to_zero():
    pen = hf_persona.get_reward("repetition_penalty")
    assert type(pen).__name__ == "RepetitionPenalty" and pen.reward_range == (-1.0, 0.0)
    # before: "" shared no word with the history, so it scored 0, the best possible value
    got = pen(["", "", ""], ["", "i like cats", " "], history=[["i like cats"], ["dogs bark"], []])
    assert got == [-1.0, 0.0, -1.0]


@pytest.fixture(scope="module")
def transmitter(minilm_path):
    from transformers import AutoTokenizer, BertConfig

    from hf_persona.models.transmitter import TransmitterConfig, TransmitterForDialogue, prepare_tokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    prepare_tokenizer(tok)
    torch.manual_seed(0)
    cfg = TransmitterConfig(
        backbone_config=BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=256),
        max_context_tokens=96, max_response_tokens=12)
    model = TransmitterForDialogue(cfg)
    model.adapt_to_tokenizer(tok)
    return model.eval(), tok


def test_language_style_and_coherence_floor_empty_completions(transmitter):
    model, tok = transmitter
    rs1 = hf_persona.get_reward("language_style", model=model, tokenizer=tok)
    assert rs1.reward_range == (-20.0, 0.0)
    alone = rs1([""], ["i like cats"])[0]
    assert rs1(["", "", ""], ["", "i like cats", "  "]) == [-20.0, pytest.approx(alone, abs=1e-5), -20.0]
    # a floor above the score raises it: no completion scores below an empty one
    high = hf_persona.get_reward("language_style", model=model, tokenizer=tok, min_score=alone / 2)
    assert high([""], ["i like cats"]) == [alone / 2] and high([""], [""]) == [alone / 2]
    with pytest.raises(HFPersonaError, match="below the reward's maximum 0"):
        hf_persona.get_reward("language_style", model=model, tokenizer=tok, min_score=0.5)

    cols = {"persona": [["i like cats ."]] * 2, "history": [["hi"], ["hi", "pets ?"]]}
    rs2 = hf_persona.get_reward("discourse_coherence", model=model, tokenizer=tok)
    ref = rs2([""], ["no"], persona=cols["persona"][1:], history=cols["history"][1:])[0]
    assert rs2(["", ""], ["", "no"], **cols) == [-20.0, pytest.approx(ref, abs=1e-5)]
    half = hf_persona.get_reward("discourse_coherence", model=model, tokenizer=tok, form="prob_minus_half")
    assert half.reward_range == (-0.5, 0.5)
    assert half(["", ""], ["", "no"], **cols) == [-0.5, pytest.approx(math.exp(ref) - 0.5, abs=1e-6)]


# ---------------------------------------------------------------- PPG critic rewards
def _critic(path, minilm_path, bias):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, num_labels=2)
    m = BertForSequenceClassification(cfg)
    with torch.no_grad():  # logits = bias exactly: a critic that always says "relevant"
        m.classifier.weight.zero_()
        m.classifier.bias.copy_(torch.tensor(bias))
    m.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_critic_rewards_give_empty_completions_the_minimum(tmp_path, minilm_path, tiny_bert_dir):
    yes = _critic(tmp_path / "yes", minilm_path, [0.0, 1.0])
    cols = {"partner_persona": [["i am a nurse."], ["i ski."], ["i am tall."]]}
    comps = ["", "i am a nurse too", [{"role": "assistant", "content": "  "}]]
    # before: the critic judged "" relevant, +1 like a real answer
    assert hf_persona.get_reward("critic", model=yes)(["a"] * 3, comps, **cols) == [-1.0, 1.0, -1.0]
    p = 1 / (1 + math.exp(-1.0))  # softmax([0, 1])[1]
    probs = hf_persona.get_reward("critic", model=yes, mode="prob")(["a"] * 3, comps, **cols)
    assert probs == [0.0, pytest.approx(p, abs=1e-5), 0.0]

    ppg = hf_persona.get_reward("ppg_critic", drg=tiny_bert_dir, critic=yes)
    assert type(ppg).__name__ == "PPGCriticReward" and ppg.reward_range == (-1.0, 1.0)
    ppg.max_new_tokens = 3
    turn = {"self_persona": [["i ski."]] * 2, "context": [["hi , how are you ?"]] * 2,
            "context_speakers": [["partner"]] * 2}
    assert ppg(["a", "b"], ["  ", "i am a nurse."], **turn) == [-1.0, 1.0]
    assert len(ppg.last_responses) == 1  # the empty persona went to neither the DRG nor the critic


# ---------------------------------------------------------------- CoBERT score_candidates indices
@pytest.fixture(scope="module")
def cobert(tiny_bert_dir):
    from transformers import AutoTokenizer

    from hf_persona.models.cobert import CoBERTForResponseSelection

    torch.manual_seed(0)
    model = CoBERTForResponseSelection.from_encoder(tiny_bert_dir)
    model.tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return model.eval()


CONTEXTS = [["hi , do you have pets ?"], ["what do you do for fun ?"]]
RESPONSES = ["i have two dogs .", "i like to ski .", "blue is my color ."]


@pytest.mark.parametrize("indices, error, message", [
    ([[0.5, 1.7], [0, 1]], TypeError, r"candidate_indices\[0\]\[0\] must be an integer index .* got float 0.5"),
    ([[0, 1], [True, 2]], TypeError, r"candidate_indices\[1\]\[0\] must be an integer index .* got bool True"),
    ([[0, 1], ["1", 2]], TypeError, r"candidate_indices\[1\]\[0\] must be an integer index .* got str '1'"),
    (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), TypeError, r"candidate_indices must hold .* got a tensor/array of "
                                                          r"torch.float32"),
    ([[0, 1], 2], TypeError, r"candidate_indices\[1\] must be a list of integer indices, got int 2"),
    ("01", TypeError, r"candidate_indices must be a list of lists .* got str"),
    ([[0, 1], [2]], ValueError, r"same number C of candidates per query, got rows of lengths \[1, 2\]"),
    ([[0, 1]], ValueError, r"must be \[num_queries=2, C\] .* got shape \(1, 2\)"),
    ([[0, 1], [2, 3]], ValueError, r"must lie in \[0, 3\) \(the cache has 3 candidates\), got 3 at \[1\]\[1\]"),
    ([[0, -1], [2, 1]], ValueError, r"must lie in \[0, 3\) .* got -1 at \[0\]\[1\]"),
])
def test_score_candidates_rejects_non_integer_or_out_of_range_indices(cobert, indices, error, message):
    cache = cobert.encode_candidates(RESPONSES)
    with pytest.raises(error, match=message):
        cobert.score_candidates(CONTEXTS, None, cache, candidate_indices=indices)


def test_score_candidates_accepts_integer_lists_tensors_and_arrays(cobert):
    import numpy as np

    cache = cobert.encode_candidates(RESPONSES)
    full = cobert.score_candidates(CONTEXTS, None, cache)
    want = torch.stack([full[0, [0, 1]], full[1, [2, 0]]])
    for indices in ([[0, 1], [2, 0]], torch.tensor([[0, 1], [2, 0]], dtype=torch.int32),
                    np.array([[0, 1], [2, 0]]), [np.array([0, 1]), [np.int64(2), 0]]):
        got = cobert.score_candidates(CONTEXTS, None, cache, candidate_indices=indices)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            cobert.score_candidates(CONTEXTS, None, cache, batch_size=bad)
