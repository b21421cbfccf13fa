"""The ``hf-persona demo`` body: what the library does, on the embedded sample."""

from __future__ import annotations

from pathlib import Path

import click

from .utils import atomic_write_text


def section_overview(out_dir: Path) -> str:
    """Registered plugins and statistics of the embedded sample."""
    from . import list_plugins
    from .data import dialogue_statistics, read_dialogues, sample_path
    from .evaluation import format_table

    listing = list_plugins()
    lines = [f"{kind}: {', '.join(listing[kind]) or '(none)'}" for kind in ("models", "rewards", "logits_processors", "datasets")]
    rows = []
    for name in ("personachat", "esconv"):
        fmt, ds = read_dialogues(sample_path(name))
        rows.append(dialogue_statistics(ds, fmt))
    table = format_table(rows)
    click.echo("== Registered plugins ==\n" + "\n".join(lines))
    click.echo("\n== Embedded sample ==\n" + table)
    return "## Plugins\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n## Embedded sample\n\n```\n" + table + "\n```\n"


def run_demo(out_dir="demo_report", quick: bool = False) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = "# hf_persona demo\n\n" + section_overview(out)
    atomic_write_text(out / "README.md", report)
    click.echo(f"\nReport written to {out / 'README.md'}")
    return out
