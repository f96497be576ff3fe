"""The message box: Enter sends, Ctrl+J (or Shift/Ctrl+Enter) breaks the line,
Up on the first line (Down on the last) walks through what was sent before."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

# What terminals deliver for "a newline, not send": Ctrl+J is "\n" in every terminal; Shift+Enter
# and Ctrl+Enter arrive as such only where the kitty keyboard protocol is on (kitty, WezTerm,
# foot, Ghostty, iTerm2...); elsewhere they are plain Enter. (Alt+Enter reaches Textual as
# Enter, so it cannot be used.)
NEWLINE_KEYS = ("ctrl+j", "shift+enter", "ctrl+enter")


# Keys that steer sampling while a reply streams (see tui/keys.py).
STEER_KEYS = frozenset(
    {"left_square_bracket", "right_square_bracket", "left_curly_bracket", "right_curly_bracket"}
)


class SteerableTextArea(TextArea):
    """A TextArea that, while `steering` is on, leaves the sampling keys to the app."""

    steering = False

    def check_consume_key(self, key: str, character: str | None = None) -> bool:
        if self.steering and key in STEER_KEYS:
            return False
        return super().check_consume_key(key, character)


class DocumentArea(SteerableTextArea):
    """Complete mode's document: the chat makes it when complete mode first shows."""

    def __init__(self) -> None:
        super().__init__(
            id="document",
            soft_wrap=True,
            placeholder="Write the start of a text; Ctrl+G lets the model continue it.",
        )
        self.border_title = "Document"
        self.display = False  # until the chat's pane switches to it


class PromptInput(SteerableTextArea):
    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, **kwargs)  # type: ignore[arg-type]
        self.sent: list[str] = []  # earlier messages, oldest first
        self._recall: int | None = None  # index into `sent` while walking through it
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if self.read_only:
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self.text))
        elif event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.replace("\n", *self.selection)

    def remember(self, text: str) -> None:
        if text.strip() and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._recall = None

    def action_cursor_up(self, select: bool = False) -> None:
        if select or self.cursor_location[0] > 0 or not self.sent:
            super().action_cursor_up(select)
            return
        if self._recall is None:
            self._draft = self.text
            self._recall = len(self.sent)
        if self._recall > 0:
            self._recall -= 1
            self._show(self.sent[self._recall])

    def action_cursor_down(self, select: bool = False) -> None:
        last_row = self.document.line_count - 1
        if select or self._recall is None or self.cursor_location[0] < last_row:
            super().action_cursor_down(select)
            return
        self._recall += 1
        if self._recall >= len(self.sent):
            self._recall = None
            self._show(self._draft)
        else:
            self._show(self.sent[self._recall])

    def _show(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)
