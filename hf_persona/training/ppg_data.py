"""Deprecated: moved to :mod:`hf_persona.data.ppg` (data preparation lives in :mod:`hf_persona.data`).

The old names still import from here, with a ``DeprecationWarning``.
"""

from hf_persona.utils import moved_names

__getattr__ = moved_names(__name__, dict.fromkeys((
    "SELF_TAG", "PARTNER_TAG", "YOU", "PARTNER", "SPEAKERS", "PPG", "DRG", "_check_list_of_str",
    "dialogue_turns", "build_turns", "_check_line", "_lines", "ppg_prompt", "drg_prompt", "persona_target",
    "response_target", "_SENT_END", "split_persona", "parse_prompt", "SYSTEM_PROMPTS", "_SENTINEL",
    "uses_chat_template", "_messages", "render_prompt", "render_completion", "unwrap_prompt", "ensure_rendered",
    "format_example", "ppg_example", "drg_example", "critic_examples", "_WORD", "_words", "bm25_top_k",
    "end_of_turn_token", "prepare_tokenizer", "encode_prompt", "encode_completion", "encode_example", "fit_turn",
), "hf_persona.data.ppg"))
