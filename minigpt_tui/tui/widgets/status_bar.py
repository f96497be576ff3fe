"""One line under the conversation: model, backend, size, context used, speed of the last reply."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from minigpt_tui.safe_text import plain


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}".replace(".0", "")
    return str(n)


class StatusBar(Static):
    """Shows what it is given: the chat screen sets each value from the chat's own."""

    model = reactive("")
    backend = reactive("")
    params = reactive(0)
    context = reactive(0)
    block_size = reactive(0)
    ttft = reactive(-1.0)  # seconds; < 0: no reply yet
    tokens_per_sec = reactive(-1.0)
    state = reactive("loading…")
    checkpoint = reactive("")  # chat --follow: the checkpoint talking now (step, val loss)
    unsaved = reactive("")  # why the conversation is not saved: shown until a save works

    def render(self) -> Text:
        # The state leads, so that a narrow terminal truncates details, never "ready".
        parts = [self.state, self.model or "no model"]
        if self.unsaved:  # second, so that a narrow terminal still shows it
            parts.insert(1, self.unsaved)  # "the conversation was not saved to ... (why)"
        if self.checkpoint:
            parts.append(self.checkpoint)
        if self.backend:
            parts.append(f"{self.backend} · {human(self.params)} params")
        if self.block_size:
            parts.append(f"ctx {self.context}/{self.block_size}")
        if self.ttft >= 0:
            parts.append(f"ttft {self.ttft * 1000:.0f}ms · {self.tokens_per_sec:.0f} tok/s")
        return Text(plain(" │ ".join(parts), one_line=True))  # the model's name is a file's
