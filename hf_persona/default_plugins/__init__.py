"""Built-in features, each a plugin module registered exactly like a third-party plugin.

Every module in this package is discovered and registered by :func:`hf_persona.plugins.load_plugins`.
"""
