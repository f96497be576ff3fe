"""Ctrl+S: write the conversation to a Markdown (.md), JSON (.json or .jsonl: the
`{"messages": [...]}` record `data prepare` reads) or plain text file.

Nothing is overwritten without asking (an existing file needs a second Enter) and no
directory is created: a path in a directory that does not exist is refused here.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label

from minigpt_tui.safe_text import plain
from minigpt_tui.tui import keys


def check_target(path: Path) -> str:
    """Why the conversation cannot be written to `path`, or "" when it can."""
    if path.is_dir():
        return f"{path} is a directory"
    if not path.parent.is_dir():
        return f"no directory {path.parent} (it is not created)"
    return ""


class ExportScreen(ModalScreen[Path | None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape", "dismiss(None)", "Cancel"),
        keys.closed_by("export"),
    ]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default
        self._replace: Path | None = None  # an existing file the user was asked about

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box") as box:
            box.border_title = "Export conversation"
            box.border_subtitle = "Enter write · Esc cancel"
            yield Label("File (.md Markdown, .json/.jsonl a messages record, else plain text):")
            yield Input(self.default, id="export-path", select_on_focus=False)
            yield Label("", id="export-note", markup=False)
        yield Footer(compact=True)

    def on_input_changed(self, event: Input.Changed) -> None:
        self._replace = None  # another name: ask again
        self.query_one("#export-note", Label).update("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        path = Path(text).expanduser()
        note = self.query_one("#export-note", Label)
        problem = check_target(path)
        if problem:
            note.update(plain(problem))
            return
        if path.exists() and path != self._replace:
            self._replace = path
            note.update(plain(f"{path} exists: Enter again replaces it, Esc keeps it"))
            return
        self.dismiss(path)
