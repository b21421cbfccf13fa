"""hf-persona-distinct: a reward that favours completions that do not repeat themselves."""

import re

from hf_persona import hookimpl

_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def _text(item) -> str:
    """TRL passes plain strings or conversational messages (a list of {"role", "content"})."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(m, dict) and "content" in m for m in item):
        return " ".join(str(m["content"]) for m in item)
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


def _ngrams(text: str, n: int) -> list:
    toks = _TOKEN.findall(text.lower())
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


class DistinctNReward:
    """``reward(prompts, completions, **columns) -> list[float]`` in [-copy_weight, 1].

    Completions with no n-gram (shorter than ``n`` tokens) score ``empty_score``.
    """

    def __init__(self, n: int = 2, copy_weight: float = 0.0, empty_score: float = 0.0):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if copy_weight < 0:
            raise ValueError(f"copy_weight must be >= 0, got {copy_weight}")
        self.n, self.copy_weight, self.empty_score = n, float(copy_weight), float(empty_score)
        self.__name__ = f"distinct_{n}"  # TRL logs rewards under their function name

    def __call__(self, prompts, completions, **columns):
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        out = []
        for i, completion in enumerate(completions):
            grams = _ngrams(_text(completion), self.n)
            if not grams:
                out.append(self.empty_score)
                continue
            score = len(set(grams)) / len(grams)
            if self.copy_weight and prompts is not None:
                seen = set(_ngrams(_text(prompts[i]), self.n))
                score -= self.copy_weight * sum(g in seen for g in grams) / len(grams)
            out.append(score)
        return out


@hookimpl
def register_rewards(register):
    register("distinct_n", DistinctNReward)
