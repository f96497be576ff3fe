"""F8: score a text with the loaded model: every token coloured by how surprised the model was,
the tokenizer's boundaries, the totals, and the model's likeliest tokens at a chosen position.

Paste or type the text (or give a file path), Ctrl+G scores it in a worker thread (the same
computation as `minigpt-tui score`, minigpt_tui/scoring.py); ← / → pick a position.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static, TextArea

from minigpt_tui.scoring import Score, ScoreError, read_text_file, score_text
from minigpt_tui.tui import keys
from minigpt_tui.tui.widgets.score_view import ScoreView
from minigpt_tui.tui.widgets.settings_panel import token_label
from model.backend import Backend
from model.tokenizer import Tokenizer


def totals(score: Score) -> str:
    lines = [
        f"tokens      {score.n:,}",
        f"characters  {score.characters:,}",
        f"total bits  {score.total_bits:,.1f}",
        f"bits/char   {score.bits_per_char:.3f}",
        f"perplexity  {score.perplexity:.3f}",
    ]
    if score.windows > 1:
        lines.append(f"windows     {score.windows} (min context {score.min_context})")
    if score.first_unscored:
        lines.append("first token unscored")
    return "\n".join(lines)


class ScoreScreen(ModalScreen[None]):
    CSS_PATH = "../inspect.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+g", "score", "Score", priority=True),
        Binding("escape", "close", "Back"),
        keys.closed_by("score", "close"),
    ]

    def __init__(self, backend: Backend, tokenizer: Tokenizer, lock: threading.Lock) -> None:
        super().__init__()
        self.backend = backend
        self.tokenizer = tokenizer
        self.backend_lock = lock  # the chat's backend lock: one user of the KV cache at a time
        self.score: Score | None = None
        self.cancel = threading.Event()
        self.scoring = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="score-main"):
            with Vertical(id="score-left"):
                yield TextArea(id="score-input", soft_wrap=True)
                yield Input(
                    id="score-file",
                    placeholder="…or a file path (Enter loads it)",
                    compact=True,
                    select_on_focus=False,
                )
                yield ScoreView(id="score-view")
            with Vertical(id="score-side"):
                yield Static("Ctrl+G scores the text", id="score-totals", markup=False)
                yield Static("", id="score-position", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#score-input").border_title = "Text to score (paste or type)"
        self.query_one("#score-view").border_title = "Surprisal (red: surprising)"
        self.query_one("#score-side").border_title = "Score"
        self.query_one("#score-input").focus()

    def action_close(self) -> None:
        self.cancel.set()
        self.dismiss(None)

    @on(Input.Submitted, "#score-file")
    def _load_file(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            return
        try:
            text = read_text_file(Path(name).expanduser())
        except (ScoreError, OSError) as e:
            self.notify(str(e), severity="error", markup=False)
            return
        self.query_one("#score-input", TextArea).load_text(text)
        self.action_score()

    def action_score(self) -> None:
        if self.scoring:
            return
        text = self.query_one("#score-input", TextArea).text
        self.scoring = True
        self.query_one("#score-totals", Static).update("scoring…")
        self.run_worker(lambda: self._run(text), thread=True, exit_on_error=False, group="score")

    def _run(self, text: str) -> None:  # worker thread
        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(
                self.query_one("#score-totals", Static).update, f"scoring… {done:,}/{total:,}"
            )

        try:
            with self.backend_lock:
                score = score_text(
                    self.backend, self.tokenizer, text, cancel=self.cancel, progress=progress
                )
        except Exception as e:  # a ScoreError, or the backend failing: say it, keep the app
            self.app.call_from_thread(self._failed, str(e))
            return
        self.app.call_from_thread(self._done, score)

    def _failed(self, reason: str) -> None:
        self.scoring = False
        self.query_one("#score-totals", Static).update("Ctrl+G scores the text")
        self.notify(reason, severity="error", markup=False)

    def _done(self, score: Score) -> None:
        self.scoring = False
        if self.cancel.is_set():
            return
        self.score = score
        self.query_one("#score-totals", Static).update(totals(score))
        view = self.query_one(ScoreView)
        view.text.show(score, self.tokenizer.decode)
        view.focus()
        self._show_position(0)
        for note in score.notes():
            self.notify(note, timeout=6, markup=False)

    @on(ScoreView.Selected)
    def _selected(self, event: ScoreView.Selected) -> None:
        self._show_position(event.index)

    def _show_position(self, i: int) -> None:
        score = self.score
        if score is None or not 0 <= i < score.n:
            return
        decode = self.tokenizer.decode
        token = int(score.tokens[i])
        lines = [
            f"position {i:,}",
            f"token {token_label(decode([token]))!s:<8} id {token}",
            f"{score.bits[i]:.2f} bits  p {score.probability(i):.1%}",
            "likeliest:",
        ]
        for t, p in zip(score.top_ids[i], score.top_probs[i], strict=True):
            mark = "▸" if int(t) == token else " "
            lines.append(f"{mark} {token_label(decode([int(t)])):<10} {p:6.1%}")
        self.query_one("#score-position", Static).update("\n".join(lines))
