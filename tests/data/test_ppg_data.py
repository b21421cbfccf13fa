"""PPG data construction and the shared input format (no models; the MiniLM tokenizer only)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_persona.data import ppg as D

ROW = {
    "dialogue_id": 7,
    "your_persona": ["i love skiing.", "i have two dogs."],
    "partner_persona": ["i am a nurse.", "i work nights.", "my favorite band is metallica.", "i live in ohio."],
    "utterances": ["hi , how are you ?", "great , just back from skiing .", "nice , i just finished a night shift .",
                   "are you a nurse ?"],
    "speakers": ["partner", "you", "partner", "you"],
}


def test_turns_from_both_speakers_match_hand_built_examples():
    turns = D.dialogue_turns(ROW)
    assert [t["turn"] for t in turns] == [1, 2, 3]
    t1, t2, t3 = turns
    # utterance 1 is by "you": s = your persona, p = partner persona
    assert t1["self_persona"] == ROW["your_persona"] and t1["partner_persona"] == ROW["partner_persona"]
    assert t1["context"] == ["hi , how are you ?"] and t1["context_speakers"] == ["partner"]
    assert t1["response"] == "great , just back from skiing ."
    # utterance 2 is by the partner: the personas swap and so do the relative speaker tags
    assert t2["self_persona"] == ROW["partner_persona"] and t2["partner_persona"] == ROW["your_persona"]
    assert t2["context_speakers"] == ["you", "partner"]
    assert t2["response"] == "nice , i just finished a night shift ."
    assert t3["context"] == ROW["utterances"][:3] and t3["context_speakers"] == ["partner", "you", "partner"]
    assert t3["n_context"] == 3


def test_min_and_max_context():
    assert len(D.dialogue_turns(ROW, min_context=0)) == 4
    assert D.dialogue_turns(ROW, min_context=0)[0]["context"] == []
    t3 = D.dialogue_turns(ROW, max_context=2)[-1]
    assert t3["context"] == ROW["utterances"][1:3] and t3["context_speakers"] == ["you", "partner"]
    assert t3["n_context"] == 3  # the original amount of history, for the cold-start analysis


@pytest.mark.parametrize(
    "change, message",
    [
        ({"speakers": ["partner", "you", "partner"]}, "4 utterances but 3 speakers"),
        ({"speakers": ["partner", "me", "partner", "you"]}, "speakers must be 'you' or 'partner'"),
        ({"utterances": "hello"}, "utterances must be a list of strings"),
    ],
)
def test_bad_rows_are_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValueError, match=message):
        D.dialogue_turns({**ROW, **change})


def test_missing_column_is_named():
    row = {k: v for k, v in ROW.items() if k != "partner_persona"}
    with pytest.raises(ValueError, match="partner_persona"):
        D.dialogue_turns(row)


def test_prompt_format_is_exactly_as_documented():
    t = D.dialogue_turns(ROW)[1]
    assert D.ppg_prompt(t["self_persona"], t["context"], t["context_speakers"]) == (
        "your persona: i am a nurse.\nyour persona: i work nights.\n"
        "your persona: my favorite band is metallica.\nyour persona: i live in ohio.\n"
        "you: hi , how are you ?\npartner: great , just back from skiing .\npartner persona:"
    )
    assert D.drg_prompt(["i ski."], ["i am a nurse."], ["hi"], ["partner"]) == (
        "your persona: i ski.\npartner persona: i am a nurse.\npartner: hi\nyou:"
    )
    assert D.persona_target(["i ski.", "i am tall."]) == " i ski. i am tall."
    assert D.response_target("hello there") == " hello there"


line = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20).map(
    str.strip).filter(bool)


@settings(max_examples=60, deadline=None)
@given(st.lists(line, max_size=4), st.lists(line, max_size=4), st.lists(st.tuples(line, st.sampled_from(D.SPEAKERS)),
                                                                         max_size=5))
def test_format_round_trip(self_p, partner_p, ctx):
    context, speakers = [c for c, _ in ctx], [s for _, s in ctx]
    got = D.parse_prompt(D.drg_prompt(self_p, partner_p, context, speakers))
    assert got == {"kind": "drg", "self_persona": self_p, "partner_persona": partner_p, "context": context,
                   "context_speakers": speakers}
    got = D.parse_prompt(D.ppg_prompt(self_p, context, speakers))
    assert got == {"kind": "ppg", "self_persona": self_p, "partner_persona": None, "context": context,
                   "context_speakers": speakers}


def test_format_rejects_newlines_and_bad_prompts():
    with pytest.raises(ValueError, match="newline"):
        D.ppg_prompt(["i ski.\nyou: injected"], [], [])
    with pytest.raises(TypeError, match="list"):
        D.ppg_prompt("i ski.", [], [])
    with pytest.raises(ValueError, match="context speakers"):
        D.drg_prompt([], [], ["hi"], ["me"])
    with pytest.raises(ValueError, match="must end with"):
        D.parse_prompt("your persona: i ski.\npartner: hi")
    with pytest.raises(ValueError, match="line 2"):
        D.parse_prompt("your persona: i ski.\nstranger: hi\nyou:")


def test_examples_and_critic_pairs():
    t = D.dialogue_turns(ROW)[0]
    ppg = D.ppg_example(t)
    assert ppg["prompt"].endswith("partner persona:") and ppg["completion"] == " " + " ".join(ROW["partner_persona"])
    drg = D.drg_example(t, ["i am a nurse."])
    assert "partner persona: i am a nurse." in drg["prompt"] and "i work nights" not in drg["prompt"]
    assert drg["completion"] == " great , just back from skiing ."
    pairs = D.critic_examples([ROW])
    assert len(pairs) == 8 and sum(p["label"] for p in pairs) == 4
    you, partner = " ".join(ROW["your_persona"]), " ".join(ROW["partner_persona"])
    # utterance 1 ("you"): (s^you, r) positive, (s^partner, r) negative
    assert {"persona": you, "response": ROW["utterances"][1], "label": 1} in pairs
    assert {"persona": partner, "response": ROW["utterances"][1], "label": 0} in pairs
    assert {"persona": partner, "response": ROW["utterances"][2], "label": 1} in pairs
    assert {"persona": you, "response": ROW["utterances"][2], "label": 0} in pairs


def test_bm25_top3_picks_the_sentences_the_context_talks_about():
    persona = ["i am a nurse.", "i like cats.", "my favorite band is metallica.", "i live in ohio.", "i drive a bus."]
    # each of metallica / ohio / bus occurs in exactly one sentence, nurse and cats share no word with the context
    got = D.bm25_top_k(persona, ["metallica rocks !", "ohio is cold , bus rides are long"], k=3)
    assert got == ["my favorite band is metallica.", "i live in ohio.", "i drive a bus."]  # original order
    assert D.bm25_top_k(persona[:2], ["anything"], k=3) == persona[:2]
    assert D.bm25_top_k(persona, [], k=3) == persona[:3]
    with pytest.raises(ValueError, match="k must be"):
        D.bm25_top_k(persona, ["x"], k=0)


def test_split_persona():
    assert D.split_persona(" i ski.  i am tall! do i?  ok") == ["i ski.", "i am tall!", "do i?", "ok"]
    assert D.split_persona("   ") == []


def test_token_ids_are_the_ones_rloo_uses(minilm_path):
    from transformers import AutoTokenizer

    tok = D.prepare_tokenizer(AutoTokenizer.from_pretrained(minilm_path))
    assert tok.eos_token == "[SEP]" and tok.pad_token == "[PAD]" and tok.padding_side == "left"
    prompt = D.drg_prompt(["i ski."], ["i am a nurse."], ["hi"], ["partner"])
    enc = D.encode_example(tok, prompt, " hello there", max_completion_tokens=8)
    rloo_prompt_ids = tok(text=[prompt])["input_ids"][0]  # what RLOOTrainer._tokenize_prompts computes
    n = len(rloo_prompt_ids)
    assert enc["input_ids"][:n] == rloo_prompt_ids
    assert enc["input_ids"][n:] == tok.convert_tokens_to_ids(["hello", "there"]) + [tok.sep_token_id]
    assert enc["completion_mask"] == [0] * n + [1, 1, 1]
    cut = D.encode_example(tok, prompt, " a b c d e f g h i j", max_completion_tokens=4)
    assert sum(cut["completion_mask"]) == 4 and cut["input_ids"][-1] == tok.sep_token_id
    with pytest.raises(ValueError, match=">= 2"):
        D.encode_completion(tok, "x", 1)


def test_fit_turn_drops_oldest_context_first(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    t = D.dialogue_turns(ROW)[-1]
    full = len(D.encode_prompt(tok, D.ppg_example(t)["prompt"]))
    fitted = D.fit_turn(t, tok, D.ppg_example, full - 1)
    assert fitted["context"] == t["context"][1:] and fitted["context_speakers"] == t["context_speakers"][1:]
    assert D.fit_turn(t, tok, D.ppg_example, 5) is None


def test_long_partner_persona_is_cut_to_its_first_sentences(minilm_path):
    from transformers import AutoTokenizer

    from hf_persona.training.ppg import task_examples

    tok = AutoTokenizer.from_pretrained(minilm_path)
    t = D.dialogue_turns(ROW)[0]
    pp = ["i am a nurse.", "i work nights at the big hospital downtown.", "i like metallica."]
    one = len(D.encode_prompt(tok, D.drg_prompt(t["self_persona"], pp[:1], [], [])))
    ex = task_examples("drg", [t], tok, one, [pp])
    assert ex[0]["partner_persona"] == pp[:1] and ex[0]["context"] == []  # context goes first, then sentences
    assert task_examples("drg", [t], tok, one - 1, [pp], keep_unfit=True) == [None]
    gold = task_examples("drg", [t], tok, one + 200, "gold")[0]
    assert gold["partner_persona"] == ROW["partner_persona"] and gold["context"] == t["context"]
