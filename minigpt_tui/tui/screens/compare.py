"""F9: one prompt, 2 to 4 panes streaming its continuation side by side, each with its own
sampling settings (or its own model), each showing tokens/s and the mean surprisal of what it
wrote. The same seed and settings give the same text. On an ONNX model the panes are decoded
together in one worker, one batched onnxruntime call per step for all of them (the weights are
read once a step, not once a pane); each pane still samples with its own settings and seed, so
its text is the one it would write alone.

Enter (or Ctrl+G) runs every pane; Ctrl+N adds a pane, Ctrl+R removes the last one; Esc stops
the panes, or goes back to the chat when none is running. Wide terminals show the panes in one
row; narrower ones in two columns; below 60 columns they stack and scroll.
"""

from __future__ import annotations

import dataclasses
import threading

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input

from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.streams import Lockstep, StreamSlot, lockstep, stream_slots
from minigpt_tui.tui import keys
from minigpt_tui.tui.reply import Reply
from minigpt_tui.tui.widgets.compare_pane import (
    ComparePane,
    PromptLayout,
    another_spec,
    describe_settings,
    plain_prompt,
    same_output,
)
from model.backend import Backend
from model.tokenizer import Tokenizer

MIN_PANES, MAX_PANES = 2, 4


def default_specs(base: SamplingSettings) -> list[str]:
    """Two panes to start: the chat's settings, and the same greedy (or, when the chat is
    greedy already, sampled at 0.8: two panes never start out writing the same text)."""
    seed = base.seed if base.seed is not None else 1
    first = dataclasses.replace(base, seed=seed, stop=[])
    other = dataclasses.replace(first, temperature=0.0 if first.temperature > 0 else 0.8)
    return [describe_settings(first), describe_settings(other)]


class CompareScreen(ModalScreen[None]):
    CSS_PATH = "../inspect.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+g", "run", "Run all", priority=True),
        Binding("ctrl+n", "add", "Add pane"),
        Binding("ctrl+r", "remove", "Remove pane"),
        Binding("escape", "stop_or_close", "Stop/Back"),
        keys.closed_by("compare", "close"),
    ]

    def __init__(
        self,
        backend: Backend,
        tokenizer: Tokenizer,
        lock: threading.Lock,
        settings: SamplingSettings,
        prompt: str = "",
        specs: list[str] | None = None,
        batched: bool = True,
        prompt_layout: PromptLayout = plain_prompt,
    ) -> None:
        """prompt_layout: the prompt's ids for a pane's model (a chat model: the conversation with
        the prompt as your next message)."""
        super().__init__()
        self.prompt_layout = prompt_layout
        self.backend = backend
        self.tokenizer = tokenizer
        self.backend_lock = lock  # the chat's: held by whoever runs on `backend`
        self.base = settings
        self.prompt = prompt
        self.specs = (specs or default_specs(settings))[:MAX_PANES]
        # Made once, for as many panes as there can be. On an ONNX model the panes are decoded
        # together, one batched call per step (`batched=False`: each in its own thread on a
        # view with its own KV cache, as benchmarks/compare_speed.py measures against).
        self.lockstep = lockstep(backend, MAX_PANES) if batched else None
        if self.lockstep is not None:
            self.slots = [StreamSlot(backend, lock)] * MAX_PANES  # for its block size
        else:
            self.slots = stream_slots(backend, MAX_PANES, lock)

    def compose(self) -> ComposeResult:
        yield Input(
            self.prompt,
            id="compare-prompt",
            placeholder="Prompt for every pane (Enter runs them all)",
            select_on_focus=False,
        )
        with VerticalScroll(id="compare-grid") as grid:
            grid.can_focus = False  # no Tab stop of its own: each pane's text scrolls
            for i, spec in enumerate(self.specs):
                yield self._pane(i, spec)
        yield Footer(compact=True)

    def _pane(self, i: int, spec: str) -> ComparePane:
        pane = ComparePane(i + 1, spec, self.slots[i], self.tokenizer, self.prompt_layout)
        pane.base = self.base
        return pane

    def on_mount(self) -> None:
        self.query_one("#compare-prompt").focus()
        self._layout(self.app.size.width)
        self.call_after_refresh(self._mark_same)  # specs given alike say so from the start

    def on_resize(self, event: events.Resize) -> None:
        self._layout(event.size.width)

    def _layout(self, width: int) -> None:
        """Columns for the panes: all in a row when wide, two columns, or stacked."""
        n = len(self.panes)
        columns = n if width >= 40 * n else (2 if width >= 60 else 1)
        grid = self.query_one("#compare-grid")
        grid.styles.grid_size_columns = columns
        grid.set_class(columns == 1, "-stacked")

    @property
    def panes(self) -> list[ComparePane]:
        return [p for p in self.query(ComparePane) if not getattr(p, "_pruning", False)]

    @property
    def running(self) -> bool:
        return any(p.running for p in self.panes)

    @on(Input.Submitted, "#compare-prompt")
    def _submitted(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        if self.running:
            self.notify("Still running: Esc stops the panes.", timeout=2)
            return
        prompt = self.query_one("#compare-prompt", Input).value
        batch = self.lockstep
        replies = [(p, r) for p in self.panes if (r := p.run(prompt, batch is not None))]
        if batch is not None and replies:
            self.run_worker(
                lambda: _decode_together(batch, replies),
                thread=True,
                exit_on_error=False,
                group="compare",
            )

    def action_add(self) -> None:
        panes = self.panes
        if len(panes) >= MAX_PANES or self.running:
            return
        specs = [p.query_one(".pane-spec", Input).value for p in panes]
        pane = self._pane(len(panes), another_spec(specs, self.base))
        self.query_one("#compare-grid").mount(pane)
        self.call_after_refresh(self._layout, self.app.size.width)

    @on(ComparePane.Changed)
    def _mark_same(self) -> None:
        """Each pane that writes the same text as an earlier one says so in its header."""
        seen: list[tuple[int, tuple[SamplingSettings, str | None]]] = []
        for pane in self.panes:
            try:
                mine = pane.settings()
            except ValueError:
                pane.mark_same(None)
                continue
            same = [(n, why) for n, other in seen if (why := same_output(other, mine))]
            if same:
                pane.mark_same(*same[0])
            else:
                pane.mark_same(None)
            seen.append((pane.number, mine))

    def action_remove(self) -> None:
        panes = self.panes
        if len(panes) <= MIN_PANES or self.running:
            return
        panes[-1].remove()
        self.call_after_refresh(self._layout, self.app.size.width)
        self.call_after_refresh(self._mark_same)

    def action_stop_or_close(self) -> None:
        if self.running:
            for pane in self.panes:
                pane.stop()
            return
        self.action_close()

    def action_close(self) -> None:
        """F9 again (or Esc with nothing running): back to the chat, the panes cancelled."""
        for pane in self.panes:
            pane.cancel()
        self.dismiss(None)


def _decode_together(batch: Lockstep, replies: list[tuple[ComparePane, Reply]]) -> None:
    """(A worker thread.) The panes on the shared model, one batched call per step; each pane's
    events go to its ReplyController as if its own worker made them."""
    ended: set[int] = set()

    def end(i: int) -> None:
        ended.add(i)
        pane, reply = replies[i]
        pane.replies.finish_from_thread(reply, None)

    try:
        batch.run(
            [reply.generation for _, reply in replies],
            lambda i, event: replies[i][1].queue.append(event),
            end,
        )
    except Exception as e:  # a backend failure: every pane still running reports it
        for i, (pane, reply) in enumerate(replies):
            if i not in ended:
                pane.replies.finish_from_thread(reply, e)
