"""A model that cannot be loaded: the reason in words, and how to leave."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from minigpt_tui.safe_text import plain


class ErrorScreen(Screen[None]):
    BINDINGS = [Binding("q,escape,enter,ctrl+q", "leave", "Quit")]  # noqa: RUF012

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box") as box:
            box.border_title = self.title_text
            box.border_subtitle = "q quits"
            yield Static(plain(self.message), id="error-message", markup=False)
        yield Footer(compact=True)

    def action_leave(self) -> None:
        # Exit non-zero; the command then repeats the reason as its one-line error.
        self.app.exit(return_code=1)
