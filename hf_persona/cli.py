"""The ``hf-persona`` command line. Plugins add commands through the ``register_commands`` hook."""

from __future__ import annotations

import json
import sys

import click

from .errors import HFPersonaError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hf-persona")
def cli():
    """Persona-aware dialogue models on the Hugging Face stack."""


@cli.group()
def train():
    """Train a model (each model's plugin adds its subcommand)."""


@cli.group(name="eval")
def eval_():
    """Evaluate a model (each model's plugin adds its subcommand)."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print names per kind as JSON.")
def plugins(as_json):
    """List registered models, rewards, logits processors and datasets."""
    from . import plugins as plugin_mod

    listing = plugin_mod.list_plugins()
    errors = plugin_mod.plugin_errors()
    if as_json:
        click.echo(json.dumps({k: listing[k] for k in plugin_mod.KINDS}, indent=2))
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
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["personachat", "esconv", "msc"]), default=None,
              help="Data format (detected from the first line when omitted).")
@click.option("--skip-malformed", is_flag=True, help="Skip malformed dialogues and report how many.")
@click.option("--json", "as_json", is_flag=True, help="Print format, dialogues, turns, persona_sentences as JSON.")
def inspect(path, fmt, skip_malformed, as_json):
    """Detect a file's format and count dialogues, turns and persona sentences."""
    from .data import dialogue_statistics, read_dialogues

    fmt, dataset = read_dialogues(path, format=fmt, skip_malformed=skip_malformed)
    stats = dialogue_statistics(dataset, fmt)
    if as_json:
        click.echo(json.dumps(stats))
    else:
        for key, value in stats.items():
            click.echo(f"{key:18s} {value}")


@cli.command()
@click.option("--out", "out_dir", default="demo_report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the report (markdown summary and plots).")
@click.option("--quick", is_flag=True, help="Tiny training budgets (seconds), for smoke tests.")
def demo(out_dir, quick):
    """Train small models on the embedded sample and run a scripted support conversation."""
    from .demo import run_demo

    run_demo(out_dir=out_dir, quick=quick)


_commands_registered = False


def _register_plugin_commands():
    global _commands_registered
    if not _commands_registered:
        _commands_registered = True
        from . import plugins as plugin_mod

        plugin_mod.register_commands(cli)


def main(argv=None):
    """Entry point: run the CLI; user errors print one line and exit with status 2."""
    _register_plugin_commands()
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HFPersonaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
