"""Open the screens that inspect the loaded model: score a text (F8) and compare
settings side by side (F9). The screens are imported on first use, so startup stays quick."""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.dialogue import LayoutError, RoleTemplate, Turn

if TYPE_CHECKING:
    from minigpt_tui.tui.chat.chat import Chat
    from minigpt_tui.tui.widgets.compare_pane import PromptLayout
    from model.tokenizer import Tokenizer


def _ready(chat: Chat) -> bool:
    """A model is loaded (else say so)."""
    if chat.backend is None or chat.session is None:
        chat.say("The model is still loading.", timeout=2)
        return False
    return True


def open_score(chat: Chat) -> None:
    """Score a text with the loaded model."""
    if not _ready(chat):
        return
    assert chat.backend is not None and chat.session is not None
    from minigpt_tui.streams import stream_slots
    from minigpt_tui.tui.screens.score import ScoreScreen

    # Its own KV cache where the backend allows (a reply may still be streaming).
    slot = stream_slots(chat.backend, 1, chat.replies.backend_lock)[0]
    chat.app.push_screen(ScoreScreen(slot.backend, chat.session.tokenizer, slot.lock))


def open_compare(chat: Chat) -> None:
    """One prompt, 2-4 panes with their own settings, streaming side by side."""
    if not _ready(chat):
        return
    assert chat.backend is not None and chat.session is not None
    from minigpt_tui.tui.screens.compare import CompareScreen

    prompt = chat.prompt_input.text if chat.mode == "chat" else chat.document.text
    screen = CompareScreen(
        chat.backend,
        chat.session.tokenizer,
        chat.replies.backend_lock,
        chat.settings,
        prompt=prompt,
        prompt_layout=compare_layout(chat),
    )
    chat.app.push_screen(screen)


def compare_layout(chat: Chat) -> PromptLayout:
    """How the panes lay out their prompt: in the chat with a chat model, the conversation so
    far (system turn included) with the prompt as your next message, so that each pane gives
    the assistant's next reply; otherwise the prompt as text to continue."""
    from minigpt_tui.tui.widgets.compare_pane import plain_prompt

    session = chat.session
    if session is None or chat.mode != "chat":
        return plain_prompt
    turns, budget, roles = session.turns, session.block_size - session.reserve(), chat.dialogue

    def layout(tokenizer: Tokenizer, text: str) -> list[int]:
        if tokenizer.chat is None:
            return plain_prompt(tokenizer, text)
        if not text.strip():
            raise LayoutError("write a message for the panes to answer")
        return RoleTemplate(roles).fit(tokenizer, [*turns, Turn("user", text)], budget).ids

    return layout
