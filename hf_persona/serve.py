"""``hf-persona serve``: the supporter as a Gradio web page; the visitor is the help-seeker.

The page holds a chat (the visitor's turns and the supporter's replies), the seeker persona inferred
so far (one sentence per line), the controls of a turn (the reply's strategy or the model's choice,
a fixed contrastive α or the paper's per-strategy α, persona on/off, the sampling seed), CoBERT's
ranking of the reply against other supporter replies, and the Receiver's persona-perception score
with its relevance heat-map.

:func:`build_app` wraps any object with the :class:`hf_persona.pipeline.SupportPipeline` API
(``reset``, ``respond``, ``history``, ``heatmap``); :class:`ServeSession` holds the callbacks, plain
functions of plain values, so they are tested without a browser. One pipeline serves every visitor:
each browser tab keeps its own conversation (history, strategies, persona) in the page's state and the
pipeline is switched to it, under a lock, for the length of a turn.

Every element has a stable ``elem_id`` (:data:`ELEM_IDS`); the browser test finds them by it.

gradio is an optional dependency (``pip install "hf-persona[serve]"``); this module imports it.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import threading
from pathlib import Path

from .pipeline import STRATEGIES

#: the strategy dropdown's first entry: PAL chooses the strategy that opens the reply
MODEL_CHOICE = "model's choice"
#: the α slider: range, step and start (PAL's "medium" level)
ALPHA_RANGE = (0.0, 1.5, 0.025, 0.375)
#: the pipeline attributes that make up one conversation (swapped per browser tab)
CONVERSATION_ATTRS = ("history", "strategies", "persona")
#: the stable element ids of the page
ELEM_IDS = {
    "chatbot": "hfp-chatbot",
    "message": "hfp-message",
    "send": "hfp-send",
    "reset": "hfp-reset",
    "persona": "hfp-persona",
    "strategy": "hfp-strategy",
    "alpha": "hfp-alpha",
    "paper_alpha": "hfp-paper-alpha",
    "persona_off": "hfp-persona-off",
    "seed": "hfp-seed",
    "turn_info": "hfp-turn-info",
    "ranking": "hfp-ranking",
    "receiver": "hfp-receiver",
    "heatmap": "hfp-heatmap",
}
RANKING_HEADERS = ["rank", "CoBERT score", "candidate reply", "is the reply"]
NO_PERSONA = "(no persona inferred yet)"
INSTALL_HINT = 'hf-persona serve needs gradio: pip install "hf-persona[serve]"'


def _snapshot(pipeline) -> dict:
    return {name: copy.deepcopy(getattr(pipeline, name)) for name in CONVERSATION_ATTRS if hasattr(pipeline, name)}


def _restore(pipeline, conversation: dict | None) -> None:
    pipeline.reset()
    for name, value in (conversation or {}).items():
        setattr(pipeline, name, copy.deepcopy(value))


def _messages(history) -> list[dict]:
    """The pipeline's history as the Chatbot's messages (the seeker is the user)."""
    return [{"role": "user" if speaker == "seeker" else "assistant", "content": text} for speaker, text in history]


def persona_text(persona) -> str:
    return "\n".join(persona) if persona else NO_PERSONA


def ranking_rows(turn) -> list[list]:
    return [[rank, round(float(score), 4), text, "yes" if text == turn.reply else ""]
            for rank, (text, score) in enumerate(turn.ranking, start=1)]


def turn_info(turn, persona_off: bool) -> str:
    if turn.alpha is not None:
        alpha = f"α {turn.alpha:g}"
    elif persona_off:
        alpha = "α off (persona off: plain decoding)"
    else:
        alpha = "α off (no persona yet: plain decoding)"
    return f"strategy **{turn.strategy or '(none)'}** · {alpha} · {turn.seconds:.2f} s"


def receiver_text(turn) -> str:
    if turn.receiver_score is None:
        return "Receiver persona perception: (no persona yet)"
    return f"Receiver persona perception: {turn.receiver_score:.3f}"


class ServeSession:
    """The page's callbacks around one pipeline. :meth:`send` and :meth:`reset` take and return the
    plain values of the page's components, in the order :data:`SEND_OUTPUTS` names them."""

    #: what :meth:`send` returns, in order
    SEND_OUTPUTS = ("chatbot", "message", "persona", "turn_info", "ranking", "receiver", "heatmap", "state")

    def __init__(self, pipeline, image_dir=None):
        self.pipeline = pipeline
        self.image_dir = Path(image_dir) if image_dir is not None else Path(tempfile.mkdtemp(prefix="hf-persona-serve-"))
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self._images = 0

    @staticmethod
    def options(strategy, alpha, paper_alpha, persona_off, seed) -> dict:
        """``respond``'s keyword arguments from the controls' values."""
        strategy = None if strategy in (None, "", MODEL_CHOICE) else strategy
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}")
        if paper_alpha or alpha is None:
            alpha = None
        else:
            alpha = float(alpha)
            if not math.isfinite(alpha) or alpha < 0:
                raise ValueError(f"α must be a number >= 0, got {alpha}")
        seed = 0 if seed is None or seed == "" else int(seed)
        return {"persona_off": bool(persona_off), "alpha": alpha, "strategy": strategy, "seed": max(seed, 0)}

    def send(self, message, conversation, strategy=MODEL_CHOICE, alpha=ALPHA_RANGE[3], paper_alpha=True,
             persona_off=False, seed=0):
        """One seeker turn: returns (messages, "", persona, turn info, ranking rows, receiver line,
        heat-map path or None, the tab's conversation)."""
        import gradio as gr

        from .errors import HFPersonaError

        text = (message or "").strip()
        if not text:
            raise gr.Error("Type what the seeker says first.")
        try:
            options = self.options(strategy, alpha, paper_alpha, persona_off, seed)
        except (TypeError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        with self.lock:
            _restore(self.pipeline, conversation)
            try:
                turn = self.pipeline.respond(text, **options)
            except HFPersonaError as exc:
                raise gr.Error(str(exc)) from exc
            self._images += 1
            heatmap = self.pipeline.heatmap(self.image_dir / f"heatmap-{os.getpid()}-{self._images}.png")
            history = list(self.pipeline.history)
            conversation = _snapshot(self.pipeline)
        return (_messages(history), "", persona_text(turn.persona), turn_info(turn, options["persona_off"]),
                ranking_rows(turn), receiver_text(turn), str(heatmap) if heatmap else None, conversation)

    def reset(self):
        """A new conversation for this tab: the same outputs as :meth:`send`, empty."""
        return [], "", NO_PERSONA, "", [], "", None, None


def build_app(pipeline, title: str = "hf_persona: emotional support with persona", image_dir=None):
    """The Gradio page around ``pipeline`` (a :class:`~hf_persona.pipeline.SupportPipeline` or any
    object with its API). ``app.hf_persona_session`` is the :class:`ServeSession` behind it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    session = ServeSession(pipeline, image_dir=image_dir)
    ids = ELEM_IDS
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\nYou are the help-seeker. Each turn goes through the persona extractor, "
                    "PAL with strategy contrastive decoding, CoBERT and the Receiver.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", elem_id=ids["chatbot"], height=380,
                                     render_markdown=False)  # the model's words as they are
                with gr.Row():
                    message = gr.Textbox(label="You (the seeker)", placeholder="What is on your mind?",
                                         elem_id=ids["message"], scale=5, lines=1)
                    send = gr.Button("Send", variant="primary", elem_id=ids["send"], scale=1)
                reset = gr.Button("New conversation", elem_id=ids["reset"], size="sm")
                info = gr.Markdown("", elem_id=ids["turn_info"])
                ranking = gr.Dataframe(headers=RANKING_HEADERS, value=[], label="CoBERT: the reply among alternatives",
                                       interactive=False, wrap=True, elem_id=ids["ranking"])
            with gr.Column(scale=2):
                persona = gr.Textbox(value=NO_PERSONA, label="Seeker persona inferred so far", lines=5,
                                     interactive=False, elem_id=ids["persona"])
                strategy = gr.Dropdown([MODEL_CHOICE, *STRATEGIES], value=MODEL_CHOICE, label="Strategy of the reply",
                                       elem_id=ids["strategy"])
                paper_alpha = gr.Checkbox(value=True, label="paper's per-strategy α", elem_id=ids["paper_alpha"])
                low, high, step, start = ALPHA_RANGE
                alpha = gr.Slider(low, high, value=start, step=step, label="fixed α (when the box above is off)",
                                  elem_id=ids["alpha"])
                persona_off = gr.Checkbox(value=False, label="persona off (plain decoding)", elem_id=ids["persona_off"])
                seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id=ids["seed"])
                receiver = gr.Markdown("", elem_id=ids["receiver"])
                heatmap = gr.Image(label="Receiver relevance heat-map", type="filepath", interactive=False,
                                   elem_id=ids["heatmap"])
        inputs = [message, state, strategy, alpha, paper_alpha, persona_off, seed]
        outputs = [chatbot, message, persona, info, ranking, receiver, heatmap, state]
        send.click(session.send, inputs, outputs)
        message.submit(session.send, inputs, outputs)
        reset.click(session.reset, None, outputs)
    app.hf_persona_session = session
    return app


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, pipeline=None, tiny=None,
          prevent_thread_lock: bool = False, quiet: bool = False, **names):
    """Build the page around ``pipeline`` (default: the shipped checkpoints, or tiny random models in
    the folder ``tiny``; ``names``: pal / extractor / cobert / receiver) and serve it at
    ``http://host:port``; ``share=True`` also asks Gradio for a public link. Blocks until stopped
    unless ``prevent_thread_lock``; returns the app."""
    if pipeline is None:
        from .pipeline import SupportPipeline

        pipeline = SupportPipeline.tiny(tiny) if tiny is not None else SupportPipeline.from_shipped(**names)
    app = build_app(pipeline)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
               quiet=quiet, ssr_mode=False, allowed_paths=[str(app.hf_persona_session.image_dir)])
    return app
