"""A settings field: its value drawn as text, which takes typing only once asked to. Enter
(or a click) starts editing in a text box put in its place, Enter keeps the value, Esc puts
the old one back, leaving the box keeps it. The value applies as it is typed.

Tab reaches every field, and 1-5 branch a reply elsewhere: a digit typed on a field that is
not being edited must never change a sampling setting unseen, so it changes nothing and the
field says how to edit it. The text box exists only while editing: a field drawn as text is
one plain widget to style at startup, where an Input is five (its parts have their own
styles). The mode field (ChoiceField) likewise makes its list of modes, a Select (six
widgets), when it is opened.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, Select


class SettingField(Widget, can_focus=True):
    BINDINGS = [Binding("enter", "edit", "Edit")]  # noqa: RUF012

    value = reactive("", layout=False)

    class Changed(Message):
        """The field's value changed (typed, or set by the panel): the panel checks it."""

        def __init__(self, field: SettingField, value: str) -> None:
            super().__init__()
            self.field = field
            self.value = value

    def __init__(self, value: str, label: str, restrict: str | None = None, **kwargs: str) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.set_reactive(SettingField.value, value)
        self.label = label
        self.restrict = restrict  # what the text box lets be typed
        self.editor: Widget | None = None  # the text box (or list) while editing
        self._hinted = False  # said how to edit since the field got focus

    @property
    def editing(self) -> bool:
        return self.editor is not None

    def render(self) -> str | Content:
        return self.value

    def watch_value(self, value: str) -> None:
        self.post_message(self.Changed(self, value))

    def mark_invalid(self, invalid: bool) -> None:
        self.set_class(invalid, "-invalid")
        if self.editor is not None:
            self.editor.set_class(invalid, "-invalid")

    def on_key(self, event: events.Key) -> None:
        if event.is_printable:
            event.stop()
            self._hint()

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        self._hint()

    def on_click(self) -> None:
        self.action_edit()

    def on_blur(self) -> None:
        self._hinted = False

    def _hint(self) -> None:
        if not self._hinted:
            self._hinted = True
            self.notify(f"Enter edits {self.label} (Esc undoes); Tab moves on.", timeout=3)

    def action_edit(self) -> None:
        """Put a text box in the field's place, holding its value, with the cursor at its end."""
        if self.editor is None:
            editor = SettingEditor(self)
            editor.set_class(self.has_class("-invalid"), "-invalid")
            self._put_in_place(editor)
            editor.focus()

    def _put_in_place(self, editor: Widget) -> None:
        if isinstance(self.parent, Widget):
            self.editor = editor
            self.parent.mount(editor, after=self)
            self.display = False

    def done_editing(self, refocus: bool) -> None:
        """The text box goes; the field shows again (and has focus again after Enter or Esc)."""
        editor, self.editor = self.editor, None
        if editor is None:
            return
        self.display = True
        editor.remove()
        if refocus:
            self.focus()


class SettingEditor(Input):
    """The text box of a field being edited: what is typed goes to the field as it is typed."""

    BINDINGS = [  # noqa: RUF012
        Binding("enter", "keep", "Keep"),
        Binding("escape", "undo", "Undo", show=False),
    ]

    def __init__(self, field: SettingField) -> None:
        super().__init__(field.value, compact=True, select_on_focus=False, restrict=field.restrict)
        self.field = field
        self.before = field.value  # Esc puts it back
        self.cursor_position = len(field.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.field.value = event.value

    def on_blur(self) -> None:
        self.field.done_editing(refocus=False)  # what was typed stays (it applied as typed)

    def action_keep(self) -> None:
        self.field.done_editing(refocus=True)

    def action_undo(self) -> None:
        self.field.value = self.before
        self.field.done_editing(refocus=True)


class ChoiceField(SettingField):
    """A field that takes one of a few values: Enter (or ↑ ↓ space, or a click) opens the list
    of them (a Select, made then), picking one sets it, Esc keeps the old one."""

    BINDINGS = [Binding("enter,down,space,up", "edit", "Choose", show=False)]  # noqa: RUF012

    def __init__(self, value: str, label: str, choices: tuple[str, ...], **kwargs: str) -> None:
        super().__init__(value, label, **kwargs)
        self.choices = choices

    def render(self) -> str | Content:
        # Drawn as a closed compact Select: the value, then its arrow one cell from the edge.
        width = max(0, self.content_region.width - 3)
        return Content.assemble(self.value[:width].ljust(width), " ", ("▼", "$foreground 50%"), " ")

    def action_edit(self) -> None:
        if self.editor is None:
            options = [(choice, choice) for choice in self.choices]
            select = Select(options, value=self.value, allow_blank=False, compact=True)
            self._put_in_place(select)
            select.focus()
            select.call_after_refresh(select.action_show_overlay)
            self.watch(select, "value", self._picked, init=False)
            self.watch(select, "expanded", self._list_shown, init=False)

    def _picked(self, value: object) -> None:
        if isinstance(value, str):
            self.value = value

    def _list_shown(self, shown: bool) -> None:
        if not shown:  # once the Select has handled its pick or Esc (and taken focus back)
            self.call_after_refresh(self._close_list)

    def _close_list(self) -> None:
        """Back to the field after a pick or Esc; after a click elsewhere focus stays there."""
        select = self.editor
        if select is not None:
            self.done_editing(refocus=select.has_focus_within)
