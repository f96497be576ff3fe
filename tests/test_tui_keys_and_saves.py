"""The chat's keys and saves under a hostile user (issue 24's third red team): a digit typed after
Tab never changes a sampling setting, every Tab stop shows it has focus and keeps its text, a
new compare pane differs from the others or says why not, errors are shown whole, every dialog
shows its own keys and closes with the key that opened it, deleting needs a second key and never
takes the open conversation, and a save that fails is said at the time and at quit.
(tests/README.md's bad-input matrix lists each case.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from test_tui_support import FakeBackend, make_app, run_async, said, wait_for
from textual.widgets import Footer, Input
from textual.widgets._footer import FooterKey

from minigpt_tui.history import HistoryStore
from minigpt_tui.tui.chat.screen import ChatScreen
from minigpt_tui.tui.widgets.prompt_input import PromptInput
from minigpt_tui.tui.widgets.setting_field import SettingField


async def _started(pilot: Any, app: Any) -> None:
    await wait_for(pilot, lambda: app.chat.session is not None)


async def _say(pilot: Any, app: Any, text: str) -> None:
    """Send `text` and wait for the whole reply."""
    n = len(app.chat.session.turns)
    app.query_one(PromptInput).load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.chat.generating and len(app.chat.session.turns) >= n + 2)


def _settings(app: Any) -> tuple[Any, ...]:
    s = app.chat.settings
    t = app.chat.template
    return (
        s.temperature,
        s.top_k,
        s.top_p,
        s.max_new_tokens,
        s.seed,
        t.user,
        t.model,
        app.chat.mode,
    )


@run_async
async def test_a_digit_after_tab_never_changes_a_sampling_setting() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await _started(pilot, app)
        before = _settings(app)
        assert isinstance(app.focused, PromptInput)
        await pilot.press("tab", "3")  # the red team's probe: temperature 0.8 -> 3
        assert _settings(app) == before
        for _ in range(12):  # any number of Tabs, then digits (and a letter for the names)
            await pilot.press("tab", "1", "5", "x", "backspace")
            assert _settings(app) == before, app.focused
        # A settings field takes typing once asked to: Enter edits, Enter keeps.
        app.screen.query_one("#temperature").focus()
        await pilot.press("enter", "backspace", "backspace", "backspace", "0", ".", "5", "enter")
        assert app.chat.settings.temperature == 0.5
        await pilot.press("7")  # no longer editing: a digit does nothing again
        assert app.chat.settings.temperature == 0.5
        await pilot.press("enter", "backspace", "9", "escape")  # Esc puts the value back
        assert app.chat.settings.temperature == 0.5
        assert app.screen.query_one("#temperature", SettingField).value == "0.5"


@run_async
async def test_a_settings_field_is_text_until_edited_and_applies_as_typed() -> None:
    """A settings field has no text box until edited (fewer widgets to style at startup): a
    click puts one in its place holding its value; what is typed applies at once, a bad
    value is marked and not applied, Tab leaves and keeps it, Esc puts the old one back."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await _started(pilot, app)
        panel = app.screen.query_one("#settings")
        assert not panel.query(Input), "no text box in the panel before a field is edited"
        top_p = app.screen.query_one("#top_p", SettingField)
        await pilot.click("#top_p")
        editor = app.focused
        assert isinstance(editor, Input) and editor.value == "1.0" and not top_p.display
        await pilot.press("backspace", "backspace", ".", "5")  # 1.5: not a probability
        assert app.chat.settings.top_p == 1.0 and top_p.has_class("-invalid")
        assert editor.has_class("-invalid")
        await pilot.press("backspace", "backspace", "backspace", "0", ".", "5")
        assert app.chat.settings.top_p == 0.5 and not top_p.has_class("-invalid")
        await pilot.press("tab")  # leaving keeps what was typed
        assert app.focused is app.screen.query_one("#max_tokens") and top_p.value == "0.5"
        assert top_p.display and not panel.query(Input)
        name = app.template.model
        await pilot.click("#bot_name")
        await pilot.press("x")
        assert app.template.model == name + "x"
        await pilot.press("escape")
        assert app.template.model == name and app.focused is app.screen.query_one("#bot_name")
        assert not panel.query(Input)


@run_async
async def test_the_mode_field_lists_the_modes_when_asked_and_esc_keeps_the_mode() -> None:
    """The mode is drawn as text until chosen: Enter shows the list (a Select, made then), Esc
    closes it keeping the mode and the field's focus; a click on the field and then on a mode
    switches to it."""
    from textual.widgets import Select
    from textual.widgets._select import SelectOverlay

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await _started(pilot, app)
        panel = app.screen.query_one("#settings")
        mode = app.screen.query_one("#mode")
        assert not panel.query(Select)
        mode.focus()
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: bool(panel.query(Select)) and panel.query_one(Select).expanded
        )
        await pilot.press("down", "escape")
        await wait_for(pilot, lambda: not panel.query(Select))
        assert app.chat.mode == "chat" and app.focused is mode and mode.display
        await pilot.click("#mode")
        await wait_for(pilot, lambda: bool(panel.query(SelectOverlay)))
        await pilot.pause()
        await pilot.click(SelectOverlay, offset=(2, 1))  # the second mode: complete
        await wait_for(pilot, lambda: app.chat.mode == "complete")
        await wait_for(pilot, lambda: not panel.query(Select))
        assert "complete" in str(mode.render())


async def _tab_stops(pilot: Any, app: Any) -> list[Any]:
    """Every widget Tab reaches on the current screen, in order, once each."""
    stops: list[Any] = []
    for _ in range(40):
        if app.focused in stops:
            break
        stops.append(app.focused)
        await pilot.press("tab")
    return [stop for stop in stops if stop is not None]


async def _check_tab_stops(pilot: Any, app: Any) -> list[str]:
    """Each stop shows that it has focus (the screen differs from the one with no focus), and
    an Input reached by Tab has nothing selected, so a typed key cannot replace its text."""
    seen = []
    for stop in await _tab_stops(pilot, app):
        assert stop is not None
        if isinstance(stop, Input):
            assert stop.selection.is_empty, stop
        stop.focus()
        await pilot.pause()
        focused = app.export_screenshot()
        app.screen.set_focus(None)
        await pilot.pause()
        assert app.export_screenshot() != focused, f"{stop} has focus invisibly"
        seen.append(stop.id or type(stop).__name__)
    return seen


@run_async
async def test_every_tab_stop_is_visible_and_keeps_its_text() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await _started(pilot, app)
        await _say(pilot, app, "Hi")
        assert "prompt" in await _check_tab_stops(pilot, app)
        app.chat.focus_input()
        await pilot.press("f9")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CompareScreen")
        assert "spec-1" in await _check_tab_stops(pilot, app)
        await pilot.press("escape")
        await pilot.press("f8")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ScoreScreen")
        await _check_tab_stops(pilot, app)


@run_async
async def test_a_new_compare_pane_differs_from_the_others_or_says_why() -> None:
    from minigpt_tui.tui.screens.compare import CompareScreen

    backend = FakeBackend("to be or not to be, that is the question. ", sharpness=1.5)
    app = make_app(backend, max_new_tokens=24)
    async with app.run_test(size=(160, 30)) as pilot:
        await _started(pilot, app)
        await pilot.press("f9")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await pilot.press("ctrl+n", "ctrl+n")
        await wait_for(pilot, lambda: len(screen.panes) == 4)
        screen.query_one("#compare-prompt", Input).value = "Speak"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: all(p.finished.is_set() for p in screen.panes), 20)
        texts = [p.text for p in screen.panes]
        assert len(set(texts)) == 4, texts  # the red team's pane 3 was pane 2 again
        # Two panes the user made the same say so in their headers.
        spec = screen.panes[1].query_one(".pane-spec", Input).value
        screen.panes[3].query_one(".pane-spec", Input).value = spec.replace("seed=1", "seed=7")
        await pilot.pause(0.1)
        assert "same output as 2" in str(screen.panes[3].border_title)


@run_async
async def test_compare_on_a_greedy_chat_starts_with_two_different_panes() -> None:
    from minigpt_tui.tui.screens.compare import CompareScreen

    app = make_app(temperature=0.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await _started(pilot, app)
        await pilot.press("f9")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        specs = [p.query_one(".pane-spec", Input).value for p in screen.panes]
        assert "temp=0 " in specs[0] and "temp=0.8 " in specs[1], specs
        assert all("same output" not in str(p.border_title) for p in screen.panes)


@run_async
async def test_compare_errors_are_shown_whole() -> None:
    from minigpt_tui.tui.screens.compare import CompareScreen

    app = make_app()
    async with app.run_test(size=(58, 40)) as pilot:  # the panes stacked, one per line
        await _started(pilot, app)
        await pilot.press("f9")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        far = "/nonexistent/" + "/".join(f"directory{i}" for i in range(8)) + "/the-model-end"
        pane = screen.panes[0]
        pane.query_one(".pane-spec", Input).value = f"temp=0.5 model={far}"
        screen.panes[1].query_one(".pane-spec", Input).value = "temp=0.5 colour=blue-sky-end"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: pane.error != "", 10)
        await pilot.pause(0.2)
        shown = _text(app)
        assert "the-model-end" in shown, shown  # the end of the reason, not cut at the border
        assert "(temptop_ktop_prepseedmaxmodel)" in shown  # spaces are dropped


def _text(app: Any) -> str:
    """What the screen shows, lines joined without their borders (wrapped text reads on)."""
    import html
    import re

    svg = html.unescape(app.export_screenshot()).replace("\xa0", " ")
    return (
        "".join(re.findall(r">([^<>]*)</text>", svg))
        .replace("│", "")
        .replace(" ", "")
        .replace("\n", "")
    )


DIALOGS = {  # key -> the screen it opens (the chat has a reply, so Ctrl+S exports)
    "f1": "HelpScreen",
    "f6": "ModelPickerScreen",
    "f7": "SystemTextScreen",
    "f8": "ScoreScreen",
    "f9": "CompareScreen",
    "f10": "ThemeScreen",
    "ctrl+l": "HistoryScreen",
    "ctrl+f": "SearchScreen",
    "ctrl+s": "ExportScreen",
}


@run_async
async def test_every_dialog_shows_its_own_keys_and_closes_with_its_key() -> None:
    app = make_app()
    async with app.run_test(size=(120, 34)) as pilot:
        await _started(pilot, app)
        await _say(pilot, app, "Hi")
        chat_keys = {(k.key, k.description) for k in app.screen.query_one(Footer).query(FooterKey)}
        assert ("ctrl+s", "Export") in chat_keys
        for key, name in DIALOGS.items():
            await pilot.press(key)
            await wait_for(pilot, lambda: type(app.screen).__name__ == name)  # noqa: B023
            await pilot.pause(0.1)
            footers = list(app.screen.query(Footer))
            assert footers, f"{name} has no footer"
            footer = footers[0]
            assert footer.region.y == app.size.height - 1 and footer.region.width == app.size.width
            shown = {(k.key, k.description) for k in footer.query(FooterKey)}
            assert shown and not shown & chat_keys, (name, shown)
            await _check_tab_stops(pilot, app)
            await pilot.press(key)  # the key that opened it closes it
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        # Also a key moved by the settings file's [keys] table.
        app.set_keymap({"theme": "f12"})
        await pilot.press("f12")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ThemeScreen")
        await pilot.press("f12")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))


@run_async
async def test_deleting_takes_a_second_key_and_never_the_open_conversation(tmp_path: Path) -> None:
    from minigpt_tui.tui.screens.history import HistoryScreen

    store = HistoryStore(tmp_path / "history.db")
    app = make_app(FakeBackend("Good morrow.\n\n"), history=store)
    async with app.run_test(size=(100, 30)) as pilot:
        await _started(pilot, app)
        await _say(pilot, app, "older")
        await pilot.press("ctrl+n")
        await _say(pilot, app, "open")
        assert len(store.list()) == 2
        open_id = app.chat.saver.conversation.id
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("delete", "delete")  # the open one, newest first: refused
        await pilot.pause(0.1)
        assert [c.id for c in store.list()].count(open_id) == 1
        assert "open conversation" in str(app.screen.query_one("#history-ask").render())
        await pilot.press("down", "delete")  # the older one: a first Del only asks
        await pilot.pause(0.1)
        assert len(store.list()) == 2
        assert "Del again" in str(app.screen.query_one("#history-ask").render())
        await pilot.press("delete")
        await wait_for(pilot, lambda: len(store.list()) == 1)
        await pilot.press("escape")
        await _say(pilot, app, "still saved")
        assert not said(app, "Could not save")
        conv = store.load(open_id)
        assert conv is not None and conv.turns[-2].text == "still saved"
        # Another process deletes the open conversation: the next save makes a new row.
        other = HistoryStore(tmp_path / "history.db")
        other.delete(open_id)
        other.close()
        await _say(pilot, app, "after the other")
        assert not said(app, "Could not save")
        convs = store.list()
        assert len(convs) == 1
        reopened = store.load(convs[0].id or 0)
        assert reopened is not None and reopened.turns[-2].text == "after the other"
    store.close()


def _lock(path: Path) -> sqlite3.Connection:
    """Another process holding the history database locked (as `sqlite3 history.db` would)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    return db


@run_async
async def test_a_failed_save_is_said_at_the_time_and_at_quit(tmp_path: Path) -> None:
    from minigpt_tui.tui.widgets.status_bar import StatusBar

    path = tmp_path / "history.db"
    store = HistoryStore(path, timeout=0.05)
    app = make_app(FakeBackend("Good morrow.\n\n"), history=store)
    async with app.run_test(size=(100, 30)) as pilot:
        await _started(pilot, app)
        locker = _lock(path)
        await _say(pilot, app, "first")
        await pilot.pause(0.1)
        bar = app.query_one(StatusBar)
        assert "not saved" in str(bar.render())  # in the status bar, until a save works
        await pilot.pause(0.5)
        assert "not saved" in str(bar.render())
        locker.rollback()
        await _say(pilot, app, "second")
        await pilot.pause(0.1)
        assert "not saved" not in str(bar.render())
        locker.execute("BEGIN EXCLUSIVE")
        await _say(pilot, app, "third")
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
    # What `chat` does once the screen is gone: one more try, then one error line, exit 1.
    assert "not saved" in str(store.flush(timeout=0.05))
    assert "third" not in str(store.load(store.list()[0].id or 0))
    locker.rollback()
    locker.close()
    assert store.flush(timeout=1) is None  # the lock gone: "third" is saved after all
    conv = store.load(store.list()[0].id or 0)
    assert conv is not None and conv.turns[-2].text == "third"
    store.close()
