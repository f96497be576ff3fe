"""F1: every key binding of the chat app, in one table."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from minigpt_tui.tui import keys


class HelpScreen(ModalScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape,q,question_mark", "dismiss", "Close"),
        keys.closed_by("help", "dismiss"),
    ]

    def __init__(self, keys: list[tuple[str, str]], notes: str = "") -> None:
        super().__init__()
        self.keys = keys
        self.notes = notes

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False, expand=True)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("action")
        for key, action in self.keys:
            table.add_row(key, action)
        with VerticalScroll(id="help-box") as box:
            box.border_title = "Keys"
            box.border_subtitle = "Esc closes"
            yield Static(table)
            if self.notes:
                yield Static(self.notes, id="help-notes", markup=False)
        yield Footer(compact=True)
