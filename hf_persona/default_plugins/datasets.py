"""Built-in dataset loaders: the research formats and the embedded sample."""

from hf_persona import hookimpl


def _reader(fmt, sample_name=None):
    def load(path=None, **options):
        from hf_persona import data

        if path is None:
            if sample_name is None:
                raise data.HFPersonaError(f"the {fmt} loader needs a path (no embedded {fmt} sample)")
            path = data.sample_path(sample_name)
        return data.read_dialogues(path, format=fmt, **options)[1]

    load.__doc__ = f"Load {fmt} dialogues from ``path`` (the embedded sample when None)."
    return load


@hookimpl
def register_datasets(register):
    register("personachat", _reader("personachat", "personachat"))
    register("esconv", _reader("esconv", "esconv"))
    register("msc", _reader("msc"))
