"""Built-in plugin: ``hf-persona push`` and ``hf-persona pull`` (see :mod:`hf_persona.hub`)."""

from __future__ import annotations

import click

from hf_persona import hookimpl


@click.command("push")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--repo-id", required=True, help="Target repository, ORG/NAME (created when missing).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--metrics", "metrics_json", type=click.Path(dir_okay=False), default=None,
              help="Evaluation JSON (from `hf-persona eval ... --json`) that fills the card's metrics table.")
@click.option("--card", "card_template", default=None,
              help="Model-card template: a path or the name of a packaged template in model_cards/ "
                   "(default: the card the model's registration names).")
@click.option("--base-model", default=None, help="Base model named in the card (default: read from config.json).")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the one saved by `hf auth login`).")
def push_command(model_dir, repo_id, private, metrics_json, card_template, base_model, token):
    """Upload a saved model folder (safetensors, config, code, tokenizer, model card) to the Hub."""
    from hf_persona.hub import push

    result = push(model_dir, repo_id, private=private, token=token, card_template=card_template,
                  metrics_json=metrics_json, base_model=base_model)
    click.echo(f"pushed {len(result.files)} files to {result.repo_url}: {', '.join(result.files)}")
    click.echo(f"commit: {result.commit_url}")


@click.command("pull")
@click.argument("repo_id")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Copy the repository's files into this folder (default: only the Hub cache).")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@click.option("--trust-remote-code", is_flag=True,
              help="Run the repository's own code for model types hf_persona does not register.")
def pull_command(repo_id, out_dir, revision, trust_remote_code):
    """Download a model from the Hub (or the offline cache) and check that it loads."""
    from hf_persona.hub import pull

    model = pull(repo_id, out_dir=out_dir, revision=revision, trust_remote_code=trust_remote_code)
    n_params = sum(p.numel() for p in model.parameters())
    where = f" into {out_dir}" if out_dir else ""
    click.echo(f"loaded {repo_id}{where}: {type(model).__name__} ({model.config.model_type}, {n_params:,} parameters)")


@hookimpl
def register_commands(cli):
    cli.add_command(push_command)
    cli.add_command(pull_command)
