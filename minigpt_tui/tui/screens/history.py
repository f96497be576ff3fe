"""Ctrl+L: saved conversations, newest first. Enter opens one, Delete removes it."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.safe_text import plain


def describe(conv: Conversation) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
    return plain(f"{when}  {conv.mode:<8}  {conv.title}", one_line=True)  # titles are users' text


class HistoryScreen(ModalScreen[int | None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape,ctrl+l", "dismiss(None)", "Close"),
        Binding("delete,ctrl+d", "delete", "Delete"),
    ]

    def __init__(self, store: HistoryStore) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box") as box:
            box.border_title = "History"
            box.border_subtitle = "Enter open · Del delete · Esc close"
            if not self.store.persistent:
                yield Label(
                    "history is off for this session (kept in memory only)", id="history-note"
                )
            elif self.store.read_only:
                yield Label("history is read-only: nothing is saved or deleted", id="history-note")
            yield OptionList(id="history-list")

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        convs = self.store.list()
        if not convs:
            options.add_option(Option("no saved conversations yet", disabled=True))
        for conv in convs:
            options.add_option(Option(Text(describe(conv)), id=str(conv.id)))
        options.highlighted = 0 if convs else None
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(int(event.option.id))

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        if option.id is not None:
            self.store.delete(int(option.id))
            self.reload()
