"""`minigpt-tui chat`: talk to a model in the terminal while it streams, and steer it.

The app lays out the widgets and routes keys and messages to the parts that do the work:

    ModelLoader         loads the model in a worker          -> Loaded / Failed
    startup             the first model starts the session   (tui/startup.py)
    ChatSession         the mode, turns, document, prompt    (tui/session.py, no UI)
    MessageSender       send, regenerate, take the reply in  (tui/sending.py)
    ReplyController     start -> stream -> finish / cancel   -> Started / Tokens / Finished
    Conversations       new, reopen, save, export            (tui/conversations.py)
    ConversationSaver   the record history keeps             (tui/saving.py, no UI)
    Branching           switch, edit, branch at a token      (tui/branching.py)
    probability_view    Ctrl+T and the token inspector       (tui/probability_view.py)
    inspecting          the score and compare screens        (tui/inspecting.py)
    keys                the bindings, and when each works    (tui/keys.py)

The settings panel and the keys change the one SamplingSettings object that the running
Generation reads on every token; Escape ends the reply at the next token.

The workflow features (tui/workflow.py) plug in here: switching models (F6, `--follow`), the
system text (F7), themes (F10), history search (Ctrl+F), and the settings file's key map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import events, on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.widgets import ContentSwitcher, Footer, Static, TextArea

from minigpt_tui.dialogue import DialogueTemplate
from minigpt_tui.generation import Generation, GenerationStats
from minigpt_tui.history import HistoryStore
from minigpt_tui.safe_text import plain
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui import inspecting, keys, probability_view, startup
from minigpt_tui.tui.branching import Branching
from minigpt_tui.tui.conversations import Conversations
from minigpt_tui.tui.loading import ModelLoader
from minigpt_tui.tui.reply import ReplyController
from minigpt_tui.tui.saving import ConversationSaver
from minigpt_tui.tui.screens.help import HelpScreen
from minigpt_tui.tui.sending import MessageSender
from minigpt_tui.tui.session import ChatSession
from minigpt_tui.tui.steering import nudge_temperature, step_top_k
from minigpt_tui.tui.widgets.prompt_input import PromptInput, SteerableTextArea
from minigpt_tui.tui.widgets.settings_panel import SettingsPanel, TokenInspector
from minigpt_tui.tui.widgets.status_bar import StatusBar
from minigpt_tui.tui.widgets.transcript import Transcript
from minigpt_tui.tui.workflow import Workflow
from model.backend import Backend

MIN_WIDTH, MIN_HEIGHT = 50, 12


class ChatApp(App[None]):
    CSS_PATH = ["app.tcss", "workflow.tcss"]  # noqa: RUF012
    TITLE = "minigpt-tui chat"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = keys.BINDINGS

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
        self.history = history or HistoryStore.memory()
        self.backend: Backend | None = None
        self.session: ChatSession | None = None  # made when the model is loaded
        self._start_mode = mode  # the session's mode until there is a session
        self.models = ModelLoader(self)
        self.replies = ReplyController(self)
        self.saver = ConversationSaver(self.history, model_label, mode)
        self.last_stats: GenerationStats | None = None
        self.prompt_len = 0  # tokens of the prompt the model sees (while replying: of its own)
        self._burst = keys.EscapeBurst()
        self.load_error = ""  # why the model could not be loaded, if it could not
        self.sender = MessageSender(self)
        self.conversations = Conversations(self)
        self.branching = Branching(self)
        self.workflow = Workflow(self)

    def setup_workflow(self, **options: Any) -> None:
        """The settings file's key map and theme, the model's path, `--follow` (see Workflow)."""
        self.workflow.configure(**options)

    # ----------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with ContentSwitcher(initial="transcript", id="pane"):
                    yield Transcript(id="transcript")
                    yield SteerableTextArea(
                        id="document",
                        soft_wrap=True,
                        placeholder="Write the start of a text; Ctrl+G lets the model continue it.",
                    )
                yield PromptInput(id="prompt", placeholder="Loading the model…")
            yield SettingsPanel(self.settings, self.template, self.mode, id="settings")
        yield StatusBar(id="status")
        yield Static(
            f"Terminal too small: make it at least {MIN_WIDTH}×{MIN_HEIGHT}.", id="too-small"
        )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#settings").border_title = "Settings"
        self.document.border_title = "Document"
        self.query_one(StatusBar).model = self.model_label
        if self.history.notice:
            self.say(self.history.notice, severity="warning", timeout=10)
        (self.prompt_input if self.mode == "chat" else self.document).focus()
        self._check_size()
        self.workflow.mount()
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

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size | None = None) -> None:
        size = size or self.size
        small = size.width < MIN_WIDTH or size.height < MIN_HEIGHT
        main = self.screen_stack[0]
        main.set_class(small, "-too-small")
        # The message box is hidden then: what is typed must not be sent (or typed) unseen.
        main.query_one("#main").disabled = small
        if not small and self.focused is None and len(self.screen_stack) == 1:
            (self.prompt_input if self.mode == "chat" else self.document).focus()
            if self.sender.send_when_loaded and self.session is not None:
                self.sender.send()  # typed ahead while small: send it now that it shows

    @property
    def too_small(self) -> bool:
        return bool(self.screen_stack) and self.screen_stack[0].has_class("-too-small")

    @property
    def mode(self) -> str:
        """ "chat" or "complete": the session's (before it exists, the one it will start in)."""
        return self.session.mode if self.session is not None else self._start_mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if self.session is not None:
            self.session.mode = mode
        else:
            self._start_mode = mode

    def show_mode(self) -> None:
        chat = self.mode == "chat"
        self.query_one(ContentSwitcher).current = "transcript" if chat else "document"
        self.prompt_input.display = chat
        self.prompt_input.placeholder = "Message  (Enter send · Ctrl+J new line · F1 help)"
        (self.prompt_input if chat else self.document).focus()
        self.query_one(SettingsPanel).set_mode(self.mode)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return keys.allowed(self, action)

    # ----------------------------------------------------------------- helpers
    def say(self, message: str, **kwargs: Any) -> None:
        """A toast; never markup, since it may quote the user's text or a path."""
        self.notify(plain(message), markup=False, **kwargs)

    @property
    def generation(self) -> Generation | None:
        """The reply streaming now, if any."""
        return self.replies.reply.generation if self.replies.reply is not None else None

    @property
    def generating(self) -> bool:
        return self.replies.running

    @property
    def transcript(self) -> Transcript:
        return self.query_one(Transcript)

    @property
    def prompt_input(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def document(self) -> TextArea:
        return self.query_one("#document", TextArea)

    def sync_context(self, extra: int = 0) -> None:
        """The status bar's context: the prompt's tokens (and `extra` made since) of the block."""
        if self.session is None:
            return
        if not self.generating:
            self.prompt_len = len(self.session.prompt().ids)
        status = self.query_one(StatusBar)
        status.context = min(self.prompt_len + extra, self.session.block_size)

    # ----------------------------------------------------------------- the model
    @on(ModelLoader.Loaded)
    def _model_loaded(self, event: ModelLoader.Loaded) -> None:
        startup.model_loaded(self, event.model)

    @on(ModelLoader.Failed)
    def _model_failed(self, event: ModelLoader.Failed) -> None:
        startup.model_failed(self, event.reason)

    # ----------------------------------------------------------------- replies (tui/sending.py)
    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        self.sender.send()

    def action_send(self) -> None:
        self.sender.send()

    action_continue = action_send  # Ctrl+G in complete mode, shown as "Continue" there

    def action_regenerate(self) -> None:
        self.sender.regenerate()

    def action_stop(self) -> None:
        self.sender.stop()

    @on(ReplyController.Started)
    def _reply_started(self) -> None:
        self.sender.started()

    @on(ReplyController.Tokens)
    def _reply_tokens(self, event: ReplyController.Tokens) -> None:
        self.sender.tokens(event)

    @on(ReplyController.Finished)
    def _reply_finished(self, event: ReplyController.Finished) -> None:
        self.sender.finished(event)

    # ----------------------------------------------------------------- steering
    def action_temperature(self, delta: float) -> None:
        self._settings_changed(nudge_temperature(self.settings, delta))

    def action_top_k(self, step: int) -> None:
        self._settings_changed(step_top_k(self.settings, step))

    # [ ] { }: the same, allowed only while a reply streams or no text box has focus.
    action_steer_temperature, action_steer_top_k = action_temperature, action_top_k

    def _settings_changed(self, what: str) -> None:
        self.query_one(SettingsPanel).sync()
        self.query_one(StatusBar).state = f"replying… · {what}" if self.generating else what

    @on(SettingsPanel.ModeChanged)
    def _mode_changed(self, event: SettingsPanel.ModeChanged) -> None:
        if event.mode == self.mode:
            return
        self.conversations.new()
        self.mode = event.mode
        self.show_mode()
        self.sync_context()

    @on(SettingsPanel.NamesChanged)
    def _names_changed(self) -> None:
        for view in self.transcript.messages:
            view.speaker = self.template.speaker(view.role)
            view.refresh_text()
        self.sync_context()

    # ----------------------------------------------------------------- conversations
    def action_new(self) -> None:
        self.conversations.new()

    def action_history(self) -> None:
        self.conversations.pick()

    def action_export(self) -> None:
        self.conversations.export()

    # ----------------------------------------------------------------- views
    def action_copy(self) -> None:
        text = self.session.last_reply() if self.session else ""
        if not text:
            self.say("Nothing to copy yet.", timeout=2)
            return
        self.copy_to_clipboard(text)
        self.say(f"Copied {len(text)} characters.", timeout=2)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(keys.HELP_KEYS, self.workflow.help_notes(keys.HELP_NOTES)))

    def action_toggle_probs(self) -> None:
        probability_view.toggle(self)

    def action_toggle_panel(self) -> None:
        panel = self.query_one(SettingsPanel)
        panel.display = not panel.display

    @on(Transcript.TokenSelected)
    def _token_selected(self, event: Transcript.TokenSelected) -> None:
        probability_view.inspect(self, event.token)

    async def action_quit(self) -> None:
        self.sender.cancel()
        self.conversations.save()
        self.exit()

    # ----------------------------------------------------------------- inspecting the model
    def action_score(self) -> None:
        inspecting.open_score(self)

    def action_compare(self) -> None:
        inspecting.open_compare(self)

    # ----------------------------------------------------------------- branches (tui/branching.py)
    @on(Transcript.SwitchBranch)
    def _switch_branch(self, event: Transcript.SwitchBranch) -> None:
        self.branching.switch(event.index, event.step)

    @on(Transcript.Edit)
    def _edit(self, event: Transcript.Edit) -> None:
        self.branching.edit(event.index)

    @on(TokenInspector.Picked)
    def _alternative_clicked(self, event: TokenInspector.Picked) -> None:
        self.branching.pick_alternative(event.n)

    @on(Transcript.BranchAt)
    def _branch_at(self, event: Transcript.BranchAt) -> None:
        self.branching.branch_at(event.index, event.position, event.token)

    # ----------------------------------------------------------------- workflow (tui/workflow.py)
    def action_switch_model(self) -> None:
        self.workflow.pick_model()

    def action_system_text(self) -> None:
        self.workflow.edit_system_text()

    def action_theme(self) -> None:
        self.workflow.pick_theme()

    def action_search(self) -> None:
        self.workflow.search()
