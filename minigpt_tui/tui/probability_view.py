"""The probability view (Ctrl+T): a reply's tokens coloured by how likely the model found them,
and the inspector beside the conversation with the alternatives it weighed for the token picked
(← →); picking an alternative there branches the reply at that token (tui/branching.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.generation import TokenEvent
from minigpt_tui.tui.widgets.settings_panel import TokenInspector

if TYPE_CHECKING:
    from minigpt_tui.tui.app import ChatApp


def toggle(app: ChatApp) -> None:
    on = not app.transcript.show_probs
    app.transcript.set_show_probs(on)
    for widget in app.query("#inspector, #inspector-title"):
        widget.set_class(not on, "-hidden")
    app.say(
        "Probability view " + ("on: Tab to the conversation, ← → pick a token" if on else "off"),
        timeout=3,
    )


def inspect(app: ChatApp, token: TokenEvent | None) -> None:
    """Show `token` (None: no token picked) and its alternatives in the inspector."""

    def decode(alternative: int) -> str:
        assert app.session is not None
        return app.session.tokenizer.decode([alternative])

    app.query_one(TokenInspector).show_token(token, decode)
