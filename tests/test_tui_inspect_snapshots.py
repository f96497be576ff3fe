"""Snapshots of the inspection views (score, branches, compare); see test_tui_snapshots.py.
Update after an intended change with
`pytest tests/test_tui_inspect_snapshots.py --snapshot-update`."""

from __future__ import annotations

from test_tui_support import FakeBackend, make_app, wait_for

from minigpt_tui.generation import GenerationStats
from minigpt_tui.tui.screens.compare import CompareScreen
from minigpt_tui.tui.screens.score import ScoreScreen
from minigpt_tui.tui.widgets.status_bar import StatusBar


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.chat.session is not None)
    await pilot.pause()


def test_score_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FakeBackend("Good morrow, sweet friend.\n\n", sharpness=3.0))

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("f8")
        screen = pilot.app.screen
        screen.query_one("#score-input").load_text("Good morrow, sweet lady.\nGood night.")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(screen, ScoreScreen) and screen.score)
        await pilot.press("right", "right", "right")
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_branched_reply(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FakeBackend("Ay me! What light is this?\n\n", sharpness=5.0), max_new_tokens=30)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        pilot.app.query_one("#prompt").load_text("Speak again, bright angel.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not pilot.app.chat.generating and pilot.app.chat.last_stats)
        await pilot.press("ctrl+t")
        pilot.app.chat.transcript.focus()
        await pilot.press("home", "right", "right", "2")
        await wait_for(
            pilot, lambda: len(pilot.app.chat.session.turns) == 2 and not pilot.app.chat.generating
        )
        status = pilot.app.query_one(StatusBar)
        status.ttft = status.tokens_per_sec = -1.0  # timings differ run to run
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_compare_screen(snap_compare, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Speeds differ run to run: show 0 tokens/s.
    monkeypatch.setattr(GenerationStats, "tokens_per_second", property(lambda self: 0.0))
    script = "Good morrow, sweet friend.\n\n"
    app = make_app(FakeBackend(script, sharpness=3.0), temperature=1.0, max_new_tokens=40)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        await pilot.press("f9")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen))
        screen = pilot.app.screen
        await pilot.press("ctrl+n", "ctrl+n")
        await pilot.pause()
        screen.query_one("#compare-prompt").value = "Hail"
        screen.panes[2].query_one(".pane-spec").value = "temp=0.7 top_k=3 seed=2 max=40"
        screen.panes[3].query_one(".pane-spec").value = "temp=1.2 top_p=0.9 rep=1.3 seed=3"
        for pane in screen.panes:
            pane.finished.clear()
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: all(p.finished.is_set() for p in screen.panes))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
