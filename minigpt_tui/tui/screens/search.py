"""Ctrl+F: full-text search over every saved conversation; Enter opens one at the message."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList
from textual.widgets.option_list import Option

from minigpt_tui.history import HistoryStore, SearchHit
from minigpt_tui.tui import keys

MAX_QUERY_CHARS = 500


def describe(hit: SearchHit) -> Text:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.updated))
    out = Text(f"{when}  ")
    before, found, after = hit.snippet
    if hit.seq != 0:  # the first message is the title: do not show it twice
        out.append(hit.title[:30] + " › ")
    out.append(before)
    out.append(found, style="bold reverse")
    out.append(after)
    return out


class SearchScreen(ModalScreen[tuple[int, int] | None]):
    """Returns (conversation id, message index) of the chosen hit."""

    BINDINGS = [  # noqa: RUF012
        Binding("escape", "dismiss(None)", "Close"),
        keys.closed_by("search"),
    ]

    def __init__(self, store: HistoryStore) -> None:
        super().__init__()
        self.store = store
        self.hits: list[SearchHit] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box") as box:
            box.border_title = "Search history"
            box.border_subtitle = "Enter search / open · Tab results · Esc close"
            yield Input(
                placeholder="words to find",
                max_length=MAX_QUERY_CHARS,
                id="search-query",
                select_on_focus=False,
            )
            yield Label("", id="search-note", markup=False)
            yield OptionList(id="search-results")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        how = "full-text (FTS5)" if self.store.fts else "substring (no FTS5 in this Python)"
        self.query_one("#search-note", Label).update(f"{how} search over every conversation")
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        query = event.value.strip()
        if not query:
            return
        self.hits = self.store.search(query)
        note = self.query_one("#search-note", Label)
        note.update(f"{len(self.hits)} match{'es' if len(self.hits) != 1 else ''} for {query!r}")
        for i, hit in enumerate(self.hits):
            options.add_option(Option(describe(hit), id=str(i)))
        if self.hits:
            options.highlighted = 0
            options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            hit = self.hits[int(event.option.id)]
            self.dismiss((hit.conversation_id, hit.seq))
