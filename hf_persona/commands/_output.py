"""How the ``hf-persona`` train / eval commands end (issue 27 item 3): a short table of a few key
figures and ``saved to DIR``; the full JSON only with ``--json FILE`` (``--json -`` prints it).
The work runs inside :class:`hf_persona.utils.expected_noise_filtered` (see :func:`quiet_work`), so
the framework reports a user cannot act on stay hidden unless ``hf-persona -v``.

This module imports only click and the standard library (``hf-persona --help`` stays fast).
"""

from __future__ import annotations

import functools
import json
import math

import click

#: what ``--json`` means on every train / eval command
JSON_HELP = "Write the full results JSON to this file ('-': print it instead of the table)."


def quiet_work(warm_start: bool = False):
    """Decorator of a command body: run it with the expected framework noise hidden (unless -v).
    ``warm_start``: the command loads pretrained encoders into new heads (training)."""

    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            from hf_persona.utils import expected_noise_filtered

            with expected_noise_filtered(warm_start=warm_start):
                return f(*args, **kwargs)

        return wrapper

    return deco


def json_option(help: str = JSON_HELP):
    """``--json FILE`` (``-`` = stdout), the same on every train / eval command."""
    from .options import output_file

    return click.option("--json", "json_out", default=None, type=output_file(allow_dash=True), help=help)


def json_file(json_out):
    """The file a training function should write its JSON to (``None`` for ``-``: printed instead)."""
    return None if json_out in (None, "-") else json_out


def _show(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value) and len(value) <= 6:
        return ", ".join(_show(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    return str(value)


def summary_table(summary: dict, keys) -> str:
    """Two aligned columns, one row per key of ``keys`` present in ``summary`` (``None`` values skipped)."""
    rows = [(key, _show(summary[key])) for key in keys if summary.get(key) is not None]
    if not rows:  # nothing of the preferred keys: the first few scalar entries
        rows = [(k, _show(v)) for k, v in summary.items() if isinstance(v, (int, float, str))][:8]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def finish(summary: dict, keys, *, saved_to=None, json_out=None, write_json: bool = False,
           table: str | None = None) -> None:
    """End a command: the table (``table`` when given, else :func:`summary_table` of ``keys``), then
    ``saved to DIR`` (or ``saved to FILE`` of ``--json`` when there is no folder). ``json_out='-'``
    prints the full JSON instead of the table; ``write_json``: write ``summary`` to the ``json_out``
    file here (when the command's implementation does not). In a multi-process run (``torchrun``,
    ``accelerate launch``) only the main process prints."""
    from hf_persona.utils import is_main_process

    if not is_main_process():
        return
    if json_out == "-":
        click.echo(json.dumps(summary, indent=2, default=str, ensure_ascii=False))
    else:
        click.echo(table if table is not None else summary_table(summary, keys))
        if json_out is not None and write_json:
            from hf_persona.utils import atomic_write_json

            atomic_write_json(json_out, json.loads(json.dumps(summary, default=str)))
    if saved_to is not None:
        click.echo(f"saved to {saved_to}")
    elif json_out not in (None, "-"):
        click.echo(f"saved to {json_out}")


def clamp_warning(option: str, value: int, available: int, what: str = "dialogues") -> None:
    """Log that ``option value`` asks for more than the data holds and is clamped to ``available``."""
    from hf_persona.utils import get_logger

    get_logger("hf_persona.cli").warning(f"{option} {value} exceeds the {available} {what}; using {available}")


def clamp_first(n: int, available: int, option: str = "--dev-from", what: str = "dialogues") -> int:
    """Training on the dialogues before ``n``: ``n`` itself, or ``available`` (with a logged
    warning) when the data holds fewer; 0 stays 0 (all)."""
    if n and n > available:
        clamp_warning(option, n, available, what)
        return available
    return n


def clamp_held_out(n: int, available: int, option: str = "--dev-from", what: str = "dialogues") -> int:
    """Evaluating the dialogues from ``n`` on: ``n`` itself, or 0 (all of them, with a logged warning
    that they may have been trained on) when the data holds no dialogue from index ``n`` on."""
    if n and n >= available:
        from hf_persona.utils import get_logger

        get_logger("hf_persona.cli").warning(
            f"{option} {n}: the data holds only {available} {what}, none from index {n} on; evaluating all "
            f"{available} (they may have been trained on)")
        return 0
    return n


def default_data(name: str = "personachat") -> str:
    """The embedded sample in ``name``'s format (``--data`` when not given)."""
    from hf_persona.data import sample_path

    return str(sample_path(name))
