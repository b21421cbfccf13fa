"""Writes the embedded sample shipped in hf_persona/data/sample/ (run once; output is committed).

The dialogues are composed here from short persona facts, each with a statement the speaker
would say and a question the partner could ask about it, so that persona-grounded models have
something real to learn from in the demo and the tests.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "hf_persona" / "data" / "sample"

# (persona sentence, what the speaker says about it, a question that invites it)
FACTS = [
    ("i have two dogs .", "i just got back from walking my two dogs .", "do you have any pets ?"),
    ("i love to cook italian food .", "i made fresh pasta tonight , italian is my favorite to cook .", "what do you like to eat ?"),
    ("i work as a nurse .", "my shifts at the hospital are long , i am a nurse .", "what do you do for work ?"),
    ("i play the guitar in a band .", "my band has a gig on friday , i play guitar .", "do you play any music ?"),
    ("i live near the ocean .", "i can hear the waves from my house by the ocean .", "where do you live ?"),
    ("i am training for a marathon .", "i ran fifteen miles this morning for my marathon training .", "do you exercise much ?"),
    ("i grew up on a farm .", "i grew up on a farm milking cows every morning .", "where did you grow up ?"),
    ("my favorite color is green .", "i painted my room green , it is my favorite color .", "what is your favorite color ?"),
    ("i am afraid of heights .", "i could never climb a ladder , i am scared of heights .", "are you afraid of anything ?"),
    ("i collect old coins .", "i found a coin from 1890 for my collection today .", "do you have any hobbies ?"),
    ("i have three sisters .", "my three sisters are visiting this weekend .", "do you have a big family ?"),
    ("i teach math at a high school .", "i am grading algebra tests for my high school class .", "what do you do for a living ?"),
    ("i love reading mystery novels .", "i am halfway through a great mystery novel .", "what do you do to relax ?"),
    ("i drive a red truck .", "i just washed my red truck .", "what kind of car do you drive ?"),
    ("i am a vegetarian .", "i have not eaten meat in ten years , i am vegetarian .", "what did you have for dinner ?"),
    ("i speak three languages .", "i speak english , spanish and french .", "do you speak other languages ?"),
    ("i like to go fishing .", "i caught a big bass at the lake yesterday .", "what do you do on weekends ?"),
    ("i recently moved to a new city .", "i just moved here and i do not know anyone yet .", "have you lived here long ?"),
    ("i work from home .", "i work from home so i stay in my pajamas .", "do you commute to work ?"),
    ("i enjoy painting landscapes .", "i painted the mountains at sunset last night .", "are you creative ?"),
    ("i am a college student .", "i have finals next week at college .", "are you in school ?"),
    ("i love horror movies .", "i watched a scary horror movie last night .", "seen any good movies ?"),
    ("i volunteer at an animal shelter .", "i spent the day at the animal shelter helping puppies .", "how do you spend your free time ?"),
    ("i bake bread every sunday .", "the house smells great , i baked bread this morning .", "any sunday traditions ?"),
]

GREETINGS = ["hi , how are you today ?", "hello ! how is your day going ?", "hey there , what is up ?"]
REPLIES = ["that sounds great !", "oh nice , tell me more .", "wow , that is interesting .", "cool , i like that ."]


def personachat(rng, n=36):
    lines = []
    for _ in range(n):
        facts = rng.sample(FACTS, 8)
        mine, theirs = facts[:4], facts[4:]
        number = 1
        for p, _, _ in mine:
            lines.append(f"{number} your persona: {p}")
            number += 1
        for p, _, _ in theirs:
            lines.append(f"{number} partner's persona: {p}")
            number += 1
        turns = [(rng.choice(GREETINGS), f"i am good . {mine[0][1]}")]
        for k in range(1, 4):
            partner = f"{rng.choice(REPLIES)} {theirs[k - 1][1]} {mine[k][2]}"
            turns.append((partner, f"{mine[k][1]} {theirs[k][2]}"))
        for partner, reply in turns:
            lines.append(f"{number} {partner}\t{reply}")
            number += 1
    return "\n".join(lines) + "\n"


PROBLEMS = [
    ("anxiety", "job crisis", "i might lose my job because the company is cutting staff .",
     ["i am worried about my job .", "my company is laying people off .", "i have two kids to feed .", "i have worked there for ten years ."]),
    ("depression", "breakup with partner", "my partner left me after five years together .",
     ["my girlfriend broke up with me .", "we were together for five years .", "i feel lonely at night .", "i live alone now ."]),
    ("sadness", "ongoing depression", "i have felt down for months and cannot enjoy anything .",
     ["i have been sad for months .", "i used to love painting .", "i stopped seeing my friends .", "i work as a nurse ."]),
    ("anger", "problems with friends", "my best friend shared my secret with others .",
     ["my best friend told my secret .", "we have been friends since school .", "i feel betrayed .", "i do not trust people easily ."]),
    ("fear", "academic pressure", "my final exams are next week and i am not ready .",
     ["i am a college student .", "my exams are next week .", "my parents expect top grades .", "i study every night ."]),
    ("shame", "conflict with parents", "i argued with my parents about my career choice .",
     ["my parents want me to be a doctor .", "i want to be a musician .", "i play the guitar .", "i still live at home ."]),
]

SUPPORT = {
    "Question": ["can you tell me more about what happened ?", "how long have you been feeling this way ?", "what worries you the most ?"],
    "Restatement or Paraphrasing": ["so you are saying that {f}", "it sounds like {f}"],
    "Reflection of feelings": ["you seem really hurt by this .", "i can hear how stressed you feel ."],
    "Self-disclosure": ["i went through something similar once , and it was hard .", "i also felt that way when it happened to me ."],
    "Affirmation and Reassurance": ["you are doing the right thing by talking about it .", "it is okay to feel this way , you are not alone ."],
    "Providing Suggestions": ["maybe you could talk to someone you trust about it .", "have you tried writing down your thoughts each evening ?", "it might help to make a small plan for tomorrow ."],
    "Information": ["many people feel this way after a big change , and it usually gets easier .", "talking to a counselor helps a lot of people in this situation ."],
    "Others": ["i am glad you reached out today .", "thank you for sharing that with me ."],
}


def esconv(rng, n=24):
    out = []
    for _ in range(n):
        emotion, problem, situation, facts = rng.choice(PROBLEMS)
        dialog = [{"text": "hello , what would you like to talk about today ?", "speaker": "sys", "strategy": "Question"}]
        seeker_lines = [f"hi . {facts[0]}"] + [f"{f} {extra}" for f, extra in zip(
            facts[1:], ["it is really hard .", "i do not know what to do .", "that makes it worse ."])] + ["thank you , that helps ."]
        strategies = ["Question", "Reflection of feelings", "Restatement or Paraphrasing", "Self-disclosure",
                      "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others"]
        for i, line in enumerate(seeker_lines):
            dialog.append({"text": line, "speaker": "usr"})
            strategy = strategies[i] if i < 3 else rng.choice(strategies[3:])
            text = rng.choice(SUPPORT[strategy]).format(f=facts[min(i, 3)].replace("i am", "you are").replace("my ", "your "))
            dialog.append({"text": text, "speaker": "sys", "strategy": strategy})
        out.append(json.dumps({"experience_type": "Current Experience", "emotion_type": emotion,
                               "problem_type": problem, "situation": situation, "dialog": dialog}))
    return "\n".join(out) + "\n"


def main():
    rng = random.Random(2026)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "personachat_sample.txt").write_text(personachat(rng))
    (OUT / "esconv_sample.json").write_text(esconv(rng))


if __name__ == "__main__":
    main()
