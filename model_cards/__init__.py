"""The model-card templates ``hf-persona push`` renders (``<card>.md``), installed as ``hf_persona.model_cards``.

A package so that both a wheel and an editable install find the templates through
``importlib.resources.files("hf_persona.model_cards")``; see ``hf_persona.hub.MODEL_CARDS_DIR``.
"""
