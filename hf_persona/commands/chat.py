"""``hf-persona chat``: talk to the supporter in the terminal; you are the help-seeker.

Each line you type is a seeker turn for :class:`hf_persona.pipeline.SupportPipeline`; after the
supporter's reply the chat prints, compactly, the seeker persona inferred so far, the strategy that
opened the reply and its contrastive α, the reply, CoBERT's ranking of the reply against other
supporter replies (the reply's rank and the top 3 with scores), the Receiver's persona-perception
score and the seconds the turn took. Lines that start with ``/`` are chat commands (``/help``).

:func:`render_turn` is the turn layout, shared with ``hf-persona demo``.

This module imports click and the standard library only (``pipeline`` imports nothing heavy at
module level); the models load inside the command body, so ``hf-persona --help`` stays fast.
"""

from __future__ import annotations

import math
import sys
import threading
import time

import click

from ..pipeline import STRATEGIES
from .options import SEED, output_dir

#: α levels the pipeline accepts by name (resolved there, with the numbers, by the PAL config code)
ALPHA_NAMES = ("low", "medium", "high")

CHAT_HELP = """commands:
  /reset              start a new conversation (history and inferred persona cleared)
  /persona-off        PAL replies without the persona (plain decoding)
  /persona-on         PAL replies with the inferred persona (strategy contrastive decoding)
  /alpha X            a fixed α: a number >= 0, low, medium or high; /alpha auto: per strategy
  /strategy NAME      force the reply's strategy; /strategy auto: PAL chooses
  /help               this list
  /quit               leave (Ctrl-D and Ctrl-C leave too)
strategies: """ + ", ".join(STRATEGIES)


# ------------------------------------------------------------------------------------ parsing

def parse_alpha(text):
    """``None`` for ``auto``, the level name for low/medium/high, else a finite float >= 0;
    ``ValueError`` with one clear line otherwise."""
    value = str(text).strip().lower()
    if value in ("auto", ""):
        return None
    if value in ALPHA_NAMES:
        return value
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise ValueError(f"alpha {text!r} is not a number >= 0 nor one of {', '.join(ALPHA_NAMES)} (or auto)")
    return number


def parse_strategy(text):
    """The canonical strategy for ``text`` (case-insensitive; a unique prefix will do), ``None`` for
    ``auto``; ``ValueError`` naming the eight otherwise."""
    value = " ".join(str(text).split()).lower()
    if value == "auto":
        return None
    for name in STRATEGIES:
        if name.lower() == value:
            return name
    matches = [name for name in STRATEGIES if value and name.lower().startswith(value)]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown strategy {text.strip()!r}; expected one of: {', '.join(STRATEGIES)} (or auto)")


class AlphaType(click.ParamType):
    """``--alpha``: a number >= 0 or low / medium / high."""

    name = "FLOAT|low|medium|high"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        try:
            alpha = parse_alpha(value)
        except ValueError as exc:
            self.fail(str(exc).replace(" (or auto)", ""), param, ctx)
        if alpha is None:
            self.fail("give a number >= 0 or one of low, medium, high (leave --alpha out for per-strategy α)",
                      param, ctx)
        return alpha


class StrategyType(click.ParamType):
    """``--strategy``: one of the eight strategies, case-insensitive (a unique prefix will do)."""

    name = "NAME"

    def convert(self, value, param, ctx):
        if value is None or value in STRATEGIES:
            return value
        try:
            strategy = parse_strategy(value)
        except ValueError as exc:
            self.fail(str(exc).replace(" (or auto)", ""), param, ctx)
        if strategy is None:
            self.fail("leave --strategy out to let PAL choose", param, ctx)
        return strategy


# ------------------------------------------------------------------------------------ layout

def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def reply_rank(turn) -> int | None:
    """1-based rank of the reply among the candidates CoBERT scored (None without CoBERT)."""
    for rank, (text, _) in enumerate(turn.ranking, start=1):
        if text == turn.reply:
            return rank
    return None


def describe_alpha(turn, persona_off: bool = False) -> str:
    if turn.alpha is not None:
        return f"α {turn.alpha:g}"
    if persona_off:
        return "α off (persona off: plain decoding)"
    return "α off (no persona yet: plain decoding)"


def render_turn(turn, persona_off: bool = False, width: int = 72) -> list[str]:
    """The lines printed after a supporter turn (:class:`hf_persona.pipeline.SupportTurn`)."""
    persona = " | ".join(turn.persona) if turn.persona else "(none yet)"
    lines = [f"  persona   {persona}",
             f"  strategy  {turn.strategy or '(none)'}  ·  {describe_alpha(turn, persona_off)}",
             f"supporter> {turn.reply}"]
    rank = reply_rank(turn)
    if rank is not None:
        lines.append(f"  CoBERT    the reply ranks {rank} of {len(turn.ranking)}; top 3:")
        for i, (text, score) in enumerate(turn.ranking[:3], start=1):
            mark = "  <- the reply" if text == turn.reply else ""
            lines.append(f"    {i}. {score:7.3f}  {_short(text, width)}{mark}")
    receiver = f"{turn.receiver_score:.3f}" if turn.receiver_score is not None else "(no persona yet)"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in turn.timings.items())
    lines.append(f"  receiver  {receiver}  ·  {turn.seconds:.2f}s" + (f" ({parts})" if parts else ""))
    return lines


# ------------------------------------------------------------------------------------ loading

class Ticker:
    """``loading ... 3.4s`` rewritten in place while the models load (on a terminal), then the
    total: ``loaded ... in 12.3s``. Off a terminal: the first line, then the total. ``start()`` /
    ``stop()``, or a ``with`` block."""

    def __init__(self, what: str, stream=None):
        self.what, self.stream = what, stream or sys.stdout
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = None
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.seconds = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started if self.seconds is None else self.seconds

    def _run(self):
        while not self._stop.wait(0.5):
            self.stream.write(f"\rloading {self.what} ... {self.elapsed:4.1f}s")
            self.stream.flush()

    def start(self) -> "Ticker":
        self.started = time.perf_counter()
        self.stream.write(f"loading {self.what} ..." + ("" if self.tty else "\n"))
        self.stream.flush()
        if self.tty:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def stop(self, ok: bool = True) -> None:
        if self.seconds is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K" if ok else "\n")
        self.seconds = time.perf_counter() - self.started
        if ok:
            self.stream.write(f"loaded {self.what} in {self.seconds:.1f}s\n")
        self.stream.flush()

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop(ok=exc_type is None)
        return False


class quiet_run:  # noqa: N801 - a context manager
    """The command's whole run: :class:`hf_persona.utils.expected_noise_filtered` plus the warnings a
    chat user cannot act on (a transformers deprecation raised while PEFT loads the adapters; glyphs
    of noisy tiny-model text missing from the plot font), unless ``-v``."""

    NOISE = ((FutureWarning, r".*is_gradient_checkpointing.* is deprecated"),
             (UserWarning, r"Glyph \d+ .* missing from font"))

    def __enter__(self):
        import warnings

        from hf_persona.utils import expected_noise_filtered, verbosity

        self._noise = expected_noise_filtered()
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        if verbosity() <= 0:
            for category, pattern in self.NOISE:
                warnings.filterwarnings("ignore", message=pattern, category=category)
        self._noise.__enter__()
        return self

    def __exit__(self, *exc):
        self._noise.__exit__(*exc)
        self._warnings.__exit__(*exc)
        return False


def load_pipeline(tiny=None, pal="pal", extractor="persona-extractor", cobert="cobert", receiver="receiver"):
    """The pipeline of ``chat`` and ``demo``: tiny random models in the folder ``tiny``, else the
    shipped checkpoints (or the given names / folders)."""
    from hf_persona.pipeline import SupportPipeline

    if tiny is not None:
        return SupportPipeline.tiny(tiny)
    return SupportPipeline.from_shipped(pal=pal, extractor=extractor, cobert=cobert, receiver=receiver)


def models_label(tiny=None, pal="pal", extractor="persona-extractor", cobert="cobert", receiver="receiver") -> str:
    if tiny is not None:
        return f"tiny random models ({tiny})"
    return f"models ({pal}, {extractor}, {cobert}, {receiver})"


# ------------------------------------------------------------------------------------ the chat

class ChatSession:
    """The chat's state (persona on/off, α, forced strategy, seed) and its command handling."""

    def __init__(self, pipeline, persona_off=False, alpha=None, strategy=None, seed=0, echo=click.echo):
        self.pipeline, self.persona_off, self.alpha, self.strategy, self.seed = (
            pipeline, persona_off, alpha, strategy, seed)
        self.echo = echo

    def settings(self) -> str:
        alpha = "per strategy" if self.alpha is None else f"{self.alpha}"
        return (f"persona {'off' if self.persona_off else 'on'} · α {alpha} · strategy "
                f"{self.strategy or 'auto'} · seed {self.seed}")

    def command(self, line: str) -> bool:
        """Run a ``/command``; False when the chat should end."""
        name, _, arg = line[1:].strip().partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            self.echo(CHAT_HELP)
        elif name == "reset":
            self.pipeline.reset()
            self.echo("(new conversation)")
        elif name == "persona-off":
            self.persona_off = True
            self.echo(f"({self.settings()})")
        elif name == "persona-on":
            self.persona_off = False
            self.echo(f"({self.settings()})")
        elif name in ("alpha", "strategy"):
            if not arg:
                self.echo(f"/{name} needs a value; /help lists them")
                return True
            try:
                if name == "alpha":
                    self.alpha = parse_alpha(arg)
                else:
                    self.strategy = parse_strategy(arg)
            except ValueError as exc:
                self.echo(str(exc))
                return True
            self.echo(f"({self.settings()})")
        else:
            self.echo(f"unknown command /{name}; /help lists the commands")
        return True

    def turn(self, text: str):
        from hf_persona.errors import HFPersonaError

        try:
            turn = self.pipeline.respond(text, persona_off=self.persona_off, alpha=self.alpha,
                                         strategy=self.strategy, seed=self.seed)
        except HFPersonaError as exc:
            self.echo(f"error: {exc}")
            return None
        for line in render_turn(turn, persona_off=self.persona_off):
            self.echo(line)
        return turn

    def loop(self, read=input) -> None:
        if read is input and sys.stdin.isatty():
            try:  # line editing and history for input() on a terminal
                import readline  # noqa: F401
            except ImportError:  # not on every platform
                pass
        while True:
            try:
                line = read("seeker> ")
            except EOFError:
                self.echo("")
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            self.turn(line)


@click.command("chat")
@click.option("--persona-off", is_flag=True, help="Start with PAL replying without the persona (plain decoding).")
@click.option("--alpha", type=AlphaType(), default=None,
              help="A fixed contrastive α for every strategy: a number >= 0 or low / medium / high "
                   "(default: PAL's per-strategy α).")
@click.option("--strategy", type=StrategyType(), default=None,
              help="Force the strategy of every reply, case-insensitive (default: PAL chooses): "
                   + ", ".join(STRATEGIES) + ".")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Sampling seed of the replies.")
@click.option("--pal", default="pal", show_default=True, help="PAL checkpoint: a shipped name or a folder.")
@click.option("--extractor", default="persona-extractor", show_default=True,
              help="Persona extractor: a shipped name or a folder.")
@click.option("--cobert", default="cobert", show_default=True, help="CoBERT: a shipped name or a folder.")
@click.option("--receiver", default="receiver", show_default=True, help="Receiver: a shipped name or a folder.")
@click.option("--tiny", default=None, type=output_dir(), hidden=True,
              help="Tiny random models built in this folder (tests).")
def chat(persona_off, alpha, strategy, seed, pal, extractor, cobert, receiver, tiny):
    """Talk to the supporter; you are the help-seeker.

    Each reply comes from the persona extractor -> PAL with strategy contrastive decoding -> CoBERT
    -> Receiver pipeline over the shipped checkpoints. /help lists the chat commands."""
    names = dict(pal=pal, extractor=extractor, cobert=cobert, receiver=receiver)
    ticker = Ticker(models_label(tiny, **names)).start()  # first: importing torch takes a while too
    try:
        with quiet_run():
            pipeline = load_pipeline(tiny, **names)
            ticker.stop()
            session = ChatSession(pipeline, persona_off=persona_off, alpha=alpha, strategy=strategy, seed=seed)
            click.echo(f"({session.settings()}; /help lists the commands, /quit leaves)")
            session.loop()
    except KeyboardInterrupt:
        ticker.stop(ok=False)
        click.echo("")
    finally:
        ticker.stop(ok=False)  # a load that failed: end the ticking line before the error (no-op after a load)
    click.echo("bye")


def add_commands(cli):
    cli.add_command(chat)
