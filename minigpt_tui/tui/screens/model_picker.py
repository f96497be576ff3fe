"""F6: pick the model to talk to: a bundled one, one used before, or a path typed in.

The screen only picks; the app loads the choice in a worker while the old model keeps
answering, and says in one line why a choice could not be loaded.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList
from textual.widgets.option_list import Option

from minigpt_tui.tui import keys

MAX_PATH_CHARS = 4096  # longer than any real path: refused as typed


class ModelPickerScreen(ModalScreen[str | None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape", "dismiss(None)", "Close"),
        keys.closed_by("switch_model"),
    ]

    def __init__(self, bundled: list[str], recent: list[str], current: str) -> None:
        super().__init__()
        self.bundled = bundled
        self.recent = recent
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box") as box:
            box.border_title = "Switch model"
            box.border_subtitle = "Enter load · Tab list · Esc close"
            yield Label(Text(f"now: {self.current}"), id="picker-current")
            yield Input(
                placeholder="a model directory, a run directory, or a bundled model's name",
                max_length=MAX_PATH_CHARS,
                id="picker-path",
                select_on_focus=False,
            )
            yield OptionList(id="picker-list")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        for name in self.bundled:
            options.add_option(Option(Text(f"bundled  {name}"), id=f"b:{name}"))
        for path in self.recent:
            options.add_option(Option(Text(f"recent   {path}"), id=f"p:{path}"))
        if not self.bundled and not self.recent:
            options.add_option(Option("no bundled or recent models: type a path", disabled=True))
        else:
            options.highlighted = 0  # Tab, Enter picks the first
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.notify("Type a model path, or Tab to the list.", timeout=3, markup=False)
            return
        self.dismiss(text)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(event.option.id[2:])
