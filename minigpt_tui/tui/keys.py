"""The chat screen's keys: the bindings (what each key does) and the help text (how it is said).

Keep the two in step: F1 shows HELP_KEYS, and the README's key table repeats it. The bindings
belong to the ChatScreen, so a dialog pushed over it disables them all; the "app." ones run the
app's app-wide actions (quit, which saves the conversation, also under a dialog: Textual's own
Ctrl+Q runs it there; switch model, system text, theme, search).
"""

from __future__ import annotations

import dataclasses

from textual import events
from textual.binding import Binding, BindingType

BINDINGS: list[BindingType] = [
    # First, so that the footer shows it first; priority, as Textual's own Ctrl+Q under dialogs.
    Binding("ctrl+q", "app.quit", "Quit", priority=True),
    Binding("escape", "stop", "Stop", priority=True),
    # Priority, so that they reach the app before the message box; check_action lets the
    # key through to the box when the user is typing rather than watching a reply.
    Binding("left_square_bracket", "steer_temperature(-0.1)", "Temp−", priority=True),
    Binding("right_square_bracket", "steer_temperature(0.1)", "Temp+", priority=True),
    Binding("left_curly_bracket", "steer_top_k(-1)", "Top-k−", priority=True, show=False),
    Binding("right_curly_bracket", "steer_top_k(1)", "Top-k+", priority=True, show=False),
    Binding("f2", "temperature(-0.1)", "Temp−", show=False),
    Binding("f3", "temperature(0.1)", "Temp+", show=False),
    Binding("f4", "top_k(-1)", "Top-k−", show=False),
    Binding("f5", "top_k(1)", "Top-k+", show=False),
    Binding("ctrl+g", "continue", "Continue"),  # complete mode (shown only there)
    Binding("ctrl+g", "send", "Send", show=False),
    Binding("ctrl+r", "regenerate", "Redo"),
    Binding("ctrl+n", "new", "New"),
    Binding("ctrl+l", "history", "History"),
    Binding("ctrl+s", "export", "Export"),
    Binding("ctrl+o", "copy", "Copy", show=False),
    Binding("ctrl+t", "toggle_probs", "Probs", show=False),
    Binding("ctrl+p", "toggle_panel", "Panel", show=False),
    Binding("f1", "help", "Help"),
    # Priority: F6, F7 and F10 would otherwise select text in a focused text box.
    Binding("f6", "app.switch_model", "Model", show=False, priority=True),
    Binding("f7", "app.system_text", "System", show=False, priority=True),
    Binding("f10", "app.theme", "Theme", show=False, priority=True),
    Binding("ctrl+f", "app.search", "Search", show=False),
    Binding("f8", "score", "Score", show=False),
    Binding("f9", "compare", "Compare", show=False),
]


def binding_id(action: str) -> str:
    """A binding's id for the config file's [keys] table: its action, with "_up"/"_down" for
    the ones that take a step (temperature(-0.1) -> temperature_down)."""
    name, _, arg = action.removeprefix("app.").partition("(")
    if not arg:
        return name
    return f"{name}_{'down' if arg.startswith('-') else 'up'}"


BINDINGS = [
    dataclasses.replace(b, id=binding_id(b.action)) if isinstance(b, Binding) else b
    for b in BINDINGS
]
BINDING_IDS = {b.id for b in BINDINGS if isinstance(b, Binding) and b.id}


def closed_by(opener: str, action: str = "dismiss(None)") -> Binding:
    """A dialog's binding that closes it with the key that opened it (the chat's binding
    `opener`, by id). It shares that binding's id, so that a key moved in the settings file's
    [keys] table moves both; priority, so that a focused text box cannot take it."""
    key = next(b.key for b in BINDINGS if isinstance(b, Binding) and b.id == opener)
    return Binding(key, action, "Close", id=opener, show=False, priority=True)


# Every key, for the help screen and the README (BINDINGS above are the source of truth for
# what each key does; this is how they are explained).
HELP_KEYS = [
    ("Enter", "send the message (chat mode)"),
    ("Ctrl+J", "new line in the message (also Shift/Ctrl+Enter in kitty-protocol terminals)"),
    ("Up / Down", "earlier messages (on the first / last line)"),
    ("Ctrl+G", "send (chat) / continue the document (complete mode)"),
    ("Esc", "stop the reply now"),
    ("Ctrl+R", "regenerate the last reply"),
    ("Ctrl+N", "new conversation"),
    ("Ctrl+O", "copy the last reply (OSC 52, works over ssh)"),
    ("Ctrl+L", "history: reopen or delete saved conversations"),
    ("Ctrl+S", "export the conversation (.md or .txt)"),
    ("Ctrl+T", "colour tokens by probability; show alternatives"),
    ("Tab, then ← / →", "select a token (probability view)"),
    ("↑ / ↓", "select a message (probability view, conversation focused)"),
    ("1 … 5, or click", "continue the reply from the selected token's n-th alternative"),
    (", / .", "previous / next branch of the message (shown as ‹2/3›)"),
    ("e", "edit your selected message; sending it makes a new branch"),
    ("[ / ]", "temperature −/+ 0.1 (while replying or outside the message box)"),
    ("{ / }", "top-k down/up (while replying or outside the message box)"),
    ("F2 / F3", "temperature −/+ 0.1 (always)"),
    ("F4 / F5", "top-k down/up (always)"),
    ("Ctrl+P", "show/hide the settings panel"),
    ("Tab / Shift+Tab", "move between message box, conversation and settings"),
    ("Enter on a setting", "edit it: Enter keeps, Esc undoes (typed before Enter: nothing)"),
    ("F8", "score a text: surprisal per token, bits/char, alternatives (Ctrl+G scores)"),
    ("F9", "compare: 2-4 panes with their own settings/model stream one prompt side by side"),
    ("  in compare", "Enter/Ctrl+G run all · Ctrl+N add pane · Ctrl+R remove · Esc stop/back"),
    ("F6", "switch model: bundled, used before, or a path (the old one answers meanwhile)"),
    ("F7", "system text: what the dialogue starts with (persona, instructions, examples)"),
    ("F10", "theme (remembered in the config file)"),
    ("Ctrl+F", "search every saved conversation; Enter opens it at the message"),
    ("F1", "this help (each dialog closes with Esc or the key that opened it)"),
    ("Ctrl+Q", "quit (the conversation is saved)"),
]
HELP_NOTES = (
    "Settings apply from the next token, even mid-reply; a new seed from the next reply "
    "(a seed makes the whole conversation repeatable, Ctrl+R still gives a new reply). "
    "In History: Enter opens, Del twice deletes (not the open conversation). Conversations "
    "are saved after every reply (not with --no-history); a save that fails stays in the "
    "status bar until one works, and quitting tries again, else says so and exits 1. Keys can be "
    "remapped in the config file's [keys] table (`minigpt-tui config edit`) by binding id: "
    + ", ".join(sorted(BINDING_IDS))
    + "."
)


def allowed(action: str, *, hidden: bool, generating: bool, typing: bool, mode: str) -> bool:
    """Whether a key's action runs now (the chat screen's check_action): `hidden` while the
    terminal is too small to show the chat, `typing` while a text box has focus."""
    if hidden and action not in ("quit", "stop", "help"):
        return False  # nothing is shown: nothing may be sent, redone or changed unseen
    if action == "stop":
        return generating
    if action in ("steer_temperature", "steer_top_k"):
        # [ ] { } steer sampling while a reply streams, or when no text box has focus.
        return generating or not typing
    if action == "continue":
        return mode == "complete"
    return True


# An Esc pressed just before a control key (Esc then Ctrl+R, fast) reaches Textual as one
# unknown escape sequence, which it reports as a literal "^" key: typed into the message box.
# A "^" that comes within this many seconds of a control key came from such a burst.
BURST_SECONDS = 0.01


class EscapeBurst:
    """Holds back each "^" key for BURST_SECONDS: followed at once by a control key, it is
    the Escape it was (the reply stops, nothing is typed); otherwise it is a "^" after all."""

    def __init__(self) -> None:
        self.pending: events.Key | None = None

    def take(self, key: events.Key) -> list[events.Key]:
        """The keys to handle now, in order, given a key that just arrived."""
        held, self.pending = self.pending, None
        if held is not None:
            if key.key.startswith("ctrl+") and key.time - held.time < BURST_SECONDS:
                return [events.Key("escape", "\x1b"), key]
            return [held, *self.take(key)]
        if key.key == "circumflex_accent":
            self.pending = key
            return []
        return [key]

    def flush(self) -> events.Key | None:
        """The held "^" once nothing followed it in time."""
        held, self.pending = self.pending, None
        return held
