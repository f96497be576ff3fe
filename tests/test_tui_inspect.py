"""Pilot tests of the chat app's inspection features: score (F8), branches, compare (F9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_support import VOCAB, FakeBackend, make_app, run_async, wait_for

from minigpt_tui.scoring import score_text
from minigpt_tui.tui.screens.score import ScoreScreen
from minigpt_tui.tui.widgets.score_view import ScoredText, ScoreView
from model.tokenizer import CharTokenizer

SIZE = (100, 30)


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.session is not None)


@run_async
async def test_score_screen_scores_pasted_text_and_shows_alternatives() -> None:
    text = "Good morrow, sweet. Good night."
    app = make_app(FakeBackend("Good morrow, sweet.\n\n", sharpness=4.0))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ScoreScreen))
        screen = app.screen
        assert isinstance(screen, ScoreScreen)
        screen.query_one("#score-input").load_text(text)  # type: ignore[attr-defined]
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: screen.score is not None)
        want = score_text(
            FakeBackend("Good morrow, sweet.\n\n", sharpness=4.0), CharTokenizer(VOCAB), text
        )
        assert screen.score is not None
        assert screen.score.total_bits == pytest.approx(want.total_bits)
        totals = str(screen.query_one("#score-totals").render())
        assert f"{want.bits_per_char:.3f}" in totals and f"{want.perplexity:.3f}" in totals
        # The first character has no context; the rest are drawn token by token.
        shown = screen.query_one(ScoredText)
        assert shown.lead == "G" and "".join(shown.texts) == text[1:]
        assert screen.focused is screen.query_one(ScoreView)
        await pilot.press("right", "right")
        assert shown.selected == 2
        position = str(screen.query_one("#score-position").render())
        assert "position 2" in position and "likeliest" in position
        assert "▸" in position or "o" in position
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ScoreScreen))


@run_async
async def test_score_screen_loads_a_file_and_says_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Good morrow.", encoding="utf-8")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ScoreScreen))
        screen = app.screen
        assert isinstance(screen, ScoreScreen)
        box = screen.query_one("#score-file")
        box.value = str(bad)  # type: ignore[attr-defined]
        box.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert any("binary data" in n.message for n in app._notifications)
        assert screen.score is None
        box.value = str(good)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.score is not None)
        assert screen.score is not None and screen.score.n == len("Good morrow.") - 1
