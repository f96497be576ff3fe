"""The chat widget: the conversation on screen and everything it owns (see chat/__init__.py).

It holds the transcript, the document and the message box, the ChatSession, the model talking
now, the reply in flight and the edit and branch state; its parts (sending, branching,
conversations) work on it. What its siblings show (the status bar, the settings panel's mode
and token inspector) it never touches: it changes its own status attributes, which the screen
watches, and posts messages up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import ContentSwitcher, TextArea

from minigpt_tui.dialogue import (
    DialogueTemplate,
    LayoutError,
    RoleTemplate,
    Template,
    layout_for,
)
from minigpt_tui.generation import Generation, GenerationStats, TokenEvent
from minigpt_tui.history import HistoryStore
from minigpt_tui.safe_text import plain
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui.chat.branching import Branching
from minigpt_tui.tui.chat.conversations import Conversations
from minigpt_tui.tui.chat.sending import MessageSender
from minigpt_tui.tui.chat.status import ChatStatus
from minigpt_tui.tui.loading import LoadedModel
from minigpt_tui.tui.reply import ReplyController
from minigpt_tui.tui.saving import ConversationSaver
from minigpt_tui.tui.session import ChatSession
from minigpt_tui.tui.widgets.prompt_input import DocumentArea, PromptInput, SteerableTextArea
from minigpt_tui.tui.widgets.transcript import Transcript
from model.backend import Backend


class Chat(ChatStatus):
    class ModeShown(Message):
        """The chat shows this mode now ("chat" or "complete")."""

        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

    class Steering(Message):
        """A reply started or ended: whether the steering keys act now changed."""

    class TokenShown(Message):
        """The token picked in the probability view (None: none), for the inspector."""

        def __init__(self, token: TokenEvent | None, decode: Callable[[int], str]) -> None:
            super().__init__()
            self.token = token
            self.decode = decode

    class LayoutShown(Message):
        def __init__(self, roles: bool) -> None:  # a chat model talks now (roles), or not
            super().__init__()
            self.roles = roles

    class Ready(Message):
        """The chat is on screen: models may come."""

    class ReplyEnded(Message):
        """A reply ended and was kept: a model waiting to take over may do so now."""

    def __init__(
        self,
        settings: SamplingSettings,
        template: DialogueTemplate,
        mode: str,
        history: HistoryStore,
        model_label: str,
    ) -> None:
        super().__init__(id="left")
        self.settings = settings
        self.dialogue = template  # the settings' speaker names and the system text
        # How turns are laid out for the model (prompt ids, speaker names, stop strings,
        # cleaning a reply): the dialogue, or roles for a chat model (`use_layout`).
        self.template: Template = template
        self.default_system = template.system  # the settings file's, for reopened chats
        self.history = history
        self.model_label = model_label  # the name the user gave the model, if any
        self.backend: Backend | None = None
        self.session: ChatSession | None = None  # made when the first model arrives
        self._start_mode = mode  # the session's mode until there is a session
        self.replies = ReplyController(self)
        self.saver = ConversationSaver(history, model_label, mode)
        self.last_stats: GenerationStats | None = None
        self.document_area: DocumentArea | None = None  # made when first used (`document`)
        self.prompt_len = 0  # tokens of the prompt the model sees (while replying: of its own)
        self.hidden = False  # the terminal is too small to show the chat: nothing is sent
        self.sender = MessageSender(self)
        self.conversations = Conversations(self)
        self.branching = Branching(self)

    def compose(self) -> ComposeResult:
        with ContentSwitcher(initial="transcript", id="pane"):
            yield Transcript(id="transcript")  # and complete mode's document, once used
        yield PromptInput(id="prompt", placeholder="Loading the model…")

    def on_mount(self) -> None:
        self.model = self.model_label
        self.focus_input()
        self.post_message(self.Ready())

    # ----------------------------------------------------------------- what it shows
    @property
    def mode(self) -> str:
        """ "chat" or "complete": the session's (before it exists, the one it will start in)."""
        return self.session.mode if self.session is not None else self._start_mode

    @property
    def generating(self) -> bool:
        return self.replies.running

    @property
    def generation(self) -> Generation | None:
        """The reply streaming now, if any."""
        return self.replies.reply.generation if self.replies.reply is not None else None

    @property
    def transcript(self) -> Transcript:
        return self.query_one(Transcript)

    @property
    def prompt_input(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def document(self) -> TextArea:
        """Complete mode's text box, made when first used: hidden in chat mode, it still cost
        the chat's first frame ~20 ms of CPU in styling (issue 25). `document_area`: made yet."""
        if self.document_area is None:
            self.document_area = DocumentArea()
            self.query_one(ContentSwitcher).mount(self.document_area)  # in the DOM from now on
        return self.document_area

    def say(self, message: str, **kwargs: Any) -> None:
        """A toast; never markup, since it may quote the user's text or a path."""
        self.notify(plain(message), markup=False, **kwargs)

    def focus_input(self) -> None:
        (self.prompt_input if self.mode == "chat" else self.document).focus()

    def show_mode(self, mode: str) -> None:
        if self.session is not None:
            self.session.mode = mode
        else:
            self._start_mode = mode
        chat = mode == "chat"
        # `document` makes complete mode's box if it is not yet there, before it is shown.
        self.query_one(ContentSwitcher).current = "transcript" if chat else self.document.id
        self.prompt_input.display = chat
        self.prompt_input.placeholder = "Message  (Enter send · Ctrl+J new line · F1 help)"
        self.focus_input()
        self.post_message(self.ModeShown(mode))

    def sync_context(self, extra: int = 0, prompt: int | None = None) -> None:
        """The context shown: the prompt's tokens (and `extra` made since) of the block; a
        reply that starts says how long its own prompt is (`prompt`)."""
        if self.session is None:
            return
        if prompt is not None:
            self.prompt_len = min(prompt, self.session.block_size)
        elif not self.generating:
            with contextlib.suppress(LayoutError):  # said when a reply is asked for
                self.prompt_len = len(self.session.prompt().ids)
        self.context = min(self.prompt_len + extra, self.session.block_size)

    def change_mode(self, mode: str) -> None:
        """The settings panel switched chat <-> complete: a new conversation in that mode."""
        if mode == self.mode:
            return
        self.conversations.new()
        self.show_mode(mode)
        self.sync_context()

    def names_changed(self) -> None:
        """The speakers' names (or the layout) changed: the transcript shows them."""
        for view in self.transcript.messages:
            view.speaker = self.template.speaker(view.role)
            view.refresh_text()
        self.sync_context()

    def close(self) -> None:
        """Quitting: a reply in flight keeps what it said, and the conversation is saved."""
        self.sender.cancel()
        self.conversations.save()

    def show_token(self, token: TokenEvent | None) -> None:
        """The probability view picked `token`: the inspector shows it (posted up)."""
        session = self.session
        if session is not None:
            self.post_message(self.TokenShown(token, lambda i: session.tokenizer.decode([i])))

    # ----------------------------------------------------------------- the model
    def start(self, model: LoadedModel) -> None:
        """The first model arrived: the session starts with it."""
        self.backend = model.backend
        self.session = ChatSession(
            model.tokenizer, model.backend.block_size, self.settings, self.template, self.mode
        )
        self.use_layout(model)
        self.model = self.model_label or model.backend.info.name
        self.show_backend(model.backend)
        self.state = "ready"
        self.show_mode(self.mode)
        self.sync_context()
        if self.sender.send_when_loaded:
            self.sender.send()

    def take_over(self, model: LoadedModel, note: str, name: str | None) -> None:
        """Another model answers from the next reply (`name`: the label it is shown with,
        None while following a run); the session keeps its turns."""
        assert self.session is not None
        self.backend = model.backend
        self.session.tokenizer = model.tokenizer
        self.session.block_size = model.backend.block_size
        self.use_layout(model)
        self.show_backend(model.backend)
        if name is not None:
            self.model = self.model_label = self.saver.model_label = name
        self.transcript.note(note)
        self.transcript.scroll_end(animate=False)
        self.state = "ready"
        self.sync_context()

    def use_layout(self, model: LoadedModel) -> None:
        """Lay turns out as `model` needs (roles for a chat model, else the dialogue)."""
        assert self.session is not None
        layout = layout_for(model.tokenizer, self.dialogue)
        if type(layout) is type(self.template):
            return  # the same layout as now
        self.template = self.session.template = layout
        self.names_changed()
        self.post_message(self.LayoutShown(isinstance(self.template, RoleTemplate)))

    def steered(self, what: str) -> None:
        """A key changed a sampling setting (`what`, in words): the status says so."""
        self.state = f"replying… · {what}" if self.generating else what

    def show_idle(self, state: str) -> None:
        """The status's state, unless a reply streams (it says its own)."""
        if not self.generating:
            self.state = state

    # ----------------------------------------------------------------- messages from inside
    @on(PromptInput.Submitted)
    def _submitted(self) -> None:
        self.sender.send()

    @on(ReplyController.Started)
    def _reply_started(self) -> None:
        self.sender.started()

    @on(ReplyController.Tokens)
    def _reply_tokens(self, event: ReplyController.Tokens) -> None:
        self.sender.tokens(event)

    @on(ReplyController.Finished)
    def _reply_finished(self, event: ReplyController.Finished) -> None:
        if self.sender.finished(event):
            self.post_message(self.ReplyEnded())

    @on(Transcript.SwitchBranch)
    def _switch_branch(self, event: Transcript.SwitchBranch) -> None:
        self.branching.switch(event.index, event.step)

    @on(Transcript.Edit)
    def _edit(self, event: Transcript.Edit) -> None:
        self.branching.edit(event.index)

    @on(Transcript.BranchAt)
    def _branch_at(self, event: Transcript.BranchAt) -> None:
        self.branching.branch_at(event.index, event.position, event.token)

    @on(Transcript.TokenSelected)
    def _token_selected(self, event: Transcript.TokenSelected) -> None:
        self.show_token(event.token)

    def set_steering(self, on: bool) -> None:
        """While a reply streams, [ ] { } steer sampling instead of typing into the text boxes."""
        for box in self.query(SteerableTextArea):
            box.steering = on
        self.post_message(self.Steering())
