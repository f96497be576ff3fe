"""F10: pick one of Textual's built-in themes; the app applies it and writes it to the config."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList
from textual.widgets.option_list import Option

from minigpt_tui.tui import keys


class ThemeScreen(ModalScreen[str | None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape", "dismiss(None)", "Close"),
        keys.closed_by("theme"),
    ]

    def __init__(self, themes: list[str], current: str) -> None:
        super().__init__()
        self.themes = themes
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="theme-box") as box:
            box.border_title = "Theme"
            box.border_subtitle = "↑↓ preview · Enter keep · Esc undo"
            yield OptionList(*(Option(name, id=name) for name in self.themes), id="theme-list")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.themes:
            options.highlighted = self.themes.index(self.current)
        options.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.app.theme = event.option.id  # a live preview

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss(self, result: str | None = None) -> None:  # type: ignore[override]
        if result is None:
            self.app.theme = self.current  # Esc: back to the theme before the preview
        self.dismiss(result)
