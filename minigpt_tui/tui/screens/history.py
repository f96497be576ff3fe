"""Ctrl+L: saved conversations, newest first. Enter opens one, Del twice removes it."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList
from textual.widgets.option_list import Option

from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.safe_text import plain
from minigpt_tui.tui import keys


def describe(conv: Conversation) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
    return plain(f"{when}  {conv.mode:<8}  {conv.title}", one_line=True)  # titles are users' text


class HistoryScreen(ModalScreen[int | None]):
    """Deleting takes a second Del on the same conversation; the open one (`open_id`) is not
    deleted here (it would come back at its next save): Ctrl+N first, then delete it."""

    BINDINGS = [  # noqa: RUF012
        Binding("escape", "dismiss(None)", "Close"),
        Binding("delete,ctrl+d", "delete", "Delete"),
        keys.closed_by("history"),
    ]

    def __init__(self, store: HistoryStore, open_id: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.open_id = open_id  # the conversation on screen (None: not saved yet)
        self.armed: int | None = None  # the conversation a first Del asked about

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box") as box:
            box.border_title = "History"
            box.border_subtitle = "Enter open · Del twice deletes · Esc close"
            if not self.store.persistent:
                yield Label(
                    "history is off for this session (kept in memory only)", id="history-note"
                )
            elif self.store.read_only:
                yield Label("history is read-only: nothing is saved or deleted", id="history-note")
            yield OptionList(id="history-list")
            yield Label("", id="history-ask", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        convs = self.store.list()
        if not convs:
            options.add_option(Option("no saved conversations yet", disabled=True))
        for conv in convs:
            shown = describe(conv) + ("   (open now)" if conv.id == self.open_id else "")
            options.add_option(Option(Text(shown), id=str(conv.id)))
        options.highlighted = 0 if convs else None
        options.focus()

    def _ask(self, text: str) -> None:
        self.query_one("#history-ask", Label).update(text)

    def on_option_list_option_highlighted(self) -> None:
        if self.armed is not None:  # moved on: the first Del is forgotten
            self.armed = None
            self._ask("")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(int(event.option.id))

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        if option.id is None:
            return
        conv_id = int(option.id)
        if conv_id == self.open_id:
            self._ask("That is the open conversation: Ctrl+N starts another, then delete it.")
        elif self.armed != conv_id:
            self.armed = conv_id
            self._ask("Del again deletes it for good; any other choice keeps it.")
        else:
            self.store.delete(conv_id)
            self.armed = None
            self._ask("Deleted.")
            self.reload()
