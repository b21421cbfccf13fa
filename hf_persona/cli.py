"""The ``hf-persona`` command line. Plugins add commands through the ``register_commands`` hook.

Errors (issue 28, item 3). A bad option value (a click range, a path check, a missing option), an
:class:`~hf_persona.errors.HFPersonaError` and its subclasses, a ``FileNotFoundError`` /
``NotADirectoryError`` / ``IsADirectoryError`` / ``PermissionError`` and a plain ``ValueError`` end
the command with one line on stderr (``error: ...``) and exit status 2. A plain ``ValueError`` may
come from deeper code, so its line ends with "run with -v for the traceback". Every other exception
(``RuntimeError``, ``TypeError``, ``KeyError``...) is a bug, not a user error, and keeps its full
traceback. ``hf-persona -v COMMAND ...`` (``--verbose``) shows the traceback for every error instead
of the one line.

Output (issue 27, item 3). ``-v`` also shows the framework noise that is hidden by default (see
:func:`hf_persona.utils.is_expected_noise` and :class:`hf_persona.utils.expected_noise_filtered`);
``-q/--quiet`` leaves warnings, errors and each command's final table.
"""

from __future__ import annotations

import json
import sys

import click

from .commands.options import SEED, output_dir
from .errors import HFPersonaError


class OneLineError(click.ClickException):
    """A user error shown as one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


#: errors that mean "the input was wrong": one line, exit status 2
USER_ERRORS = (HFPersonaError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def one_line_error(exc):
    """The :class:`OneLineError` for a user error ``exc``, or None for anything else (a bug)."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return None
    if isinstance(exc, click.UsageError):
        message = exc.format_message()
        if exc.ctx is not None:
            message += f" (see '{exc.ctx.command_path} --help')"
        return OneLineError(message)
    if isinstance(exc, USER_ERRORS):
        return OneLineError(str(exc) or type(exc).__name__)
    if type(exc) is ValueError:
        return OneLineError(f"{exc} (run with -v for the traceback)")
    return None


class _TopGroup(click.Group):
    """The top-level group: turns user errors raised while parsing or running any subcommand into
    one line (see the module docstring) unless ``-v`` was given."""

    def invoke(self, ctx):
        if not ctx.meta.get("hf_persona.verbosity_set"):
            ctx.meta["hf_persona.verbosity_set"] = True
            return self.invoke_quietly(ctx)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:
            converted = one_line_error(exc) if isinstance(exc, click.UsageError) else None
            if converted is None:
                raise
            raise converted from exc
        except Exception as exc:
            converted = None if ctx.params.get("verbose") else one_line_error(exc)
            if converted is None:
                raise
            raise converted from exc

    def invoke_quietly(self, ctx):
        from .utils import cli_verbosity

        verbose, quiet = ctx.params.get("verbose"), ctx.params.get("quiet")
        if verbose and quiet:
            raise click.UsageError("-q/--quiet and -v/--verbose exclude each other", ctx=ctx)
        with cli_verbosity(1 if verbose else -1 if quiet else 0):
            return self.invoke(ctx)


@click.group(cls=_TopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hf-persona")
@click.option("-v", "--verbose", is_flag=True,
              help="Show everything: the framework's load reports, warnings and per-step logs, and the full "
                   "traceback of an error instead of one line.")
@click.option("-q", "--quiet", is_flag=True,
              help="Only warnings, errors and each command's final table.")
def cli(verbose, quiet):
    """Persona-aware dialogue models on the Hugging Face stack.

    By default the framework reports a user cannot act on are hidden (transformers load reports of
    the keys a warm start leaves missing or unused, tied output weights reported missing, the
    'pin_memory without an accelerator' warning, weight loading / shard writing bars, the Trainer's
    per-step log lines); -v shows them. Train and eval commands end with a short table and "saved to
    DIR"; --json FILE writes the full results (--json - prints them).
    """


@cli.group()
def train():
    """Train a model (each model's plugin adds its subcommand)."""


@cli.group(name="eval")
def eval_():
    """Evaluate a model (each model's plugin adds its subcommand)."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print names per kind and the plugin errors as JSON.")
def plugins(as_json):
    """List registered models, rewards, logits processors and datasets."""
    from . import plugins as plugin_mod

    listing = plugin_mod.list_plugins()
    errors = plugin_mod.plugin_errors()
    if as_json:
        click.echo(json.dumps({**{k: listing[k] for k in plugin_mod.KINDS},
                               "errors": [e.to_dict() for e in errors]}, indent=2))
        return
    click.echo("Loaded plugins: " + ", ".join(listing["plugins"]))
    for kind in plugin_mod.KINDS:
        click.echo(f"{kind}: {', '.join(listing[kind]) or '(none)'}")
    for err in errors:
        click.echo(f"error: {err}", err=True)


@cli.group()
def data():
    """Inspect dialogue data files."""


@data.command()
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(["personachat", "esconv", "msc"]), default=None,
              help="Data format (detected from the first line when omitted).")
@click.option("--skip-malformed", is_flag=True, help="Skip malformed dialogues and report how many.")
@click.option("--json", "as_json", is_flag=True,
              help="Print format, dialogues, turns, persona_sentences (and skipped_malformed) as JSON.")
def inspect(path, fmt, skip_malformed, as_json):
    """Detect a file's format and count dialogues, turns and persona sentences."""
    from .data import dialogue_statistics, read_dialogues

    report: dict = {}
    fmt, dataset = read_dialogues(path, format=fmt, skip_malformed=skip_malformed, report=report)
    stats = dialogue_statistics(dataset, fmt)
    if skip_malformed:  # exact: every skipped dialogue, also listed by line in the log
        stats["skipped_malformed"] = report["skipped"]
    if as_json:
        click.echo(json.dumps(stats))
    else:
        for key, value in stats.items():
            click.echo(f"{key:18s} {value}")


@cli.command()
@click.option("--out", "out_dir", default="demo_report", show_default=True, type=output_dir(),
              help="Folder for the report (markdown summary, summary.json and plots).")
@click.option("--quick", is_flag=True,
              help="Tiny random models instead of the shipped checkpoints (seconds, nothing downloaded; the "
                   "replies are noise), for smoke tests. With --train: tiny training budgets.")
@click.option("--train", is_flag=True,
              help="The old demo: train small MiniLM models on the embedded sample first (about 6 minutes), "
                   "then hold the conversation with them.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Sampling seed of the replies.")
def demo(out_dir, quick, train, seed):
    """A scripted support conversation with the shipped supporter (no training), turn by turn, and a
    report folder: conversation table, timings, the Receiver heat-map and the persona timeline."""
    from .demo import process_started, run_demo
    from .utils import expected_noise_filtered

    if not train:  # the pipeline demo hides the noise itself, after its loading line is up
        run_demo(out_dir=out_dir, quick=quick, seed=seed, started=process_started())
        return
    with expected_noise_filtered(warm_start=True):
        run_demo(out_dir=out_dir, quick=quick, train=True)


def _add_builtin_commands():
    from .commands import chat

    chat.add_commands(cli)


_add_builtin_commands()


# click only at import: gradio and the models load inside the command (``hf-persona --help`` stays fast)
from .commands.serve import add_commands as _add_serve_commands  # noqa: E402

_add_serve_commands(cli)

_commands_registered = False


def register_plugin_commands():
    """Add the commands the plugins contribute (``register_commands`` hook) to :data:`cli`, once per process;
    :func:`main` calls it before running a command (tests that call ``cli`` directly call it first)."""
    global _commands_registered
    if not _commands_registered:
        _commands_registered = True
        from . import plugins as plugin_mod

        plugin_mod.register_commands(cli)


def main(argv=None):
    """Entry point: run the CLI; user errors print one line and exit with status 2 (tracebacks
    with ``-v``; see the module docstring)."""
    register_plugin_commands()
    try:
        rv = cli.main(args=argv, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:  # subcommand errors arrive here already as OneLineError
        (one_line_error(exc) or exc).show()
        sys.exit(exc.exit_code)
    if isinstance(rv, int) and not isinstance(rv, bool) and rv:  # ctx.exit(code)
        sys.exit(rv)


if __name__ == "__main__":
    main()
