"""Pilot tests of the chat app's inspection features: score (F8), branches, compare (F9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_support import VOCAB, FakeBackend, make_app, run_async, wait_for

from minigpt_tui.generation import Generation
from minigpt_tui.history import HistoryStore
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.scoring import score_text
from minigpt_tui.tui.screens.compare import CompareScreen
from minigpt_tui.tui.screens.history import HistoryScreen
from minigpt_tui.tui.screens.score import ScoreScreen
from minigpt_tui.tui.widgets.compare_pane import parse_spec
from minigpt_tui.tui.widgets.score_view import ScoredText, ScoreView
from model.backend import EngineError
from model.tokenizer import CharTokenizer

SIZE = (100, 30)


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.chat.session is not None)


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


async def reply_to(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    n = len(app.chat.session.turns) if app.chat.session else 0
    await loaded(pilot)
    app.query_one("#prompt").load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.chat.generating and len(app.chat.session.turns) >= n + 2)


def shown(app) -> list[tuple[str, str, object]]:  # type: ignore[no-untyped-def]
    return [(m.role, m.text, m.branch) for m in app.chat.transcript.messages]


@run_async
async def test_branch_from_an_alternative_token_keeps_the_old_reply() -> None:
    store = HistoryStore.memory()
    app = make_app(FakeBackend("Good morrow, sweet friend.\n\n", sharpness=5.0), history=store)
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello")
        old = app.chat.session.turns[-1].text
        await pilot.press("ctrl+t")
        app.chat.transcript.focus()
        await pilot.press("home", "right", "right", "right")  # the 4th token of the reply
        view = app.chat.transcript.last_model_view()
        assert view is not None and view.selected == 3
        alt = view.tokens[3].alternatives[1][0]
        await pilot.press("2")  # its second likeliest token
        await wait_for(pilot, lambda: not app.chat.generating and len(app.chat.session.turns) == 2)
        new = app.chat.session.turns[-1].text
        tok = app.chat.session.tokenizer
        assert new.startswith(old[:3] + tok.decode([alt])) and new != old
        assert shown(app)[-1][2] == (2, 2)
        assert app.chat.session.branches.count() == 3
        # , and . switch between the two replies (the transcript has focus).
        await pilot.press("comma")
        await pilot.pause()
        assert app.chat.session.turns[-1].text == old and shown(app)[-1] == ("model", old, (1, 2))
        await pilot.press("full_stop")
        await pilot.pause()
        assert app.chat.session.turns[-1].text == new
        # Clicking an alternative in the inspector branches too.
        await pilot.press("home")
        await pilot.click("#inspector", offset=(4, 3))  # the second likeliest (row 2 + 1)
        await wait_for(  # while the branch is made the reply is cut: turn 1 is not there yet
            pilot,
            lambda: (
                len(app.chat.session.turns) == 2 and app.chat.session.branches.position(1)[1] == 3
            ),
        )
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        assert shown(app)[-1][2] == (3, 3)
        # Reopened from history, every branch is back.
        await pilot.press("ctrl+n")  # saved after every reply; New starts another
        await pilot.pause()
        assert app.chat.transcript.messages == []
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("enter")  # the newest: this one
        await wait_for(pilot, lambda: len(app.chat.transcript.messages) == 2)
        await pilot.pause()
        assert shown(app)[-1][2] == (3, 3) and app.chat.session.branches.count() == 4
        app.chat.transcript.focus()
        await pilot.press("comma", "comma")
        await pilot.pause()
        assert app.chat.session.turns[-1].text == old


@run_async
async def test_editing_an_earlier_message_makes_a_branch() -> None:
    app = make_app(FakeBackend("Good morrow.\n\n"))
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello")
        await reply_to(pilot, "How now?")
        app.chat.transcript.focus()
        await pilot.press("ctrl+t")
        app.chat.transcript.focus()
        await pilot.press("up", "up", "up")  # the first message
        await pilot.press("e")
        prompt = app.query_one("#prompt")
        assert prompt.text == "Hello"  # type: ignore[attr-defined]
        prompt.load_text("Hail")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(app.chat.session.turns) == 2)
        assert app.chat.session.turns[0].text == "Hail"
        assert shown(app)[0][2] == (2, 2)
        app.chat.transcript.focus()
        await pilot.press("up", "up", "comma")  # back to the first version, whole
        await pilot.pause()
        assert [t.text for t in app.chat.session.turns][::2] == ["Hello", "How now?"]
        assert len(app.chat.transcript.messages) == 4


async def open_compare(pilot, prompt: str):  # type: ignore[no-untyped-def]
    await loaded(pilot)
    await pilot.press("f9")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen))
    screen = pilot.app.screen
    screen.query_one("#compare-prompt").value = prompt
    return screen


async def run_panes(pilot, screen) -> None:  # type: ignore[no-untyped-def]
    for pane in screen.panes:
        pane.finished.clear()
    await pilot.press("ctrl+g")
    await wait_for(
        pilot,
        lambda: all(p.finished.is_set() for p in screen.panes) and not screen.running,
        timeout=20,
    )


@run_async
async def test_compare_panes_stream_with_their_own_settings_and_reproduce() -> None:
    script = "Good morrow, sweet friend.\n\n"
    app = make_app(FakeBackend(script, sharpness=3.0), temperature=1.0, max_new_tokens=24)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot, "Hail")
        one, two = screen.panes
        assert screen.query_one("#compare-grid").styles.grid_size_columns == 2
        await run_panes(pilot, screen)
        # Pane 2 is greedy: it follows the script exactly; pane 1 samples at temperature 1.
        assert two.text == (script * 2)[:24] and one.text != two.text
        for pane in (one, two):
            stats = str(pane.query_one(".pane-stats").render())
            assert "24 tok" in stats and "tok/s" in stats and "bits/tok" in stats
        assert two.mean_bits() < one.mean_bits()  # greedy text is less surprising
        # The same seed and settings give the same text, run after run and pane after pane.
        first = one.text
        spec = one.query_one(".pane-spec").value
        two.query_one(".pane-spec").value = spec
        await run_panes(pilot, screen)
        assert one.text == first and two.text == first
        assert "same output as 1" in str(two.border_title)  # and its header says so
        tok = CharTokenizer(VOCAB)
        settings, _ = parse_spec(spec, SamplingSettings())
        direct = Generation(FakeBackend(script, sharpness=3.0), tok, tok.encode("Hail"), settings)
        list(direct)
        assert direct.text == first
        # A bad settings line says what is wrong and that pane does not run.
        two.query_one(".pane-spec").value = "temp=hot"
        await pilot.pause()
        assert "temp must be a number" in str(two.query_one(".pane-stats").render())
        two.query_one(".pane-spec").value = spec
        await pilot.pause()
        assert "must be" not in str(two.query_one(".pane-stats").render())
        # Ctrl+N adds a pane (up to 4), Ctrl+R removes the last (down to 2).
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        await pilot.pause()
        assert len(screen.panes) == 4 and "seed=3" in screen.panes[3].spec
        await pilot.press("ctrl+r", "ctrl+r", "ctrl+r")
        await pilot.pause()
        assert len(screen.panes) == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen))


@run_async
async def test_compare_stacks_panes_when_narrow() -> None:
    app = make_app()
    async with app.run_test(size=(56, 24)) as pilot:
        screen = await open_compare(pilot, "Hail")
        await pilot.pause()
        grid = screen.query_one("#compare-grid")
        assert grid.styles.grid_size_columns == 1 and grid.has_class("-stacked")


def test_the_new_screens_load_only_when_opened() -> None:
    """Startup stays quick: opening the chat imports none of score/compare's modules."""
    import subprocess
    import sys

    code = (
        "import sys, minigpt_tui.tui.app, minigpt_tui.commands.chat\n"
        "print(sorted(m for m in sys.modules if m.startswith('minigpt_tui')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for lazy in ("scoring", "streams", "screens.score", "screens.compare", "compare_pane"):
        assert lazy not in out, out


@run_async
async def test_a_compare_pane_can_run_another_model() -> None:
    from minigpt_tui.generation import load_backend

    app = make_app(max_new_tokens=12)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot, "ROMEO:")
        one, two = screen.panes
        two.query_one(".pane-spec").value = "temp=0 max=12 model=shakespeare-char"
        one.query_one(".pane-spec").value = "temp=0 max=12 model=/no/such/model"
        await run_panes(pilot, screen)
        assert "cannot load the model" in str(one.query_one(".pane-stats").render())
        bundled = load_backend("shakespeare-char")
        tok = bundled.info.tokenizer()
        settings, _ = parse_spec("temp=0 max=12", SamplingSettings())
        direct = Generation(bundled, tok, tok.encode("ROMEO:"), settings)
        list(direct)
        assert two.text == direct.text and len(two.text) > 0


@run_async
async def test_compare_panes_on_an_onnx_model_decode_together() -> None:
    """On the chat's ONNX model the panes run in one batched worker (no per-pane views), and
    each pane's text is what its settings give alone, past a window slide; Esc stops them."""
    from minigpt_tui.generation import load_backend
    from minigpt_tui.tui.app import ChatApp

    backend = load_backend("shakespeare-char")
    tok = backend.info.tokenizer()
    app = ChatApp(
        lambda: backend,
        settings=SamplingSettings(temperature=1.0, seed=1, max_new_tokens=40),
        history=HistoryStore.memory(),
    )
    specs = ["temp=1 seed=4 max=300", "temp=0.7 top_k=8 rep=1.2 seed=2 max=60", "temp=0 max=25"]
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_compare(pilot, "ROMEO:")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: len(screen.panes) == 3)
        assert screen.lockstep is not None
        assert all(slot.backend is backend for slot in screen.slots)  # no per-pane caches
        for pane, spec in zip(screen.panes, specs, strict=True):
            pane.query_one(".pane-spec").value = spec
        await run_panes(pilot, screen)
        lengths = screen.lockstep.streams.lengths  # type: ignore[attr-defined]
        assert all(n > 0 for n in lengths[:3]) and lengths[3] == 0  # the batch ran them
        for pane, spec in zip(screen.panes, specs, strict=True):
            settings, _ = parse_spec(spec, SamplingSettings())
            alone = Generation(backend, tok, tok.encode("ROMEO:"), settings)
            list(alone)
            assert pane.text == alone.text and not pane.error
            assert f"{settings.max_new_tokens} tok" in str(pane.query_one(".pane-stats").render())
            if settings.max_new_tokens == 300:
                assert alone.stats.slides == 1
        # Esc stops every pane at once, long runs included.
        for pane in screen.panes:
            pane.query_one(".pane-spec").value = "temp=1 max=100000"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: all(len(p.text) > 20 for p in screen.panes))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.running, timeout=2)
        assert all(0 < len(p.text) < 5000 for p in screen.panes)

        # A failure in the batched call fails every running pane, in one line each.
        def broken(tokens: object) -> None:
            raise EngineError("onnxruntime failed: out of memory")

        screen.lockstep.streams.decode_batch = broken  # type: ignore[union-attr]
        await run_panes(pilot, screen)
        assert all("out of memory" in p.error for p in screen.panes)
        assert "failed:" in str(screen.panes[0].query_one(".pane-stats").render())
