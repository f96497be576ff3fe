"""The conversation pane: one MessageView per turn, scrolled to the end while replies stream."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from minigpt_tui.generation import TokenEvent
from minigpt_tui.safe_text import plain

# Probability bands for the token colouring (the styles live in app.tcss).
BANDS = ((0.5, "token--high"), (0.2, "token--mid"), (0.05, "token--low"), (0.0, "token--rare"))


def band(prob: float) -> str:
    return next(name for limit, name in BANDS if prob >= limit)


def visible_blanks(text: str) -> str:
    """A selected token's text with its spaces and line breaks made visible (␣, ⏎), and an
    empty one shown as ∅, so that the selection always shows where it is."""
    return text.replace(" ", "␣").replace("\n", "⏎\n") or "∅"


class MessageView(Static):
    """One speech: the speaker's name, then the text, optionally coloured by probability."""

    COMPONENT_CLASSES = {  # noqa: RUF012 (textual's declared type is a plain set)
        "message--speaker",
        "message--branch",
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
        self.branch: tuple[int, int] | None = None  # shown as "‹k/n›" when it has siblings

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
        # Everything shown is plain(): a model's vocabulary may hold ESC and other controls.
        speaker = plain(self.speaker, one_line=True)
        out.append(speaker, style=self.get_component_rich_style("message--speaker"))
        if self.branch is not None:
            k, n = self.branch
            out.append(f"  ‹{k}/{n}›", style=self.get_component_rich_style("message--branch"))
        out.append("\n")
        if self.show_probs and self.tokens:
            selected = self.get_component_rich_style("token--selected")
            for i, tok in enumerate(self.tokens):
                style = self.get_component_rich_style(band(tok.prob))
                text = plain(tok.text)
                if i != self.selected:
                    out.append(text, style=style)
                elif text.strip():
                    out.append(text, style=style + selected)
                else:  # make a selected space, line break or empty token visible
                    out.append(visible_blanks(text), style=style + selected)
        else:
            out.append(plain(self.text.strip("\n")) or ("…" if self.role == "model" else ""))
        self.update(out)


class Transcript(VerticalScroll, can_focus=True):
    """Messages, newest last. Follows new text until the user scrolls up; ←/→ pick a token."""

    BINDINGS = [  # noqa: RUF012
        Binding("left", "select_token(-1)", "Prev token", show=False),
        Binding("right", "select_token(1)", "Next token", show=False),
        Binding("home", "select_token(-1000000)", "First token", show=False),
        Binding("end", "select_token(1000000)", "Last token", show=False),
        # Branches (tui/branches in the app): , . switch, 1-5 continue from an alternative,
        # e edits one of your messages, up/down pick a message in the probability view.
        Binding("comma", "switch_branch(-1)", "Prev branch", show=False),
        Binding("full_stop", "switch_branch(1)", "Next branch", show=False),
        Binding("up", "select_message(-1)", "Prev message", show=False),
        Binding("down", "select_message(1)", "Next message", show=False),
        Binding("e", "edit", "Edit", show=False),
        *[Binding(str(n), f"branch_at({n - 1})", show=False) for n in range(1, 6)],
    ]

    class SwitchBranch(Message):
        """Show another branch of message `index` (its position in the transcript)."""

        def __init__(self, index: int, step: int) -> None:
            super().__init__()
            self.index = index
            self.step = step

    class BranchAt(Message):
        """Continue model message `index` from its token `position`, replaced by `token`."""

        def __init__(self, index: int, position: int, token: int) -> None:
            super().__init__()
            self.index = index
            self.position = position
            self.token = token

    class Edit(Message):
        """Edit your message `index` and send it again as a new branch."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    current: MessageView | None = None  # the message the branch keys act on (None: the last)

    class TokenSelected(Message):
        def __init__(self, token: TokenEvent | None) -> None:
            super().__init__()
            self.token = token

    show_probs = False  # colour model tokens by probability (Ctrl+T)

    def on_mount(self) -> None:
        self.anchor()

    @property
    def messages(self) -> list[MessageView]:
        # Not those being removed (clear() then add() redraws a branch in one go).
        return [m for m in self.query(MessageView) if not getattr(m, "_pruning", False)]

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

    def current_view(self) -> MessageView | None:
        """The message picked with up/down, else the last reply."""
        if self.current is not None and self.current in self.messages:
            return self.current
        return self.last_model_view()

    def selected_token(self) -> TokenEvent | None:
        view = self.current_view()
        if view is None or not view.tokens:
            return None
        index = len(view.tokens) - 1 if view.selected is None else view.selected
        return view.tokens[min(index, len(view.tokens) - 1)]

    def action_select_token(self, step: int) -> None:
        view = self.current_view()
        if not self.show_probs or view is None or not view.tokens:
            self.scroll_relative(x=step if abs(step) == 1 else None, animate=False)
            return
        current = len(view.tokens) - 1 if view.selected is None else view.selected
        view.selected = max(0, min(len(view.tokens) - 1, current + step))
        view.refresh_text()
        self.post_message(self.TokenSelected(view.tokens[view.selected]))

    def clear(self) -> None:
        self.current = None
        self.remove_children()

    # ----------------------------------------------------------------- branches
    def action_select_message(self, step: int) -> None:
        """Up/down: in the probability view, pick the message the branch keys act on."""
        messages = self.messages
        if not self.show_probs or not messages:
            self.scroll_relative(y=step, animate=False)
            return
        view = self.current_view()
        i = messages.index(view) if view is not None else len(messages) - 1
        self.pick(messages[max(0, min(len(messages) - 1, i + step))])

    def pick(self, view: MessageView) -> None:
        for m in self.messages:
            m.set_class(m is view, "-current")
        self.current = view
        view.scroll_visible(animate=False)
        if view.tokens:
            self.post_message(self.TokenSelected(self.selected_token()))

    def _branched(self, role: str | None = None) -> int | None:
        """The current message, or the nearest one above it that has branches (of `role`)."""
        messages = self.messages
        view = self.current_view()
        if view is None:
            return None
        i = messages.index(view)
        for j in range(i, -1, -1):
            m = messages[j]
            if role is not None:
                if m.role == role:
                    return j
            elif m.branch is not None:
                return j
        return i if role is None else None

    def action_switch_branch(self, step: int) -> None:
        i = self._branched()
        if i is not None:
            self.post_message(self.SwitchBranch(i, step))

    def action_edit(self) -> None:
        i = self._branched("user")
        if i is not None:
            self.post_message(self.Edit(i))

    def action_branch_at(self, n: int) -> None:
        """1-5: continue the reply from the selected token's n-th likeliest alternative."""
        found = self.alternative(n)
        if found is not None:
            self.post_message(self.BranchAt(*found))

    def alternative(self, n: int) -> tuple[int, int, int] | None:
        """(message index, token position, token) for alternative n of the selected token."""
        view = self.current_view()
        if not self.show_probs or view is None or not view.tokens:
            return None
        position = len(view.tokens) - 1 if view.selected is None else view.selected
        position = min(position, len(view.tokens) - 1)
        alternatives = view.tokens[position].alternatives
        if not 0 <= n < len(alternatives):
            return None
        return self.messages.index(view), position, alternatives[n][0]
