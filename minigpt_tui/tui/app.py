"""`minigpt-tui chat`: talk to a model in the terminal while it streams, and steer it.

The app keeps what is app-wide: the settings file's key map and theme, the history store,
loading models (ModelLoader, a worker) and the app-wide keys (tui/workflow.py: F6, F7, F10,
Ctrl+F, and Ctrl+Q, which saves the conversation first). The conversation itself is the chat
package's (tui/chat/__init__.py says who owns what): the ChatScreen lays it out and holds the
keys, the Chat widget owns the session and the reply. The app hands models down to the chat
and hears from it when a reply ended (a model waiting to take over may do so then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import events, on
from textual.app import App
from textual.screen import Screen

from minigpt_tui.dialogue import DialogueTemplate
from minigpt_tui.history import HistoryStore
from minigpt_tui.safe_text import plain
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui import keys
from minigpt_tui.tui.chat.chat import Chat
from minigpt_tui.tui.chat.screen import ChatScreen
from minigpt_tui.tui.loading import ModelLoader
from minigpt_tui.tui.workflow import Workflow
from model.backend import Backend

WORKFLOW_ACTIONS = ("switch_model", "system_text", "theme", "search")


class ChatApp(App[None]):
    CSS_PATH = ["app.tcss", "workflow.tcss"]  # noqa: RUF012
    TITLE = "minigpt-tui chat"
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        loader: Callable[[], Backend],
        *,
        model_label: str = "",
        settings: SamplingSettings | None = None,
        template: DialogueTemplate | None = None,
        mode: str = "chat",
        history: HistoryStore | None = None,
    ) -> None:
        super().__init__()
        self.loader = loader
        self.model_label = model_label
        self.settings = settings or SamplingSettings()
        self.template = template or DialogueTemplate()
        self.mode = mode  # the mode the chat starts in
        self.history = history or HistoryStore.memory()
        self.models = ModelLoader(self)
        self.load_error = ""  # why the model could not be loaded, if it could not
        self.workflow = Workflow(self, self.models)
        self._burst = keys.EscapeBurst()
        self._chat_screen: ChatScreen | None = None

    def setup_workflow(self, **options: Any) -> None:
        """The settings file's key map and theme, the model's path, `--follow` (see Workflow)."""
        self.workflow.configure(**options)

    def get_default_screen(self) -> Screen[Any]:
        self._chat_screen = ChatScreen(
            self.settings, self.template, self.mode, self.history, self.model_label
        )
        return self._chat_screen

    @property
    def chat(self) -> Chat:
        """The conversation (on the chat screen, whatever dialog is open over it)."""
        assert self._chat_screen is not None, "the app is not running"
        return self._chat_screen.chat

    @on(Chat.Ready)
    def _chat_ready(self) -> None:
        if self.history.notice:
            self.notify(plain(self.history.notice), markup=False, severity="warning", timeout=10)
        self.workflow.mount(self.chat)
        if self._chat_screen is not None:
            self._chat_screen.help_notes = self.workflow.help_notes(keys.HELP_NOTES)
        self.models.load(self.loader)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            for key in self._burst.take(event):  # a fast Esc + Ctrl+R must not type "^"
                await super().on_event(key)
            if self._burst.pending is not None:
                self.set_timer(keys.BURST_SECONDS, self._release_caret)
            return
        await super().on_event(event)

    async def _release_caret(self) -> None:
        held = self._burst.flush()
        if held is not None:
            await super().on_event(held)

    # ----------------------------------------------------------------- the model
    @on(ModelLoader.Loaded)
    def _model_loaded(self, event: ModelLoader.Loaded) -> None:
        if self.chat.session is not None:  # another model, while this one keeps answering
            self.workflow.model_loaded(event.model)
            return
        self.chat.start(event.model)
        self.workflow.first_model_loaded()

    @on(ModelLoader.Failed)
    def _model_failed(self, event: ModelLoader.Failed) -> None:
        if self.chat.session is not None:  # a switch failed: keep talking to the model we have
            self.workflow.model_failed(event.reason)
            return
        self.load_error = event.reason
        from minigpt_tui.tui.screens.error import ErrorScreen  # dialogs load when first shown

        self.push_screen(ErrorScreen("Could not load the model", self.load_error))

    @on(Chat.ReplyEnded)
    def _reply_ended(self) -> None:
        self.workflow.between_replies()

    # ----------------------------------------------------------------- app-wide keys
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in WORKFLOW_ACTIONS:
            return not self.chat.hidden  # nothing is shown: nothing changes unseen
        return True

    async def action_quit(self) -> None:
        # The last save; one that fails stays with the history store, which `chat` tries
        # again once the screen is gone and otherwise ends in one error line (exit 1).
        self.chat.close()
        self.exit()

    def action_switch_model(self) -> None:
        self.workflow.pick_model()

    def action_system_text(self) -> None:
        self.workflow.edit_system_text()

    def action_theme(self) -> None:
        self.workflow.pick_theme()

    def action_search(self) -> None:
        self.workflow.search()
