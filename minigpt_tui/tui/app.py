"""`minigpt-tui chat`: talk to a model in the terminal while it streams, and steer it.

The app lays out the widgets and routes keys and messages between the parts that do the work:

    ModelLoader         loads the model in a worker          -> Loaded / Failed
    ChatSession         the mode, turns, document, prompt    (tui/session.py, no UI)
    ReplyController     start -> stream -> finish / cancel   -> Started / Tokens / Finished
    ConversationSaver   history after every reply, export    (tui/saving.py)

The settings panel and the keys change the one SamplingSettings object that the running
Generation reads on every token; Escape ends the reply at the next token.

The workflow features (tui/workflow.py) plug in here: switching models (F6, `--follow`), the
system text (F7), themes (F8), history search (Ctrl+F), and the settings file's key map.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import events, on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.widgets import ContentSwitcher, Footer, Input, Static, TextArea

from minigpt_tui.dialogue import MODES, DialogueTemplate, Turn
from minigpt_tui.engine import Generation, GenerationStats, TokenEvent
from minigpt_tui.history import Conversation, HistoryStore
from minigpt_tui.safe_text import plain
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui import keys
from minigpt_tui.tui.loading import ModelLoader, describe
from minigpt_tui.tui.reply import DocumentTarget, ReplyController, ReplyTarget
from minigpt_tui.tui.saving import ConversationSaver
from minigpt_tui.tui.screens.error import ErrorScreen
from minigpt_tui.tui.screens.export import ExportScreen
from minigpt_tui.tui.screens.help import HelpScreen
from minigpt_tui.tui.screens.history import HistoryScreen
from minigpt_tui.tui.session import ChatSession, Prompt
from minigpt_tui.tui.steering import nudge_temperature, step_top_k
from minigpt_tui.tui.widgets.prompt_input import PromptInput, SteerableTextArea
from minigpt_tui.tui.widgets.settings_panel import SettingsPanel, TokenInspector
from minigpt_tui.tui.widgets.status_bar import StatusBar
from minigpt_tui.tui.widgets.transcript import MessageView, Transcript
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
        self._prompt_len = 0  # tokens of the prompt the model sees (while replying: of its own)
        self._send_when_loaded = False
        self._burst = keys.EscapeBurst()
        self.load_error = ""  # why the model could not be loaded, if it could not
        self._edit_at: int | None = None  # editing your message at this index (a new branch)
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
            if self._send_when_loaded and self.session is not None:
                self.action_send()  # typed ahead while small: send it now that it shows

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

    def _show_mode(self) -> None:
        chat = self.mode == "chat"
        self.query_one(ContentSwitcher).current = "transcript" if chat else "document"
        self.prompt_input.display = chat
        self.prompt_input.placeholder = "Message  (Enter send · Ctrl+J new line · F1 help)"
        (self.prompt_input if chat else self.document).focus()
        self.query_one(SettingsPanel).set_mode(self.mode)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.too_small and action not in ("quit", "stop", "help"):
            return False  # nothing is shown: nothing may be sent, redone or changed unseen
        on_main = len(self.screen_stack) == 1
        if action == "stop":
            return on_main and self.generating
        if action in ("steer_temperature", "steer_top_k"):
            # [ ] { } steer sampling while a reply streams, or when no text box has focus.
            return on_main and (self.generating or not isinstance(self.focused, TextArea | Input))
        if action in ("temperature", "top_k"):
            return on_main
        if action == "continue":
            return self.mode == "complete"
        if action in ("switch_model", "system_text", "theme", "search"):
            return on_main
        return True

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

    def _sync_context(self, extra: int = 0) -> None:
        if self.session is None:
            return
        if not self.generating:
            self._prompt_len = len(self.session.prompt().ids)
        status = self.query_one(StatusBar)
        status.context = min(self._prompt_len + extra, self.session.block_size)

    def _set_steering(self, on: bool) -> None:
        """While a reply streams, [ ] { } steer sampling instead of typing into the text boxes."""
        for box in self.query(SteerableTextArea):
            box.steering = on
        self.refresh_bindings()

    # ----------------------------------------------------------------- the model
    @on(ModelLoader.Loaded)
    def _model_loaded(self, event: ModelLoader.Loaded) -> None:
        if self.session is not None:  # another model, while this one keeps answering
            self.workflow.model_loaded(event.model)
            return
        backend = self.backend = event.model.backend
        self.session = ChatSession(
            event.model.tokenizer, backend.block_size, self.settings, self.template, self.mode
        )
        status = self.query_one(StatusBar)
        status.model = self.model_label or backend.info.name
        status.backend = backend.name
        status.params = backend.info.config.num_params()
        status.block_size = backend.block_size
        status.state = "ready"
        self.workflow.first_model_loaded()
        self._show_mode()
        self._sync_context()
        if self._send_when_loaded:
            self.action_send()

    @on(ModelLoader.Failed)
    def _model_failed(self, event: ModelLoader.Failed) -> None:
        if self.session is not None:  # a switch failed: keep talking to the model we have
            self.workflow.model_failed(event.reason)
            return
        self.load_error = event.reason
        self.push_screen(ErrorScreen("Could not load the model", self.load_error))

    # ----------------------------------------------------------------- replies
    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        self.action_send()

    def action_send(self) -> None:
        if self.too_small:  # nothing of the conversation shows: never send unseen
            return
        if self.session is None:  # typed ahead while the model loads: send once it is ready
            if self.prompt_input.text.strip() or self.mode == "complete":
                self._send_when_loaded = True
                self.query_one(StatusBar).state = "loading… (will send when ready)"
            return
        self._send_when_loaded = False
        if self.generating:
            self.say("Still replying: Esc stops it.", timeout=2)
            return
        if self.mode == "complete":
            self.session.document = self.session.document_before = self.document.text
            self._start_reply()
            return
        text = self.prompt_input.text
        if not text.strip():
            return
        self.prompt_input.remember(text)
        self.prompt_input.load_text("")
        self._apply_edit()
        self.session.turns.append(Turn("user", text))
        self.transcript.add("user", self.template.user, text)
        self._label_branches()
        self._start_reply()

    def action_continue(self) -> None:
        self.action_send()

    def _start_reply(self) -> None:
        session, backend = self.session, self.backend
        assert session is not None and backend is not None
        prompt = session.prompt()
        for notice in session.notices(prompt):
            self.say(notice.text, severity=notice.severity, timeout=notice.timeout)
        generation = session.generation(backend, prompt)
        self._prompt_len = min(len(prompt.ids), session.block_size)
        target: ReplyTarget
        if self.mode == "chat":
            target = self.transcript.add("model", self.template.model)
            self.transcript.anchor()
        else:
            self.document.read_only = True
            target = DocumentTarget(self.document)
        self.replies.start(generation, target)

    @on(ReplyController.Started)
    def _reply_started(self) -> None:
        self.query_one(StatusBar).state = "replying…"
        self._set_steering(True)

    @on(ReplyController.Tokens)
    def _reply_tokens(self, event: ReplyController.Tokens) -> None:
        if event.reply is not self.replies.reply:
            return
        if isinstance(event.reply.target, MessageView) and self.transcript.show_probs:
            self.query_one(TokenInspector).show_token(event.tokens[-1], self._decode)
        self._sync_context(len(event.reply.generation.generated))

    @on(ReplyController.Finished)
    def _reply_finished(self, event: ReplyController.Finished) -> None:
        reply, gen = event.reply, event.reply.generation
        if not self.replies.end(reply):
            return  # a reply from a conversation that is gone (new / reopened)
        assert self.session is not None
        self.last_stats = gen.stats
        status = self.query_one(StatusBar)
        status.ttft = gen.stats.time_to_first_token
        status.tokens_per_sec = gen.stats.tokens_per_second
        status.state = "stopped" if gen.stats.stop_reason == "cancelled" else "ready"
        if isinstance(reply.target, MessageView):
            # The view's text: a reply continued from another token starts with its old part.
            text = DialogueTemplate.clean(reply.target.text)
            if text:
                self.session.turns.append(Turn("model", text))
                reply.target.set_text(text)
                self._kept_reply(reply.target)
            else:  # nothing said: Ctrl+R asks again
                reply.target.remove()
        else:
            self.document.read_only = False
            self.session.document = self.session.document_after = self.document.text
        if event.error is not None:
            self.say(f"Generation failed: {describe(event.error)}", severity="error", timeout=10)
        self._save()
        self._sync_context()
        self._set_steering(False)
        self.workflow.between_replies()

    def action_stop(self) -> None:
        if self.generating:
            self.replies.stop()
            self.query_one(StatusBar).state = "stopping…"

    def _cancel_reply(self) -> None:
        """Drop the streaming reply (New, a mode switch, Quit), keeping what it has said so
        far in the conversation, as Esc does, so that the save that follows has it."""
        reply = self.replies.reply
        if reply is None:
            return
        said = reply.generation.text  # a snapshot: the worker may add a token after this
        self.replies.cancel()
        if isinstance(reply.target, MessageView) and self.session is not None:
            text = DialogueTemplate.clean(said)
            if text:
                self.session.turns.append(Turn("model", text))
        self.document.read_only = False
        self._set_steering(False)

    def action_regenerate(self) -> None:
        session = self.session
        if session is None or self.generating:
            return
        if self.mode == "complete":
            if self.document.text != session.document_after:
                self.say("The document changed since the last continuation; Ctrl+G continues it.")
                return
            self.document.load_text(session.document_before)
            session.document = session.document_before
        elif not session.turns:
            return
        elif session.turns[-1].role == "model":
            session.turns.pop()
            last = self.transcript.last_model_view()
            if last is not None:
                last.remove()
        self._start_reply()

    # ----------------------------------------------------------------- steering
    def action_steer_temperature(self, delta: float) -> None:
        self.action_temperature(delta)

    def action_steer_top_k(self, step: int) -> None:
        self.action_top_k(step)

    def action_temperature(self, delta: float) -> None:
        self._settings_changed(nudge_temperature(self.settings, delta))

    def action_top_k(self, step: int) -> None:
        self._settings_changed(step_top_k(self.settings, step))

    def _settings_changed(self, what: str) -> None:
        self.query_one(SettingsPanel).sync()
        self.query_one(StatusBar).state = f"replying… · {what}" if self.generating else what

    @on(SettingsPanel.ModeChanged)
    def _mode_changed(self, event: SettingsPanel.ModeChanged) -> None:
        if event.mode == self.mode:
            return
        self.action_new()
        self.mode = event.mode
        self._show_mode()
        self._sync_context()

    @on(SettingsPanel.NamesChanged)
    def _names_changed(self) -> None:
        for view in self.transcript.messages:
            view.speaker = self.template.speaker(view.role)
            view.refresh_text()
        self._sync_context()

    # ----------------------------------------------------------------- conversations
    def action_new(self) -> None:
        self._edit_at = None
        self._cancel_reply()
        self._save()
        self.saver.start_new(self.mode)
        if self.session is not None:
            self.session.reset()
        self.transcript.clear()
        self.document.load_text("")
        self.query_one(StatusBar).state = "new conversation"
        self._sync_context()

    def action_history(self) -> None:
        if len(self.screen_stack) > 1:
            return
        self.push_screen(HistoryScreen(self.history), self._reopen)

    def _reopen(self, conv_id: int | None) -> None:
        if conv_id is None:
            return
        conv = self.history.load(conv_id)
        if conv is None:
            self.say("That conversation is gone.", severity="warning")
            return
        self.action_new()
        self.saver.conversation = conv  # saving from now on updates it
        self.open_conversation(conv)

    def open_conversation(self, conv: Conversation) -> None:
        """Show a saved conversation; the next message continues it."""
        self.mode = conv.mode if conv.mode in MODES else "chat"
        self._show_mode()
        if self.session is not None:
            self.session.restore(conv.turns)
            if conv.tree is not None and self.mode == "chat":
                self.session.restore_branches(conv.tree)
        self.workflow.restore_system(conv)
        if self.mode == "complete":
            self.document.load_text("".join(t.text for t in conv.turns))
        else:
            for turn in conv.turns:
                self.transcript.add(turn.role, self.template.speaker(turn.role), turn.text)
            self.transcript.anchor()
            self._label_branches()
        self.query_one(StatusBar).state = "reopened"
        self._sync_context()

    def _record(self) -> Conversation:
        model = self.backend.info.name if self.backend is not None else ""
        return self.saver.record(self.mode, model, self.template, self.session, self.document.text)

    def _save(self) -> None:
        self._record()
        problem = self.saver.save()
        if problem:  # keep chatting, say so
            self.say(problem, severity="warning")

    def action_export(self) -> None:
        if len(self.screen_stack) > 1:
            return
        if not self._record().turns:
            self.say("Nothing to export yet.", timeout=2)
            return
        self.push_screen(ExportScreen(self.saver.export_name()), self._export_to)

    def _export_to(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            written = self.saver.export(path, self.template)
        except OSError as e:
            self.say(f"Could not write {path}: {e.strerror or e}", severity="error")
            return
        self.say(f"Wrote {written}", timeout=4)

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
        on = not self.transcript.show_probs
        self.transcript.set_show_probs(on)
        for widget in self.query("#inspector, #inspector-title"):
            widget.set_class(not on, "-hidden")
        self.say(
            "Probability view "
            + ("on: Tab to the conversation, ← → pick a token" if on else "off"),
            timeout=3,
        )

    def action_toggle_panel(self) -> None:
        panel = self.query_one(SettingsPanel)
        panel.display = not panel.display

    @on(Transcript.TokenSelected)
    def _token_selected(self, event: Transcript.TokenSelected) -> None:
        self.query_one(TokenInspector).show_token(event.token, self._decode)

    def _decode(self, token: int) -> str:
        assert self.session is not None
        return self.session.tokenizer.decode([token])

    async def action_quit(self) -> None:
        self._cancel_reply()
        self._save()
        self.exit()

    # ----------------------------------------------------------------- inspecting the model
    def action_score(self) -> None:
        """F8: score a text with the loaded model (the screen is imported on first use)."""
        if len(self.screen_stack) > 1:
            return
        if self.backend is None or self.session is None:
            self.say("The model is still loading.", timeout=2)
            return
        from minigpt_tui.streams import stream_slots
        from minigpt_tui.tui.screens.score import ScoreScreen

        # Its own KV cache where the backend allows (a reply may still be streaming).
        slot = stream_slots(self.backend, 1, self.replies.backend_lock)[0]
        self.push_screen(ScoreScreen(slot.backend, self.session.tokenizer, slot.lock))

    # ----------------------------------------------------------------- branches
    def _kept_reply(self, view: MessageView) -> None:
        """A reply joined the conversation: keep its tokens on its branch, label branches."""
        assert self.session is not None
        self.session.sync_branches().path[-1].tokens = list(view.tokens)
        self._label_branches()

    def _label_branches(self) -> None:
        """Show "‹k/n›" on every message that has other branches."""
        if self.session is None or self.mode != "chat":
            return
        tree = self.session.sync_branches()
        for i, view in enumerate(self.transcript.messages[: len(tree.path)]):
            k, n = tree.position(i)
            branch = (k, n) if n > 1 else None
            if branch != view.branch:
                view.branch = branch
                view.refresh_text()

    def _show_branch(self) -> None:
        """Draw the conversation again along the branch shown now."""
        assert self.session is not None
        self.transcript.clear()
        for node in self.session.branches.path:
            view = self.transcript.add(node.role, self.template.speaker(node.role), node.text)
            view.tokens = list(node.tokens)
        self.transcript.anchor()
        self._label_branches()
        self._sync_context()

    @on(Transcript.SwitchBranch)
    def _switch_branch(self, event: Transcript.SwitchBranch) -> None:
        if self.session is None or self.generating:
            self.say("Still replying: Esc stops it.", timeout=2)
            return
        self._edit_at = None
        if not self.session.switch_branch(event.index, event.step):
            self.say("No other branch that way.", timeout=2)
            return
        self._show_branch()
        k, n = self.session.branches.position(event.index)
        self.query_one(StatusBar).state = f"branch {k}/{n}"
        self._save()

    @on(Transcript.Edit)
    def _edit(self, event: Transcript.Edit) -> None:
        if self.session is None or self.generating:
            return
        self._edit_at = event.index
        self.prompt_input.load_text(self.session.turns[event.index].text)
        self.prompt_input.focus()
        self.query_one(StatusBar).state = "editing: Enter sends it as a new branch"

    def _apply_edit(self) -> None:
        """Sending an edited message: the conversation goes back to before it (kept)."""
        if self._edit_at is None or self.session is None:
            return
        if self._edit_at >= len(self.session.turns):  # the conversation changed meanwhile
            self._edit_at = None
            return
        self.session.sync_branches()
        self.session.turns = self.session.turns[: self._edit_at]
        self._edit_at = None
        self.session.sync_branches()
        self._show_branch()

    @on(TokenInspector.Picked)
    def _alternative_clicked(self, event: TokenInspector.Picked) -> None:
        found = self.transcript.alternative(event.n)
        if found is not None:
            self._branch_at(*found)

    @on(Transcript.BranchAt)
    def _branch_at_key(self, event: Transcript.BranchAt) -> None:
        self._branch_at(event.index, event.position, event.token)

    def _branch_at(self, index: int, position: int, token: int) -> None:
        """Continue reply `index` from its token `position`, made `token` instead: a new
        branch beside the old reply, which is kept."""
        session, backend = self.session, self.backend
        if session is None or backend is None or self.generating:
            self.say("Still replying: Esc stops it.", timeout=2)
            return
        if token == session.tokenizer.eot:
            self.say("That alternative ends the text: pick another.", timeout=3)
            return
        view = self.transcript.messages[index]
        old = view.tokens
        session.sync_branches()
        session.turns = session.turns[:index]
        session.sync_branches()  # the old reply stays in the tree beside the new one
        self._show_branch()
        prompt = session.prompt()
        kept = [t for t in old[:position] if t.token >= 0]
        chosen = TokenEvent(
            token,
            session.tokenizer.decode([token]),
            dict(old[position].alternatives).get(token, 0.0),
            old[position].alternatives,
        )
        ids = prompt.ids + [t.token for t in kept] + [token]
        generation = session.generation(backend, Prompt(ids, [], prompt.dropped_turns, False))
        self._prompt_len = min(len(ids), session.block_size)
        target = self.transcript.add("model", self.template.model)
        target.append([*kept, chosen])
        self.transcript.anchor()
        self.replies.start(generation, target)

    def action_compare(self) -> None:
        """F9: one prompt, 2-4 panes with their own settings, streaming side by side."""
        if len(self.screen_stack) > 1:
            return
        if self.backend is None or self.session is None:
            self.say("The model is still loading.", timeout=2)
            return
        from minigpt_tui.tui.screens.compare import CompareScreen

        prompt = self.prompt_input.text if self.mode == "chat" else self.document.text
        self.push_screen(
            CompareScreen(
                self.backend,
                self.session.tokenizer,
                self.replies.backend_lock,
                self.settings,
                prompt=prompt,
            )
        )

    # ----------------------------------------------------------------- workflow (tui/workflow.py)
    def action_switch_model(self) -> None:
        self.workflow.pick_model()

    def action_system_text(self) -> None:
        self.workflow.edit_system_text()

    def action_theme(self) -> None:
        self.workflow.pick_theme()

    def action_search(self) -> None:
        self.workflow.search()
