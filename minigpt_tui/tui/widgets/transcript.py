"""The conversation pane: one MessageView per turn, scrolled to the end while replies stream."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from minigpt_tui.engine import TokenEvent

# Probability bands for the token colouring (the styles live in app.tcss).
BANDS = ((0.5, "token--high"), (0.2, "token--mid"), (0.05, "token--low"), (0.0, "token--rare"))


def band(prob: float) -> str:
    return next(name for limit, name in BANDS if prob >= limit)


class MessageView(Static):
    """One speech: the speaker's name, then the text, optionally coloured by probability."""

    COMPONENT_CLASSES = {  # noqa: RUF012 (textual's declared type is a plain set)
        "message--speaker",
        "token--high",
        "token--mid",
        "token--low",
        "token--rare",
        "token--selected",
    }

    def __init__(self, role: str, speaker: str, text: str = "") -> None:
        super().__init__(classes=f"message -{role}")
        self.role = role
        self.speaker = speaker
        self.text = text
        self.tokens: list[TokenEvent] = []  # model replies generated this session
        self.show_probs = False
        self.selected: int | None = None  # index into tokens, highlighted in the probs view

    def on_mount(self) -> None:
        self.refresh_text()

    def append(self, tokens: list[TokenEvent]) -> None:
        self.tokens.extend(tokens)
        self.text += "".join(t.text for t in tokens)
        self.refresh_text()

    def set_text(self, text: str) -> None:
        self.text = text
        self.refresh_text()

    def refresh_text(self) -> None:
        out = Text()
        out.append(f"{self.speaker}\n", style=self.get_component_rich_style("message--speaker"))
        if self.show_probs and self.tokens:
            selected = self.get_component_rich_style("token--selected")
            for i, tok in enumerate(self.tokens):
                style = self.get_component_rich_style(band(tok.prob))
                if i != self.selected:
                    out.append(tok.text, style=style)
                elif tok.text.strip():
                    out.append(tok.text, style=style + selected)
                else:  # make a selected space, line break or empty token visible
                    shown = tok.text.replace(" ", "␣").replace("\n", "⏎\n") or "∅"
                    out.append(shown, style=style + selected)
        else:
            out.append(self.text.strip("\n") or ("…" if self.role == "model" else ""))
        self.update(out)


class Transcript(VerticalScroll, can_focus=True):
    """Messages, newest last. Follows new text until the user scrolls up; ←/→ pick a token."""

    BINDINGS = [  # noqa: RUF012
        Binding("left", "select_token(-1)", "Prev token", show=False),
        Binding("right", "select_token(1)", "Next token", show=False),
        Binding("home", "select_token(-1000000)", "First token", show=False),
        Binding("end", "select_token(1000000)", "Last token", show=False),
    ]

    class TokenSelected(Message):
        def __init__(self, token: TokenEvent | None) -> None:
            super().__init__()
            self.token = token

    show_probs = False  # colour model tokens by probability (Ctrl+T)

    def on_mount(self) -> None:
        self.anchor()

    @property
    def messages(self) -> list[MessageView]:
        return list(self.query(MessageView))

    def add(self, role: str, speaker: str, text: str = "") -> MessageView:
        view = MessageView(role, speaker, text)
        self.mount(view)
        view.show_probs = self.show_probs
        return view

    def note(self, text: str) -> Static:
        """A line that is not a turn (a model switch): shown, never sent to the model."""
        line = Static(Text(text), classes="note")
        self.mount(line)
        return line

    def set_show_probs(self, on: bool) -> None:
        self.show_probs = on
        for view in self.messages:
            view.show_probs = on
            view.refresh_text()
        self.post_message(self.TokenSelected(self.selected_token()))

    def last_model_view(self) -> MessageView | None:
        return next((m for m in reversed(self.messages) if m.role == "model"), None)

    def selected_token(self) -> TokenEvent | None:
        view = self.last_model_view()
        if view is None or not view.tokens:
            return None
        index = len(view.tokens) - 1 if view.selected is None else view.selected
        return view.tokens[min(index, len(view.tokens) - 1)]

    def action_select_token(self, step: int) -> None:
        view = self.last_model_view()
        if not self.show_probs or view is None or not view.tokens:
            self.scroll_relative(x=step if abs(step) == 1 else None, animate=False)
            return
        current = len(view.tokens) - 1 if view.selected is None else view.selected
        view.selected = max(0, min(len(view.tokens) - 1, current + step))
        view.refresh_text()
        self.post_message(self.TokenSelected(view.tokens[view.selected]))

    def clear(self) -> None:
        self.remove_children()
