"""Built-in plugin: the dataset loaders of :mod:`hf_persona.data.loaders` (PERSONA-CHAT, ESConv, MSC and
PESConv; the embedded samples, ``$HF_PERSONA_DATA`` and data folders), registered by reference so that
loading the plugin reads no data and imports nothing heavy.
"""

from hf_persona import hookimpl
from hf_persona.utils import moved_names

FORMATS = ("personachat", "esconv", "msc")


@hookimpl
def register_datasets(register):
    from hf_persona.data import loaders

    for name in FORMATS:
        register(name, loaders.loader(name))
    register("pesconv", loaders.load_pesconv)


#: moved to hf_persona.data.loaders (the old names still import, with a DeprecationWarning)
__getattr__ = moved_names(__name__, dict.fromkeys(
    ("DATA_ENV", "DEFAULT_SPLIT", "sample_file", "resolve", "load_pesconv"), "hf_persona.data.loaders"))
