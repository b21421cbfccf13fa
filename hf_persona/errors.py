"""Errors raised by hf_persona for bad input; the CLI prints their message on one line."""


class HFPersonaError(ValueError):
    """A user-facing error: the message names what was wrong and what was expected."""


class DataFormatError(HFPersonaError):
    """A data file does not match its format. Carries the file, the line and the expectation."""

    def __init__(self, path, line, expected, got=None):
        self.path = str(path)
        self.line = line
        self.expected = expected
        where = f"{self.path}:{line}" if line is not None else self.path
        msg = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 80 else got[:77] + "..."
            msg += f", got {shown!r}"
        super().__init__(msg)


class UnknownNameError(HFPersonaError, KeyError):
    """Lookup of a plugin name that nothing registered."""

    def __init__(self, kind, name, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        shown = ", ".join(self.valid) if self.valid else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; valid names: {shown}")

    def __str__(self):  # KeyError would otherwise quote the message
        return self.args[0]
