"""Open the screens that inspect the loaded model: score a text (F8) and compare
settings side by side (F9). The screens are imported on first use, so startup stays quick."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minigpt_tui.tui.app import ChatApp


def _ready(app: ChatApp) -> bool:
    """On the main screen, with a model loaded (else say so)."""
    if len(app.screen_stack) > 1:
        return False
    if app.backend is None or app.session is None:
        app.say("The model is still loading.", timeout=2)
        return False
    return True


def open_score(app: ChatApp) -> None:
    """Score a text with the loaded model."""
    if not _ready(app):
        return
    assert app.backend is not None and app.session is not None
    from minigpt_tui.streams import stream_slots
    from minigpt_tui.tui.screens.score import ScoreScreen

    # Its own KV cache where the backend allows (a reply may still be streaming).
    slot = stream_slots(app.backend, 1, app.replies.backend_lock)[0]
    app.push_screen(ScoreScreen(slot.backend, app.session.tokenizer, slot.lock))


def open_compare(app: ChatApp) -> None:
    """One prompt, 2-4 panes with their own settings, streaming side by side."""
    if not _ready(app):
        return
    assert app.backend is not None and app.session is not None
    from minigpt_tui.tui.screens.compare import CompareScreen

    prompt = app.prompt_input.text if app.mode == "chat" else app.document.text
    screen = CompareScreen(
        app.backend, app.session.tokenizer, app.replies.backend_lock, app.settings, prompt=prompt
    )
    app.push_screen(screen)
