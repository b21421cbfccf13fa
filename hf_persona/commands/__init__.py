"""The CLI's rooms: one module of click commands per system.

Each module has an ``add_commands(cli)`` that the system's plugin in :mod:`hf_persona.default_plugins`
calls from its ``register_commands`` hook; :mod:`hf_persona.cli` owns the top-level groups.
"""
