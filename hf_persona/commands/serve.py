"""``hf-persona serve``: the supporter as a web page (Gradio); the visitor is the help-seeker.

This module imports click and the standard library only; gradio and the models load inside the
command body, so ``hf-persona --help`` stays fast and works without gradio installed.
"""

from __future__ import annotations

import importlib.util

import click

from .options import output_dir


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--share/--no-share", default=False, show_default=True,
              help="Also ask Gradio for a temporary public link (needs the internet).")
@click.option("--pal", default="pal", show_default=True, help="PAL checkpoint: a shipped name or a folder.")
@click.option("--extractor", default="persona-extractor", show_default=True,
              help="Persona extractor: a shipped name or a folder.")
@click.option("--cobert", default="cobert", show_default=True, help="CoBERT: a shipped name or a folder.")
@click.option("--receiver", default="receiver", show_default=True, help="Receiver: a shipped name or a folder.")
@click.option("--tiny", default=None, type=output_dir(), hidden=True,
              help="Tiny random models built in this folder (tests).")
def serve(host, port, share, pal, extractor, cobert, receiver, tiny):
    """Serve the supporter as a web page; you are the help-seeker.

    The page shows the chat, the seeker persona inferred so far, strategy / α / persona-off controls,
    CoBERT's ranking of the reply and the Receiver's score and heat-map. Needs the serve extra:
    pip install "hf-persona[serve]"."""
    if importlib.util.find_spec("gradio") is None:
        from ..errors import HFPersonaError
        from ..serve import INSTALL_HINT

        raise HFPersonaError(INSTALL_HINT)
    from ..serve import serve as run_server
    from ..utils import expected_noise_filtered

    with expected_noise_filtered():
        click.echo("loading the models ...")
        run_server(host=host, port=port, share=share, tiny=tiny, pal=pal, extractor=extractor, cobert=cobert,
                   receiver=receiver)


def add_commands(cli):
    cli.add_command(serve)
