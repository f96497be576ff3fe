"""Pilot tests of `minigpt-tui chat` against a scripted fake backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tui_support import FakeBackend, make_app, run_async, wait_for

from minigpt_tui.generation import Generation, TokenEvent
from minigpt_tui.history import HistoryStore
from minigpt_tui.sampling import Sampler
from minigpt_tui.tui.app import ChatApp
from minigpt_tui.tui.screens.error import ErrorScreen
from minigpt_tui.tui.screens.export import ExportScreen
from minigpt_tui.tui.screens.help import HelpScreen
from minigpt_tui.tui.screens.history import HistoryScreen
from minigpt_tui.tui.widgets.prompt_input import PromptInput
from minigpt_tui.tui.widgets.settings_panel import TokenInspector
from minigpt_tui.tui.widgets.status_bar import StatusBar
from minigpt_tui.tui.widgets.transcript import MessageView
from model.backend import EngineError

SIZE = (100, 30)


async def send(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.chat.session is not None)
    pilot.app.query_one(PromptInput).load_text(text)
    await pilot.press("enter")


def replies(app: ChatApp) -> list[str]:
    return [m.text for m in app.chat.transcript.messages if m.role == "model"]


@run_async
async def test_send_streams_reply_token_by_token(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []  # what the reply view showed after each UI update
    append = MessageView.append

    def spy(self: MessageView, tokens: list) -> None:  # type: ignore[type-arg]
        append(self, tokens)
        shown.append(self.text)

    monkeypatch.setattr(MessageView, "append", spy)
    app = make_app(FakeBackend("Good morrow, sweet friend.\n\n", delay=0.01))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        assert replies(app) == ["Good morrow, sweet friend."]
        assert len(shown) >= 3, "the reply should appear in pieces while it streams"
        assert shown[0] and "Good morrow, sweet friend.".startswith(shown[0].strip())
        assert [t.role for t in app.chat.session.turns] == ["user", "model"]  # type: ignore[union-attr]
        status = app.query_one(StatusBar)
        assert status.ttft >= 0 and status.state == "ready"
        assert app.query_one(PromptInput).text == ""


@run_async
async def test_escape_stops_generation_promptly(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[float] = []  # when the generation loop returned, in its worker thread
    iterate = Generation.__iter__

    def timed(self: Generation) -> Iterator[TokenEvent]:
        try:
            yield from iterate(self)
        finally:
            ended.append(time.monotonic())

    monkeypatch.setattr(Generation, "__iter__", timed)
    backend = FakeBackend("to be or not to be, ", delay=0.05)
    app = make_app(backend, max_new_tokens=1000)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Speak")
        await wait_for(pilot, lambda: backend.decoded >= 3)
        gen = app.chat.generation
        t0 = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating, timeout=2)
        assert ended and ended[0] - t0 < 0.2, "the loop stops within 0.2 s of the key"
        assert gen is not None and gen.stats.stop_reason == "cancelled"
        decoded = backend.decoded
        await pilot.pause(0.2)
        assert backend.decoded == decoded, "no tokens after the stop"
        assert app.query_one(StatusBar).state == "stopped"
        assert replies(app)[0] and "to be or not to be".startswith(replies(app)[0])


@run_async
async def test_temperature_key_changes_the_next_token(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    choose = Sampler.choose

    def spy(self, logits, context, n_alternatives=5):  # type: ignore[no-untyped-def]
        seen.append(self.settings.temperature)
        return choose(self, logits, context, n_alternatives)

    monkeypatch.setattr(Sampler, "choose", spy)
    backend = FakeBackend("a long and winding road ", delay=0.03)
    app = make_app(backend, max_new_tokens=1000)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Go")
        await wait_for(pilot, lambda: len(seen) >= 2)
        assert app.focused is app.query_one(PromptInput)
        await pilot.press("right_square_bracket")
        n = len(seen)
        await wait_for(pilot, lambda: len(seen) >= n + 2)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert seen[0] == 0.8 and seen[-1] == pytest.approx(0.9)
        first_new = seen.index(pytest.approx(0.9))  # type: ignore[arg-type]
        assert first_new <= n + 1, "the very next token uses the new temperature"
        assert app.query_one(PromptInput).text == "", "the key must not be typed into the box"
        assert app.query_one("#temperature").value == "0.9"  # type: ignore[attr-defined]
        # When idle, brackets are text: they go into the message box.
        await pilot.press("left_square_bracket")
        assert app.query_one(PromptInput).text == "["
        assert app.settings.temperature == pytest.approx(0.9)
        await pilot.press("f2", "f5")
        assert app.settings.temperature == pytest.approx(0.8) and app.settings.top_k == 1


@run_async
async def test_settings_panel_edits_apply_and_reject_bad_values() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        box = app.query_one("#top_p")
        box.value = "0.5"  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.settings.top_p == 0.5
        box.value = "7"  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.settings.top_p == 0.5 and box.has_class("-invalid")
        seed_box = app.query_one("#seed")
        seed_box.value = "-5"  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.settings.seed == 1 and seed_box.has_class("-invalid")
        app.query_one("#bot_name").value = "NURSE"  # type: ignore[attr-defined]
        await pilot.pause()
        await send(pilot, "Hi")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        assert app.chat.transcript.last_model_view().speaker == "NURSE"  # type: ignore[union-attr]
        assert "\nNURSE:\n" in app.template.render(app.chat.session.turns)  # type: ignore[union-attr]


@run_async
async def test_regenerate_new_history_reopen_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = HistoryStore(tmp_path / "history.db")
    app = make_app(FakeBackend("Good morrow.\n\n"), history=store)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        await pilot.press("ctrl+r")
        await wait_for(
            pilot, lambda: not app.chat.generating and app.chat.session.turns[-1].role == "model"
        )  # type: ignore[union-attr]
        assert replies(app) == ["Good morrow."], "regenerate replaces the last reply"
        assert len(app.chat.session.turns) == 2  # type: ignore[union-attr]

        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat.transcript.messages == [] and app.chat.session.turns == []  # type: ignore[union-attr]
        saved = store.list()
        assert [c.title for c in saved] == ["Hello"]

        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        assert [m.text for m in app.chat.transcript.messages] == ["Hello", "Good morrow."]
        await send(pilot, "Again")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 2)
        assert len(store.list()) == 1, "continuing a reopened conversation updates it"
        assert len(store.load(saved[0].id).turns) == 4  # type: ignore[arg-type,union-attr]

        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        box = app.screen.query_one("#export-path")
        box.value = "talk.md"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_for(pilot, lambda: (tmp_path / "talk.md").exists())
        text = (tmp_path / "talk.md").read_text()
        assert "**ROMEO:**\n\nHello" in text and "**JULIET:**\n\nGood morrow." in text


@run_async
async def test_help_copy_probabilities_and_history_recall() -> None:
    app = make_app(FakeBackend("Fair Verona.\n\n"))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first line")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        await pilot.press("ctrl+o")
        assert app.clipboard == "Fair Verona."
        await pilot.press("up")
        assert app.query_one(PromptInput).text == "first line"
        await pilot.press("down")
        assert app.query_one(PromptInput).text == ""
        await pilot.press("ctrl+t")
        await pilot.pause()
        view = app.chat.transcript.last_model_view()
        assert view is not None and view.show_probs
        inspector = app.query_one(TokenInspector)
        assert inspector.display and not inspector.has_class("-hidden")
        app.chat.transcript.focus()
        await pilot.press("left", "left")
        assert view.selected == len(view.tokens) - 3
        assert "Verona" in "".join(t.text for t in view.tokens)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@run_async
async def test_complete_mode_continues_the_document() -> None:
    app = make_app(FakeBackend("and more text"), max_new_tokens=8)
    app.mode = "complete"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        assert not app.chat.prompt_input.display and app.focused is app.chat.document
        app.chat.document.load_text("Once upon ")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.last_stats is not None)
        assert app.chat.document.text == "Once upon and more"
        await pilot.press("ctrl+r")
        await wait_for(
            pilot, lambda: not app.chat.generating and app.chat.document.text != "Once upon "
        )
        assert app.chat.document.text == "Once upon and more", "regenerate redoes the continuation"
        app.chat.document.insert("!", app.chat.document.document.end)  # the user edits the result
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not app.chat.generating and app.chat.document.text == "Once upon and more!", (
            "edits kept"
        )


@run_async
async def test_unknown_characters_and_long_text_are_kept_with_a_notice() -> None:
    app = make_app(FakeBackend("Ay.\n\n", block_size=32))
    async with app.run_test(size=SIZE) as pilot:
        long = "word " * 100 + "é"
        await send(pilot, long)
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        notes = [n.message for n in app._notifications]
        assert any("'é'" in n for n in notes)
        assert any("longer than the model's context" in n for n in notes)
        assert app.chat.session.turns[0].text == long  # type: ignore[union-attr]
        assert app.query_one(StatusBar).context <= 32


@run_async
async def test_model_that_fails_to_load_shows_an_error_screen() -> None:
    def broken() -> FakeBackend:
        raise EngineError("model.onnx is damaged: cannot parse")

    app = ChatApp(broken, model_label="broken")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen))
        await pilot.pause()
        assert "model.onnx is damaged" in str(app.screen.query_one("#error-message").render())
        await pilot.press("q")
    assert app.return_code == 1 and "damaged" in app.load_error


@run_async
async def test_tiny_terminal_shows_a_message() -> None:
    app = make_app()
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        assert app.screen.has_class("-too-small")
        assert app.query_one("#too-small").display
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not app.screen.has_class("-too-small")


@run_async
async def test_mode_switch_from_the_settings_panel() -> None:
    app = make_app(FakeBackend("Hark.\n\n"))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        app.query_one("#mode").focus()
        await pilot.press("enter", "down", "enter")
        await wait_for(pilot, lambda: app.chat.mode == "complete")
        assert app.focused is app.chat.document and not app.chat.prompt_input.display
        assert app.chat.transcript.messages == [], "a mode switch starts a new conversation"
        assert len(app.history.list()) == 1, "the chat so far was saved"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "poem"], "--mode must be chat or complete"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--user", "A:B"], "--user must be a non-empty name"),
        (["--backend", "gpu"], "--backend must be auto, torch or onnx"),
        (["--seed", "-3"], "seed must be >= 0"),
    ],
)
def test_chat_command_rejects_bad_options(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minigpt_tui.cli import main

    with pytest.raises(SystemExit) as e:
        main(["chat", "--model", str(tmp_path / "missing"), *args])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_chat_command_reports_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minigpt_tui.cli import main

    with pytest.raises(SystemExit) as e:
        main(["chat", "--model", str(tmp_path / "missing")])
    assert e.value.code != 0 and "model not found" in capsys.readouterr().err


@run_async
async def test_scrolling_up_stops_following_the_reply() -> None:
    backend = FakeBackend("line after line\n", delay=0.002)
    app = make_app(backend, max_new_tokens=2000)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Talk")
        transcript = app.chat.transcript
        await wait_for(pilot, lambda: transcript.max_scroll_y > 5)
        assert transcript.scroll_y == transcript.max_scroll_y, "follows while at the end"
        transcript.focus()
        await pilot.press("pageup")
        where = transcript.scroll_y
        await wait_for(pilot, lambda: transcript.max_scroll_y > where + 30, timeout=20)
        assert transcript.scroll_y == where, "stays where the user went"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)


async def _two_replies(seed: int) -> list[str]:
    app = make_app(FakeBackend("abcdefgh", sharpness=2.0), seed=seed, max_new_tokens=12)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        first = replies(app)[0]
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.generating and replies(app) != [first])
        return [first, replies(app)[0]]


@run_async
async def test_seed_repeats_the_conversation_and_regenerate_still_varies() -> None:
    a = await _two_replies(seed=7)
    assert a[0] != a[1], "a regenerated reply differs from the one it replaces"
    assert await _two_replies(seed=7) == a, "the same seed repeats the whole conversation"


@run_async
async def test_panel_toggle_keeps_the_conversation_usable() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await pilot.press("ctrl+p")
        assert not app.query_one("#settings").display
        await send(pilot, "Hi")
        await wait_for(pilot, lambda: not app.chat.generating and len(replies(app)) == 1)
        await pilot.press("ctrl+p")
        assert app.query_one("#settings").display
