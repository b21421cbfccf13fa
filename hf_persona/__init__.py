"""hf_persona: persona-aware dialogue models as Hugging Face citizens, extended through pluggy.

Importing the package registers every plugin model with the transformers Auto classes, so
``AutoModel.from_pretrained(dir)`` works without ``trust_remote_code`` once hf_persona is imported.
The import itself stays light (no torch, no transformers): when transformers is not imported yet,
the registration happens as soon as it is (see :func:`hf_persona.plugins.register_models_when_transformers_loads`).
"""

from .hookspecs import hookimpl
from .errors import DataFormatError, HFPersonaError, UnknownNameError
from .plugins import (
    get_dataset,
    get_logits_processor,
    get_model_spec,
    get_reward,
    list_plugins,
    load_plugins,
    plugin_errors,
    register_models_when_transformers_loads,
    register_models_with_transformers,
)

from .pretrained import from_pretrained

__version__ = "0.1.0"

__all__ = [
    "hookimpl",
    "from_pretrained",
    "HFPersonaError",
    "DataFormatError",
    "UnknownNameError",
    "get_dataset",
    "get_logits_processor",
    "get_model_spec",
    "get_reward",
    "list_plugins",
    "load_plugins",
    "plugin_errors",
    "register_models_with_transformers",
]

# Make plugin models loadable through the transformers Auto classes as soon as hf_persona and
# transformers are both imported, without importing transformers here. Failures are recorded per
# plugin (see plugin_errors()) and never break the import.
register_models_when_transformers_loads()
