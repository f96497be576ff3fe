"""F7: the system text, the start of every dialogue: a persona, instructions, example turns.

It is sent ahead of the turns (never windowed out), saved with the conversation, and works
best with GPT-2-BPE models; a character-level model sees only the characters it knows.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, TextArea

from minigpt_tui.tui import keys

MAX_CHARS = 20_000  # a prompt, not a book: longer text is cut, and the app says so


class SystemTextScreen(ModalScreen[str | None]):
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+s", "keep", "Keep", priority=True),
        Binding("escape", "dismiss(None)", "Cancel"),
        keys.closed_by("system_text"),
    ]

    def __init__(self, text: str, hint: str) -> None:
        super().__init__()
        self.text = text
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="system-box") as box:
            box.border_title = "System text"
            box.border_subtitle = "Ctrl+S keep · Esc cancel"
            yield Label(self.hint, id="system-hint", markup=False)
            yield TextArea(self.text, id="system-text", soft_wrap=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_keep(self) -> None:
        self.dismiss(self.query_one(TextArea).text[:MAX_CHARS])
