"""`minigpt-tui chat`: talk to a model in the terminal while it streams, and steer it.

The model loads in a worker thread; each reply is generated in another one, which pushes
TokenEvents into a queue that the UI drains about 30 times a second (so a fast model never
floods the UI and a slow one never freezes it). The settings panel and the keys mutate the one
SamplingSettings object that the running Generation reads every token; Escape sets its cancel
Event, which the loop checks between tokens.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.widgets import ContentSwitcher, Footer, Input, Static, TextArea

from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.engine import Generation, GenerationStats
from minigpt_tui.history import Conversation, HistoryStore, default_export_name, export
from minigpt_tui.safe_text import plain
from minigpt_tui.sampling import Sampler, SamplingSettings
from minigpt_tui.tui.screens.error import ErrorScreen
from minigpt_tui.tui.screens.export import ExportScreen
from minigpt_tui.tui.screens.help import HelpScreen
from minigpt_tui.tui.screens.history import HistoryScreen
from minigpt_tui.tui.session import ChatSession, TokenInfo
from minigpt_tui.tui.widgets.prompt_input import PromptInput, SteerableTextArea
from minigpt_tui.tui.widgets.settings_panel import SettingsPanel, TokenInspector
from minigpt_tui.tui.widgets.status_bar import StatusBar
from minigpt_tui.tui.widgets.transcript import MessageView, Transcript
from model.backend import Backend
from model.tokenizer import Tokenizer

FLUSH_HZ = 30  # UI updates per second while a reply streams
MIN_WIDTH, MIN_HEIGHT = 50, 12
TOP_K_LADDER = (0, 1, 2, 3, 5, 10, 20, 40, 100, 200, 500, 1000)

# Every key, for the help screen and the README (the bindings below are the source of truth
# for what each key does; this is how they are explained).
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
    ("[ / ]", "temperature −/+ 0.1 (while replying or outside the message box)"),
    ("{ / }", "top-k down/up (while replying or outside the message box)"),
    ("F2 / F3", "temperature −/+ 0.1 (always)"),
    ("F4 / F5", "top-k down/up (always)"),
    ("Ctrl+P", "show/hide the settings panel"),
    ("Tab / Shift+Tab", "move between message box, conversation and settings"),
    ("F1", "this help"),
    ("Ctrl+Q", "quit (the conversation is saved)"),
]
HELP_NOTES = (
    "Settings apply from the next token, even mid-reply; a new seed from the next reply "
    "(a seed makes the whole conversation repeatable, Ctrl+R still gives a new reply). "
    "In History: Enter opens, Del deletes. Conversations are saved after every reply "
    "(not with --no-history)."
)


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "minigpt-tui chat"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [  # noqa: RUF012
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
        Binding("ctrl+q", "quit", "Quit"),
    ]

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
        # One sampler for the session: with --seed the whole conversation repeats, and a
        # regenerated reply still differs from the one it replaces.
        self.sampler = Sampler(self.settings)
        self._sampler_seed = self.settings.seed
        self.template = template or DialogueTemplate()
        self.mode = mode
        self.history = history or HistoryStore.memory()
        self.backend: Backend | None = None
        self.session: ChatSession | None = None
        self.conversation = Conversation(None, "", mode, model_label)
        self.generation: Generation | None = None  # the reply streaming now, if any
        self.last_stats: GenerationStats | None = None
        self._queue: collections.deque[TokenInfo] = collections.deque()  # worker -> UI
        self._backend_lock = threading.Lock()
        self._reply_view: MessageView | None = None
        self._doc_before = ""  # complete mode: the document before the last continuation
        self._doc_after = ""  # ... and right after it (regenerate only if it is unchanged)
        self._prompt_len = 0
        self._send_when_loaded = False
        self._told_window = False  # said that the oldest turns fell out of the context
        self.load_error = ""  # why the model could not be loaded, if it could not

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
        status = self.query_one(StatusBar)
        status.model = self.model_label
        self._drain_timer = self.set_interval(1 / FLUSH_HZ, self._drain_tokens, pause=True)
        if self.history.notice:
            self.say(self.history.notice, severity="warning", timeout=10)
        (self.prompt_input if self.mode == "chat" else self.document).focus()
        self._check_size()
        self._load()

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size | None = None) -> None:
        size = size or self.size
        small = size.width < MIN_WIDTH or size.height < MIN_HEIGHT
        self.screen.set_class(small, "-too-small")

    # ----------------------------------------------------------------- loading
    @work(thread=True, exit_on_error=False, name="load")
    def _load(self) -> None:
        """Load the model and its tokenizer (a GPT-2 BPE takes a moment) off the UI thread."""
        try:
            backend = self.loader()
            tokenizer = backend.info.tokenizer()
        except Exception as e:  # shown on an error screen: the app cannot go on without it
            self.call_from_thread(self._load_failed, e)
            return
        self.call_from_thread(self._loaded, backend, tokenizer)

    def _load_failed(self, error: BaseException) -> None:
        self.load_error = _describe(error)
        self.push_screen(ErrorScreen("Could not load the model", self.load_error))

    def _loaded(self, backend: Backend, tokenizer: Tokenizer) -> None:
        self.backend = backend
        info = backend.info
        self.session = ChatSession(
            tokenizer, backend.block_size, self.settings, self.template, self.mode
        )
        status = self.query_one(StatusBar)
        status.model = self.model_label or info.name
        status.backend = backend.name
        status.params = info.config.num_params()
        status.block_size = backend.block_size
        status.state = "ready"
        self._apply_mode(self.mode)
        self._sync_context()
        if self._send_when_loaded:
            self.action_send()

    # ----------------------------------------------------------------- helpers
    def say(self, message: str, **kwargs: Any) -> None:
        """A toast; never markup, since it may quote the user's text or a path."""
        self.notify(plain(message), markup=False, **kwargs)

    @property
    def generating(self) -> bool:
        return self.generation is not None

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

    def _apply_mode(self, mode: str) -> None:
        self.mode = mode
        self.conversation.mode = mode
        if self.session is not None:
            self.session.mode = mode
        self.query_one(ContentSwitcher).current = "transcript" if mode == "chat" else "document"
        self.prompt_input.display = mode == "chat"
        self.prompt_input.placeholder = "Message  (Enter send · Ctrl+J new line · F1 help)"
        if mode == "chat":
            self.prompt_input.focus()
        else:
            self.document.focus()
        self.query_one(SettingsPanel).set_mode(mode)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
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
        return True

    # ----------------------------------------------------------------- sending
    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        self.action_send()

    def action_send(self) -> None:
        if self.session is None:  # typed ahead while the model loads: send once it is ready
            if self.prompt_input.text.strip() or self.mode == "complete":
                self._send_when_loaded = True
                self.query_one(StatusBar).state = "loading… (will send when ready)"
            return
        if self.generating:
            self.say("Still replying: Esc stops it.", timeout=2)
            return
        if self.mode == "complete":
            self.session.document = self.document.text
            self._doc_before = self.document.text
            self._start()
            return
        text = self.prompt_input.text
        if not text.strip():
            return
        self.prompt_input.remember(text)
        self.prompt_input.load_text("")
        self.session.turns.append(Turn("user", text))
        self.transcript.add("user", self.template.user, text)
        self._start()

    def action_continue(self) -> None:
        self.action_send()

    def _start(self) -> None:
        assert self.session is not None and self.backend is not None
        prompt = self.session.prompt()
        if prompt.dropped_chars:
            shown = " ".join(repr(c) for c in prompt.dropped_chars[:12])
            self.say(
                f"Left out characters the model does not know: {shown}",
                severity="warning",
                timeout=6,
            )
        if prompt.truncated:
            self.say(
                f"Text longer than the model's context ({len(prompt.ids)} tokens): "
                f"it sees the last {self.session.block_size}. Your text is kept.",
                severity="warning",
                timeout=6,
            )
        elif prompt.dropped_turns and not self._told_window:
            self._told_window = True  # once per conversation: it stays true from here on
            self.say(
                f"The {prompt.dropped_turns} oldest turns no longer fit the context; "
                "the model does not see them.",
                timeout=4,
            )
        self.settings.stop = self.session.stop_strings()
        if self.settings.seed != self._sampler_seed:  # a seed typed into the panel
            self._sampler_seed = self.settings.seed
            self.sampler.reseed(self.settings.seed)
        gen = Generation(
            self.backend,
            self.session.tokenizer,
            prompt.ids,
            self.settings,
            cancel=threading.Event(),
            sampler=self.sampler,
        )
        self.generation = gen
        self._prompt_len = min(len(prompt.ids), self.session.block_size)
        if self.mode == "chat":
            self._reply_view = self.transcript.add("model", self.template.model)
            self.transcript.anchor()
        else:
            self.document.read_only = True
        self.query_one(StatusBar).state = "replying…"
        self._set_steering(True)
        self._drain_timer.resume()
        self._run(gen)

    @work(thread=True, exit_on_error=False, group="generate")
    def _run(self, gen: Generation) -> None:
        error: BaseException | None = None
        # One generation at a time on the backend's cache: a reply cancelled by New or a mode
        # switch may still be finishing its last token when the next one starts.
        with self._backend_lock:
            try:
                for event in gen:
                    self._queue.append(TokenInfo(event.text, event.prob, event.alternatives))
            except Exception as e:  # a backend failure mid-reply: report it, keep the app
                error = e
        self.call_from_thread(self._finished, gen, error)

    def _drain_tokens(self) -> None:
        """Move queued tokens onto the screen (runs FLUSH_HZ times a second while replying)."""
        tokens: list[TokenInfo] = []
        while self._queue:
            tokens.append(self._queue.popleft())
        if not tokens or self.generation is None:
            return
        if self.mode == "chat" and self._reply_view is not None:
            self._reply_view.append(tokens)
            if self.transcript.show_probs:
                self.query_one(TokenInspector).show_token(tokens[-1], self._decode)
        elif self.mode == "complete":
            text = "".join(t.text for t in tokens)
            if text:
                self.document.insert(text, self.document.document.end)
                self.document.scroll_end(animate=False)
        self._sync_context(len(self.generation.generated))

    def _finished(self, gen: Generation, error: BaseException | None) -> None:
        if gen is not self.generation:
            self._queue.clear()
            return  # a reply from a conversation that is gone (new / reopened)
        self._drain_tokens()
        self._drain_timer.pause()
        self.generation = None
        self.last_stats = gen.stats
        status = self.query_one(StatusBar)
        status.ttft = gen.stats.time_to_first_token
        status.tokens_per_sec = gen.stats.tokens_per_second
        status.state = "stopped" if gen.stats.stop_reason == "cancelled" else "ready"
        assert self.session is not None
        if self.mode == "chat":
            reply = DialogueTemplate.clean(gen.text)
            if reply:
                self.session.turns.append(Turn("model", reply))
                if self._reply_view is not None:
                    self._reply_view.set_text(reply)
            elif self._reply_view is not None:  # nothing said: Ctrl+R asks again
                self._reply_view.remove()
        else:
            self.document.read_only = False
            self.session.document = self._doc_after = self.document.text
        if error is not None:
            self.say(f"Generation failed: {_describe(error)}", severity="error", timeout=10)
        self._save()
        self._sync_context()
        self._set_steering(False)

    # ----------------------------------------------------------------- actions
    def action_stop(self) -> None:
        if self.generation is not None:
            self.generation.cancel.set()
            self.query_one(StatusBar).state = "stopping…"

    def _cancel_running(self) -> None:
        if self.generation is not None:
            self.generation.cancel.set()
            self.generation = None
            self._drain_timer.pause()
            self._queue.clear()
            self.document.read_only = False
            self._set_steering(False)

    def _set_steering(self, on: bool) -> None:
        """While a reply streams, [ ] { } steer sampling instead of typing into the text boxes."""
        for box in self.query(SteerableTextArea):
            box.steering = on
        self.refresh_bindings()

    def action_steer_temperature(self, delta: float) -> None:
        self.action_temperature(delta)

    def action_steer_top_k(self, step: int) -> None:
        self.action_top_k(step)

    def action_temperature(self, delta: float) -> None:
        self.settings.temperature = round(max(0.0, self.settings.temperature + delta), 2)
        self._settings_changed(f"temperature {self.settings.temperature:g}")

    def action_top_k(self, step: int) -> None:
        k = self.settings.top_k
        below = [v for v in TOP_K_LADDER if v < k]
        above = [v for v in TOP_K_LADDER if v > k]
        if step < 0 and below:
            self.settings.top_k = below[-1]
        elif step > 0 and above:
            self.settings.top_k = above[0]
        self._settings_changed(f"top-k {self.settings.top_k or 'off'}")

    def _settings_changed(self, what: str) -> None:
        self.query_one(SettingsPanel).sync()
        self.query_one(StatusBar).state = f"replying… · {what}" if self.generating else what

    def action_regenerate(self) -> None:
        if self.session is None or self.generating:
            return
        if self.mode == "complete":
            if self.document.text != self._doc_after:
                self.say("The document changed since the last continuation; Ctrl+G continues it.")
                return
            self.document.load_text(self._doc_before)
            self.session.document = self._doc_before
            self._start()
            return
        if not self.session.turns:
            return
        if self.session.turns[-1].role == "model":
            self.session.turns.pop()
            last = self.transcript.last_model_view()
            if last is not None:
                last.remove()
        self._start()

    def action_new(self) -> None:
        self._cancel_running()
        self._save()
        self.conversation = Conversation(None, "", self.mode, self.model_label)
        self._told_window = False
        if self.session is not None:
            self.session.turns = []
            self.session.document = ""
        self.transcript.clear()
        self.document.load_text("")
        self._doc_before = self._doc_after = ""
        self._reply_view = None
        self.query_one(StatusBar).state = "new conversation"
        self._sync_context()

    def action_copy(self) -> None:
        text = self.session.last_reply() if self.session else ""
        if not text:
            self.say("Nothing to copy yet.", timeout=2)
            return
        self.copy_to_clipboard(text)
        self.say(f"Copied {len(text)} characters.", timeout=2)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(HELP_KEYS, HELP_NOTES))

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
        self.conversation = conv
        self.open_conversation(conv)

    def open_conversation(self, conv: Conversation) -> None:
        """Show a saved conversation; the next message continues it."""
        self._apply_mode(conv.mode if conv.mode in ("chat", "complete") else "chat")
        if conv.mode == "complete":
            text = "".join(t.text for t in conv.turns)
            self.document.load_text(text)
            if self.session is not None:
                self.session.document = text
        else:
            if self.session is not None:
                self.session.turns = list(conv.turns)
            for turn in conv.turns:
                self.transcript.add(turn.role, self.template.speaker(turn.role), turn.text)
            self.transcript.anchor()
        self.query_one(StatusBar).state = "reopened"
        self._sync_context()

    def action_export(self) -> None:
        if len(self.screen_stack) > 1:
            return
        self._snapshot_conversation()
        if not self.conversation.turns:
            self.say("Nothing to export yet.", timeout=2)
            return
        self.push_screen(ExportScreen(default_export_name(self.conversation)), self._export_to)

    def _export_to(self, path: Path | None) -> None:
        if path is None:
            return
        names = {"user": self.template.user, "model": self.template.model}
        try:
            written = export(self.conversation, path, names)
        except OSError as e:
            self.say(f"Could not write {path}: {e.strerror or e}", severity="error")
            return
        self.say(f"Wrote {written}", timeout=4)

    def action_toggle_probs(self) -> None:
        on = not self.transcript.show_probs
        self.transcript.set_show_probs(on)
        for widget in self.query("#inspector, #inspector-title"):
            widget.set_class(not on, "-hidden")
        if on and not self.transcript.show_probs:
            return
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

    @on(SettingsPanel.ModeChanged)
    def _mode_changed(self, event: SettingsPanel.ModeChanged) -> None:
        if event.mode == self.mode:
            return
        self.action_new()
        self._apply_mode(event.mode)
        self._sync_context()

    @on(SettingsPanel.NamesChanged)
    def _names_changed(self) -> None:
        for view in self.transcript.messages:
            view.speaker = self.template.speaker(view.role)
            view.refresh_text()
        self._sync_context()

    # ----------------------------------------------------------------- history
    def _snapshot_conversation(self) -> None:
        conv = self.conversation
        conv.mode = self.mode
        conv.model = self.model_label or (self.backend.info.name if self.backend else "")
        conv.settings = {"user": self.template.user, "bot": self.template.model}
        if self.session is None:
            return
        if self.mode == "complete":
            text = self.document.text
            conv.turns = [Turn("document", text)] if text else []
        else:
            conv.turns = list(self.session.turns)

    def _save(self) -> None:
        self._snapshot_conversation()
        if not self.conversation.turns:
            return
        try:
            self.history.save(self.conversation)
        except Exception as e:  # sqlite3.Error or OSError: keep chatting, say so once
            self.say(f"Could not save history: {e}", severity="warning")

    async def action_quit(self) -> None:
        self._cancel_running()
        self._save()
        self.exit()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error) or type(error).__name__
    return " ".join(text.split()) if len(text) < 2000 else text[:2000] + "…"
