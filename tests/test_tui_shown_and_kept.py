"""What the chat and watch apps show and keep, whatever comes at them: hostile names, replies
and metrics shown inert, an export that asks before replacing a file, a streaming reply saved
on New and on Quit, nothing sent while the terminal is too small to show it, and a fast
Esc + Ctrl+R burst that types no "^". (Moved from test_hardening2.py; tests/README.md lists
what each test proves.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tui_support import VOCAB, FakeBackend, make_app, run_async, wait_for

from minigpt_tui.dialogue import Turn
from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.tui.widgets.prompt_input import PromptInput
from minigpt_tui.tui.widgets.status_bar import StatusBar
from tests.helpers import EVIL, assert_inert


def test_watch_shows_hostile_metricsassert_inert(tmp_path: Path) -> None:
    from minigpt_tui.tui.watch_app import WatchApp

    run = tmp_path / "run [old] [" / "]"
    run.mkdir(parents=True)
    events = [
        {"event": "start", "iter": 0, "max_iters": 1e999, "time_budget": float("inf")},
        {"event": "train", "iter": 1, "loss": 2.0, "elapsed": float("inf"), "lr": math.nan},
        {"event": "sample", "iter": 1, "text": EVIL},
        {"event": "end", "iter": float("nan"), "reason": EVIL, "elapsed": 1e999},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    @run_async
    async def check() -> None:
        app = WatchApp(run)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.2)
            screen = _screen(app)
            assert_inert(screen)
            assert "[old] [/]" in screen and "\\x1b" in screen

    check()


def _screen(app: Any) -> str:
    """The text of the app's screen, as a terminal would show it (from the SVG screenshot)."""
    import html

    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


class _EvilBackend(FakeBackend):
    """A backend whose vocabulary holds ESC, BEL and brackets (test_tui_support.VOCAB is
    patched while it is built), and whose model is called EVIL."""

    def __init__(self) -> None:
        super().__init__("\x1b[J\x07[/][old] hi\n\n")
        self.info.meta["name"] = EVIL
        self.vocab_len = self.tokenizer.vocab_size

    def _logits(self) -> np.ndarray:
        logits = np.zeros(self.vocab_len, dtype=np.float32)
        logits[self.script[self.pos % len(self.script)]] = self.sharpness
        return logits


@run_async
async def test_chat_shows_names_replies_and_historyassert_inert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import test_tui_support

    monkeypatch.setattr(test_tui_support, "VOCAB", "".join(sorted(set(VOCAB + "\x1b\x07[]/"))))
    backend = _EvilBackend()
    history = HistoryStore(tmp_path / "history.db")
    history.save(Conversation(None, "", "chat", EVIL, [Turn("user", EVIL)]))
    app = make_app(backend, history=history, temperature=0.0)
    app.model_label = ""
    async with app.run_test(size=(110, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        app.query_one(PromptInput).load_text("say it")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: not app.chat.generating and len(app.chat.transcript.messages) == 2
        )
        status = app.query_one(StatusBar)
        assert EVIL in status.model  # kept as it is; only its display is made inert
        screen = _screen(app)
        assert_inert(screen)
        assert "\\x1b]0;PWNED" in screen and "[/][old]" in screen
        await pilot.press("ctrl+l")  # the history list shows the saved title
        await pilot.pause(0.2)
        screen = _screen(app)
        assert_inert(screen)
        assert "\\x1b]0;PWNED" in screen
    history.close()


# ------------------------------------------------------------------ chat keeps what is on screen


def _replies(app: Any) -> list[str]:
    return [m.text for m in app.chat.transcript.messages if m.role == "model"]


@run_async
async def test_export_asks_before_replacing_and_never_creates_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minigpt_tui.history import export
    from minigpt_tui.tui.screens.export import ExportScreen

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "notes.md"
    mine.write_bytes(b"x" * 1_000_000)
    app = make_app(FakeBackend("Good morrow.\n\n"))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        app.query_one(PromptInput).load_text("Hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(_replies(app)) == 1)

        async def submit(path: str) -> str:
            app.screen.query_one("#export-path").value = path  # type: ignore[attr-defined]
            await pilot.press("enter")
            await pilot.pause(0.1)
            return str(app.screen.query_one("#export-note").render())

        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        note = await submit("/nonexistent/dir/x.md")
        assert "no directory /nonexistent/dir" in note and not Path("/nonexistent").exists()
        note = await submit(str(mine))
        assert "exists: Enter again replaces it" in note and isinstance(app.screen, ExportScreen)
        assert mine.stat().st_size == 1_000_000  # asked, not replaced
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ExportScreen))
        assert mine.stat().st_size == 1_000_000
        await pilot.press("ctrl+s")  # asked again, and confirmed this time
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        await submit(str(mine))
        await pilot.press("enter")
        await wait_for(pilot, lambda: mine.stat().st_size < 1_000_000)
        assert "Good morrow." in mine.read_text()
    with pytest.raises(FileNotFoundError):  # the writer itself makes no directory either
        export(
            Conversation(None, "", "chat", "m", [Turn("user", "hi")]), tmp_path / "a" / "b.md", {}
        )
    assert not (tmp_path / "a").exists()


@run_async
async def test_a_streaming_reply_is_saved_on_new_and_on_quit(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.db")
    backend = FakeBackend("to be or not to be, ", delay=0.05)
    app = make_app(backend, history=store, max_new_tokens=1000)
    async with app.run_test(size=(100, 30)) as pilot:
        for key in ("ctrl+n", "ctrl+q"):
            await wait_for(pilot, lambda: app.chat.session is not None)
            app.query_one(PromptInput).load_text(f"before {key}")
            await pilot.press("enter")
            decoded = backend.decoded
            await wait_for(pilot, lambda: backend.decoded >= decoded + 4)  # noqa: B023
            assert app.chat.generating
            await pilot.press(key)
            await pilot.pause(0.1)
    saved = [store.load(c.id) for c in store.list() if c.id is not None]
    assert sorted(c.turns[0].text for c in saved if c) == ["before ctrl+n", "before ctrl+q"]
    for conv in saved:
        assert conv is not None and [t.role for t in conv.turns] == ["user", "model"]
        assert "to be or not".startswith(conv.turns[1].text[:12]) and len(conv.turns[1].text) >= 3
    store.close()


@run_async
async def test_a_terminal_too_small_sends_nothing_typed_unseen() -> None:
    app = make_app(FakeBackend("Good morrow.\n\n"))
    async with app.run_test(size=(40, 10)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await pilot.press("h", "i", "enter", "ctrl+g", "ctrl+r")
        await pilot.pause(0.2)
        assert (
            app.chat.session is not None
            and app.chat.session.turns == []
            and not app.chat.generating
        )
        assert app.query_one(PromptInput).text == ""  # nothing typed into the hidden box
        await pilot.resize_terminal(100, 30)
        await pilot.pause(0.2)
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(_replies(app)) == 1)
        assert [t.text for t in app.chat.session.turns][:1] == ["hi"]


@run_async
async def test_a_fast_escape_and_ctrl_r_burst_types_no_caret() -> None:
    from textual import events
    from textual._xterm_parser import XTermParser

    parser = XTermParser()  # what the terminal driver makes of Esc, Ctrl+R, Esc in one read
    burst = [
        e for e in [*parser.feed("\x1b\x12\x1b"), *parser.feed("")] if isinstance(e, events.Key)
    ]
    assert [k.key for k in burst][:2] == ["circumflex_accent", "ctrl+r"]
    backend = FakeBackend("to be or not to be, ", delay=0.05)
    app = make_app(backend, max_new_tokens=1000)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        app.query_one(PromptInput).load_text("Speak")
        await pilot.press("enter")
        await wait_for(pilot, lambda: backend.decoded >= 3)
        first = app.chat.generation
        for key in burst:  # Esc stops the reply, Ctrl+R asks for it again, Esc stops that
            app.post_message(key)
        await wait_for(pilot, lambda: first is not None and first.stats.stop_reason != "")
        assert first is not None and first.stats.stop_reason == "cancelled"
        while app.chat.generating:
            await pilot.press("escape")
            await pilot.pause(0.05)
        assert app.query_one(PromptInput).text == ""  # and no "^" was typed
        await pilot.press("circumflex_accent")  # a "^" typed on its own is still a "^"
        await pilot.pause(0.1)
        assert app.query_one(PromptInput).text == "^"
