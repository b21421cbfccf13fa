"""Deprecated: P2Bot's rewards live in :mod:`hf_persona.rewards.p2bot`.

The unbounded scorers this module held are ``LanguageStyleScore``, ``DiscourseCoherenceScore`` and
``RepetitionScore`` there; the old names still import, with a ``DeprecationWarning``.
"""

from hf_persona.utils import moved_names

_HOME = "hf_persona.rewards.p2bot"
__getattr__ = moved_names(__name__, {
    "LanguageStyleReward": f"{_HOME}:LanguageStyleScore",
    "DiscourseCoherenceReward": f"{_HOME}:DiscourseCoherenceScore",
    "RepetitionPenalty": f"{_HOME}:RepetitionScore",
    "bow_cosine": _HOME,
})
