"""ReplyController on its own: it streams a Generation into any target, in batches, and tells
its owner through messages (what compare panes or other views build on)."""

from __future__ import annotations

import threading

from test_tui_support import FakeBackend, run_async, wait_for
from textual import on
from textual.app import App

from minigpt_tui.generation import Generation, TokenEvent
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui.reply import ReplyController


class ListTarget:
    def __init__(self) -> None:
        self.batches: list[list[TokenEvent]] = []

    def append(self, tokens: list[TokenEvent]) -> None:
        self.batches.append(tokens)

    @property
    def text(self) -> str:
        return "".join(t.text for batch in self.batches for t in batch)


class Host(App[None]):
    """A bare app that owns a controller and keeps what it heard."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = ReplyController(self)
        self.heard: list[str] = []
        self.running_when_finished: bool | None = None

    @on(ReplyController.Started)
    def _started(self) -> None:
        self.heard.append("started")

    @on(ReplyController.Tokens)
    def _tokens(self) -> None:
        self.heard.append("tokens")

    @on(ReplyController.Finished)
    def _finished(self, event: ReplyController.Finished) -> None:
        self.heard.append("finished" if event.error is None else "failed")
        self.running_when_finished = self.replies.running
        assert self.replies.end(event.reply)


def generation(backend: FakeBackend, max_new_tokens: int) -> Generation:
    settings = SamplingSettings(temperature=0.0, max_new_tokens=max_new_tokens)
    return Generation(backend, backend.tokenizer, [1], settings, cancel=threading.Event())


@run_async
async def test_streams_into_any_target_in_batches_then_finishes() -> None:
    backend = FakeBackend("Good morrow, sweet friend.", delay=0.01)
    app = Host()
    async with app.run_test() as pilot:
        target = ListTarget()
        gen = generation(backend, 20)
        app.replies.start(gen, target)
        assert app.replies.running
        await wait_for(pilot, lambda: "finished" in app.heard)
        assert target.text == gen.text == "Good morrow, sweet f"
        assert len(target.batches) >= 2, "tokens reach the target in several UI updates"
        assert app.heard[0] == "started" and app.heard[-1] == "finished"
        assert set(app.heard[1:-1]) == {"tokens"}
        assert app.running_when_finished, "a reply runs until its owner has kept the result"
        assert not app.replies.running


@run_async
async def test_cancel_drops_the_reply_at_once() -> None:
    backend = FakeBackend("to be or not to be, ", delay=0.02)
    app = Host()
    async with app.run_test() as pilot:
        target = ListTarget()
        app.replies.start(generation(backend, 1000), target)
        await wait_for(pilot, lambda: backend.decoded >= 3)
        app.replies.cancel()
        assert not app.replies.running
        decoded = backend.decoded
        await pilot.pause(0.3)
        assert backend.decoded <= decoded + 1, "the worker stops at the next token"
        assert "finished" not in app.heard, "a cancelled reply posts nothing more"
