"""The text of a TRL completion, shared by every reward of :mod:`hf_persona.rewards`."""

from __future__ import annotations


def completion_text(completion) -> str:
    """The text of one completion as TRL passes it to a reward function: a string, a chat message
    ``{"role": ..., "content": ...}``, or a conversation (a list of messages: the contents of its
    assistant messages joined by spaces; of all its messages when none has the assistant role). The
    text is returned as it is (no stripping); anything else is a :class:`TypeError` naming the type.

    >>> completion_text("hello")
    'hello'
    >>> completion_text([{"role": "assistant", "content": "hi there"}])
    'hi there'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict) and "content" in completion:
        return str(completion["content"])
    if isinstance(completion, (list, tuple)) and completion and all(
            isinstance(m, dict) and "content" in m for m in completion):
        own = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return " ".join(str(m["content"]) for m in own)
    raise TypeError(f"a completion must be a string, a chat message with 'content' or a list of chat messages, "
                    f"got {type(completion).__name__}")
