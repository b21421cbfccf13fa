"""``hf-persona serve`` (issue 26, part 4): the Gradio page, driven by a real headless browser.

* The callbacks of :func:`hf_persona.serve.build_app` run without a browser on a small stand-in
  pipeline (fast): the controls reach ``respond``, each tab keeps its own conversation.
* The browser test serves the page over the real tiny pipeline (``SupportPipeline.tiny``) and drives
  Debian's ``chromium`` through selenium and ``chromium-driver`` (no browser download): it types and
  sends two seeker turns and reads back a supporter reply, a persona sentence, the CoBERT table and
  the heat-map. A screenshot goes to ``$HF_PERSONA_SCREENSHOT`` when set (``docs/images/serve.png``
  for the README), else to ``tmp_path``.

Without chromium / chromedriver / selenium the browser test is skipped, unless ``CI`` is set: in
CI (which installs them, see ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason='gradio is not installed (pip install "hf-persona[serve]")')

from hf_persona.pipeline import STRATEGIES, SupportTurn  # noqa: E402
from hf_persona.serve import ELEM_IDS, MODEL_CHOICE, NO_PERSONA, ServeSession, build_app  # noqa: E402


# ------------------------------------------------------------------------------ without a browser

class StandInPipeline:
    """The SupportPipeline API on canned text: records what ``respond`` was asked."""

    def __init__(self):
        self.calls = []
        self.reset()

    def reset(self):
        self.history, self.strategies, self.persona = [], [], []

    def respond(self, seeker_text, persona_off=False, alpha=None, strategy=None, seed=0):
        self.calls.append(dict(seeker=seeker_text, persona_off=persona_off, alpha=alpha, strategy=strategy, seed=seed))
        n = len(self.history) // 2 + 1
        self.history.append(("seeker", seeker_text))
        self.persona.append(f"persona sentence {n} .")
        reply = f"reply {n} to {seeker_text}"
        self.history.append(("supporter", reply))
        self.strategies += ["", strategy or "Question"]
        return SupportTurn(seeker=seeker_text, reply=reply, persona=list(self.persona),
                           strategy=strategy or "Question", alpha=None if persona_off else (alpha or 0.5),
                           ranking=[("other reply", 2.0), (reply, 1.0)], receiver_score=0.25, seconds=0.01)

    def heatmap(self, path):
        Path(path).write_bytes(b"png")
        return Path(path)


def test_callbacks_pass_the_controls_and_keep_one_conversation_per_tab(tmp_path):
    pipe = StandInPipeline()
    app = build_app(pipe, image_dir=tmp_path)
    assert isinstance(app, gr.Blocks)
    ids = {block.elem_id for block in app.blocks.values()}
    assert set(ELEM_IDS.values()) <= ids
    session = app.hf_persona_session
    assert isinstance(session, ServeSession)

    out = session.send("  i lost my job  ", None)  # the page's defaults: model's choice, paper α
    messages, box, persona, info, rows, receiver, heatmap, tab_a = out
    assert pipe.calls[-1] == dict(seeker="i lost my job", persona_off=False, alpha=None, strategy=None, seed=0)
    assert messages == [{"role": "user", "content": "i lost my job"},
                        {"role": "assistant", "content": "reply 1 to i lost my job"}]
    assert box == "" and persona == "persona sentence 1 ."
    assert "Question" in info and "0.5" in info
    assert rows == [[1, 2.0, "other reply", ""], [2, 1.0, "reply 1 to i lost my job", "yes"]]
    assert receiver.endswith("0.250") and Path(heatmap).parent == tmp_path

    # a second tab starts its own conversation; the first one goes on where it was
    tab_b = session.send("hello", None, "Self-disclosure", 1.25, False, True, 7)[-1]
    assert pipe.calls[-1] == dict(seeker="hello", persona_off=True, alpha=1.25, strategy="Self-disclosure", seed=7)
    assert len(tab_b["history"]) == 2
    messages, _, persona, *_ = session.send("and i can not sleep", tab_a, MODEL_CHOICE, 0.1, True, False, 0)
    assert pipe.calls[-1]["alpha"] is None  # the paper's per-strategy α wins over the slider
    assert [m["content"] for m in messages][::2] == ["i lost my job", "and i can not sleep"]
    assert persona.splitlines() == ["persona sentence 1 .", "persona sentence 2 ."]

    assert session.reset() == ([], "", NO_PERSONA, "", [], "", None, None)
    with pytest.raises(gr.Error):
        session.send("   ", None)
    with pytest.raises(gr.Error):
        session.send("hi", None, "Not a strategy")
    dropdown = next(b for b in app.blocks.values() if b.elem_id == ELEM_IDS["strategy"])
    assert [c[0] for c in dropdown.choices] == [MODEL_CHOICE, *STRATEGIES]


def test_serve_command_without_gradio_says_how_to_install(monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from hf_persona.cli import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    result = CliRunner().invoke(cli, ["serve", "--port", "7999"])
    assert result.exit_code == 2
    assert result.output.strip() == 'error: hf-persona serve needs gradio: pip install "hf-persona[serve]"'


# ------------------------------------------------------------------------------ in a browser

def _browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_ok = False
    else:
        selenium_ok = True
    missing = [name for name, ok in (("chromium", chromium), ("chromium-driver", driver),
                                     ("selenium", selenium_ok)) if not ok]
    if missing:
        reason = (f"{', '.join(missing)} missing: apt-get install chromium chromium-driver; "
                  'pip install "hf-persona[test]"')
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(what, condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_two_turns_in_headless_chromium(tmp_path):
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from hf_persona.pipeline import SupportPipeline
    from hf_persona.serve import serve

    started = time.monotonic()
    # HF_PERSONA_SERVE_SHIPPED=1: the shipped checkpoints (for the README screenshot) instead of tiny models
    shipped = os.environ.get("HF_PERSONA_SERVE_SHIPPED") == "1"
    pipe = SupportPipeline.from_shipped() if shipped else SupportPipeline.tiny(tmp_path / "tiny")
    port = _free_port()
    app = serve(host="127.0.0.1", port=port, pipeline=pipe, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1300", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    browser = None
    turn_timeout = 600  # a tiny-model turn takes a second alone, minutes on a loaded 2-core machine
    try:
        browser = webdriver.Chrome(service=Service(driver_path), options=options)
        browser.get(f"http://127.0.0.1:{port}/")
        find = lambda key, css="": browser.find_element(By.CSS_SELECTOR, f"#{ELEM_IDS[key]} {css}".strip())  # noqa: E731
        _wait("the page", lambda: browser.find_elements(By.CSS_SELECTOR, f"#{ELEM_IDS['message']} textarea"), 60)

        def texts(css):  # read in the page, in one go: gradio re-renders the elements as it updates
            return browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".map(e => (e.value !== undefined && e.tagName == 'TEXTAREA' ? e.value : e.innerText).trim())"
                ".filter(t => t.length > 0);", css)

        def bubbles(role):  # "user" (the seeker) or "bot" (the supporter)
            return texts(f"#{ELEM_IDS['chatbot']} [data-testid='{role}']")

        for n, (text, via_enter) in enumerate((("i lost my job and i feel useless", False),
                                              ("my sister says i should look for work but i can not sleep", True)),
                                             start=1):
            box = find("message", "textarea")
            box.send_keys(text)
            if via_enter:
                box.send_keys("\n")
            else:
                find("send").click()
            _wait(f"reply {n}", lambda: len(bubbles("bot")) >= n, turn_timeout)
        norm = lambda text: " ".join(text.split())  # noqa: E731
        supporter = [norm(text) for speaker, text in pipe.history if speaker == "supporter"]
        assert [norm(t) for t in bubbles("user")] == [norm(text) for speaker, text in pipe.history if speaker == "seeker"]
        assert [norm(t) for t in bubbles("bot")] == supporter and len(supporter) == 2
        persona = _wait("a persona sentence", lambda: [line for text in texts(f"#{ELEM_IDS['persona']} textarea")
                                                       for line in text.splitlines() if line != NO_PERSONA], 60)
        assert persona[0] in pipe.persona
        rows = _wait("the CoBERT table", lambda: texts(f"#{ELEM_IDS['ranking']} [role='row'].virtual-row"), 60)
        assert len(rows) >= 2 and any(row.endswith("yes") for row in rows), rows
        _wait("the heat-map PNG, loaded", lambda: browser.execute_script(
            "const img = document.querySelector(arguments[0]); return img && img.complete && img.naturalWidth;",
            f"#{ELEM_IDS['heatmap']} img"), 60)
        assert "Receiver persona perception" in " ".join(texts(f"#{ELEM_IDS['receiver']}"))

        shot = Path(os.environ.get("HF_PERSONA_SCREENSHOT") or tmp_path / "serve.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"\nserve browser test: two turns in {time.monotonic() - started:.1f} s; screenshot {shot}")
    finally:
        if browser is not None:
            browser.quit()
        app.close()
