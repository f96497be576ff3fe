"""A settings field that takes typing only once asked to: Enter (or a click) starts editing,
Enter keeps the value, Esc puts the old one back, leaving the field keeps it.

Tab reaches every field, and 1-5 branch a reply elsewhere: a digit typed on a field that is
not being edited must never change a sampling setting unseen, so it changes nothing and the
field says how to edit it.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.reactive import var
from textual.widgets import Input

# What changes the text: refused while the field is not being edited.
EDITS = frozenset(
    {
        "delete_left",
        "delete_right",
        "delete_left_word",
        "delete_right_word",
        "delete_left_all",
        "delete_right_all",
        "cut",
        "paste",
    }
)


class SettingInput(Input):
    BINDINGS = [  # noqa: RUF012
        Binding("enter", "edit", "Edit"),
        Binding("enter", "keep", "Keep"),
        Binding("escape", "undo", "Undo", show=False),
    ]

    editing = var(False)

    def __init__(self, value: str, label: str, **kwargs: object) -> None:
        super().__init__(value, compact=True, select_on_focus=False, **kwargs)  # type: ignore[arg-type]
        self.label = label
        self._before = value  # the value when editing started (Esc puts it back)
        self._hinted = False  # said how to edit since the field got focus

    def watch_editing(self, editing: bool) -> None:
        self.set_class(editing, "-editing")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "edit":
            return not self.editing
        if action in ("keep", "undo"):
            return self.editing
        if action in EDITS and not self.editing:
            self._hint()
            return False
        return True

    async def _on_key(self, event: events.Key) -> None:
        if not self.editing and event.is_printable:
            event.stop()
            event.prevent_default()  # nothing typed: Input's own handler does not run
            self._hint()

    def _on_paste(self, event: events.Paste) -> None:
        if not self.editing:
            event.stop()
            event.prevent_default()
            self._hint()

    def on_click(self) -> None:
        if not self.editing:
            self.action_edit()

    def _on_blur(self, event: events.Blur) -> None:
        self.editing = False  # what was typed stays (it applied as it was typed)
        self._hinted = False

    def _hint(self) -> None:
        if not self._hinted:
            self._hinted = True
            self.notify(f"Enter edits {self.label} (Esc undoes); Tab moves on.", timeout=3)

    def action_edit(self) -> None:
        self._before = self.value
        self.editing = True
        self.cursor_position = len(self.value)

    def action_keep(self) -> None:
        self.editing = False

    def action_undo(self) -> None:
        self.value = self._before
        self.editing = False
