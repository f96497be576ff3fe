"""Snapshots of the workflow screens (model picker, theme, system text, search), one with
NO_COLOR set, and a check that every theme stays readable on 8- and 256-colour terminals.
Update after an intended change with
`pytest tests/test_tui_workflow_snapshots.py --snapshot-update`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.color import ColorSystem
from test_tui_support import make_app, run_async, wait_for

from minigpt_tui import recent
from minigpt_tui.dialogue import Turn
from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.tui.app import ChatApp

DAY = 1767225600.0  # 2026-01-01 00:00 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def searchable() -> HistoryStore:
    store = HistoryStore.memory()
    talks = [
        [Turn("user", "What light through yonder window breaks?"), Turn("model", "The east.")],
        [Turn("user", "Good night, good night!"), Turn("model", "Parting is such sweet sorrow")],
        [Turn("user", "Is the window open?"), Turn("model", "Aye, and the night is cold.")],
    ]
    for i, turns in enumerate(talks):
        conv = Conversation(None, "", "chat", "fake-model", turns, created=DAY + i * 3600)
        store.save(conv)
        store.db.execute("UPDATE conversations SET updated=? WHERE id=?", (DAY + i * 3600, conv.id))
    store.db.commit()
    return store


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.chat.session is not None)
    await pilot.pause()


async def steady(pilot) -> None:  # type: ignore[no-untyped-def]
    """Cursors that do not blink (also under the dialog), so that snapshots do not depend
    on timing."""
    for screen in pilot.app.screen_stack:
        for box in screen.query("Input, TextArea"):
            box.cursor_blink = False
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.1)


async def search_for(pilot, query: str) -> None:  # type: ignore[no-untyped-def]
    from minigpt_tui.tui.screens.search import SearchScreen

    await loaded(pilot)
    await pilot.press("ctrl+f")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SearchScreen))
    pilot.app.screen.query_one("#search-query").value = query
    await pilot.press("enter")
    await steady(pilot)


def test_model_picker_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    recent.remember(Path("/data/runs/shakespeare"))
    recent.remember(Path("/data/models/gpt2-small [v2]"))

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("f6")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_theme_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("f10")
        await steady(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_system_text_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    app.template.system = (
        "You are Juliet, thirteen, in love.\n\nROMEO:\nHi\n\nJULIET:\nWho's there?"
    )

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("f7")
        await steady(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_search_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await search_for(pilot, "window")

    app = make_app(history=searchable())
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_search_screen_no_color(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """With NO_COLOR the match is still marked (bold, reverse) and the boxes still drawn."""
    monkeypatch.setenv("NO_COLOR", "1")

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await search_for(pilot, "night")

    app = make_app(history=searchable())
    assert app.no_color
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def unreadable(app: ChatApp, system: ColorSystem) -> list[str]:
    """Text whose colour equals its background once downgraded to `system`: on the main
    screen, or inside the open dialog (the dimmed screen around a dialog is left out)."""
    region = app.screen.children[0].region if len(app.screen_stack) > 1 else None
    bad = []
    for y, strip in enumerate(app.screen._compositor.render_strips()):
        x = 0
        for seg in strip:
            inside = region is None or region.contains(x, y)
            x += len(seg.text)
            style = seg.style
            if not inside or style is None or not any(c.isalnum() for c in seg.text):
                continue
            fg, bg = style.color, style.bgcolor
            if fg is None or bg is None or fg.is_default or bg.is_default:
                continue  # the terminal's own colours: readable by definition
            if style.reverse:
                fg, bg = bg, fg
            if fg.downgrade(system).get_truecolor() == bg.downgrade(system).get_truecolor():
                bad.append(f"{seg.text.strip()[:30]!r} at {x},{y}: {fg.name} on {bg.name}")
    return bad


@run_async
async def test_every_theme_is_readable_on_8_and_256_colours() -> None:
    app = make_app(history=searchable())
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        app.chat.conversations.open(searchable().load(3))  # type: ignore[arg-type]
        checked = 0
        for screen in ("main", "search"):
            if screen == "search":
                await search_for(pilot, "window")  # a dialog with a highlighted match
            for theme in sorted(app.available_themes):
                app.theme = theme
                await pilot.pause()
                for system in (ColorSystem.STANDARD, ColorSystem.EIGHT_BIT):
                    assert unreadable(app, system) == [], (screen, theme, system)
                    checked += 1
        assert checked >= 40
