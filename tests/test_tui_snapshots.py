"""Snapshot tests (pytest-textual-snapshot) of the chat app's screens, fully deterministic:
a scripted fake backend, fixed seed, fixed terminal size, fixed dates in UTC, no timings.
Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from test_tui_support import FakeBackend, make_app, wait_for

from minigpt_tui.dialogue import Turn
from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.tui.widgets.status_bar import StatusBar

DAY = 1767225600.0  # 2026-01-01 00:00 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def conversation() -> Conversation:
    return Conversation(
        None,
        "",
        "chat",
        "fake-model",
        [
            Turn("user", "Good morrow, fair lady. How fares the night?"),
            Turn("model", "Sweet sir, the night is young,\nand the moon is kind to lovers."),
            Turn("user", "Then walk with me."),
            Turn("model", "I will, if you will tell me your name."),
        ],
        created=DAY,
        updated=DAY,
    )


def store_with_history() -> HistoryStore:
    store = HistoryStore.memory()
    for i, title in enumerate(
        [
            "What light through yonder window breaks?",
            "Parting is such sweet sorrow",
            "A plague o' both your houses",
        ]
    ):
        conv = Conversation(
            None,
            "",
            "chat" if i != 1 else "complete",
            "fake-model",
            [Turn("user", title)],
            created=DAY + i * 3600,
        )
        store.save(conv)
        # save() stamps `updated` with the clock: pin it for the snapshot.
        store.db.execute("UPDATE conversations SET updated=? WHERE id=?", (DAY + i * 3600, conv.id))
    store.db.commit()
    return store


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.chat.session is not None)
    for box in pilot.app.query("Input, TextArea"):  # a steady cursor: no timing in snapshots
        box.cursor_blink = False
    await pilot.pause()


def test_main_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        pilot.app.chat.conversations.open(conversation())
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_main_screen_wide_with_probabilities(snap_compare) -> None:  # type: ignore[no-untyped-def]
    # A soft script: the model mostly follows it, sometimes not, always the same way (seed 1).
    app = make_app(FakeBackend("Ay me! What light is this?\n\n", sharpness=5.0), max_new_tokens=40)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        pilot.app.query_one("#prompt").load_text("Speak again, bright angel.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not pilot.app.chat.generating and pilot.app.chat.last_stats)
        status = pilot.app.query_one(StatusBar)
        status.ttft = status.tokens_per_sec = -1.0  # timings differ run to run
        await pilot.press("ctrl+t")
        pilot.app.chat.transcript.focus()
        await pilot.press("left", "left", "left")
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_history_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()

    app = make_app(history=store_with_history())
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
