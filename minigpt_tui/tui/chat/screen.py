"""The chat screen: the layout and the keys. It passes attributes down to its widgets and takes
their messages: the chat's status values go to the status bar, the settings panel's changes
and the inspector's picks go to the chat. A dialog pushed over it disables its keys.
"""

from __future__ import annotations

import functools

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Input, Static, TextArea

from minigpt_tui.dialogue import DialogueTemplate
from minigpt_tui.history import HistoryStore
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui import keys
from minigpt_tui.tui.chat import inspecting
from minigpt_tui.tui.chat.chat import Chat
from minigpt_tui.tui.steering import nudge_temperature, step_top_k
from minigpt_tui.tui.widgets.footer import Footer
from minigpt_tui.tui.widgets.setting_field import SettingField
from minigpt_tui.tui.widgets.settings_panel import SettingsPanel, TokenInspector
from minigpt_tui.tui.widgets.status_bar import StatusBar

MIN_WIDTH, MIN_HEIGHT = 50, 12

# The chat's status values, and the status bar's attribute that shows each.
STATUS = {
    "state": "state",
    "model": "model",
    "backend_name": "backend",
    "params": "params",
    "block_size": "block_size",
    "context": "context",
    "ttft": "ttft",
    "tokens_per_sec": "tokens_per_sec",
    "checkpoint": "checkpoint",
    "unsaved": "unsaved",
}


class ChatScreen(Screen[None]):
    BINDINGS = keys.BINDINGS

    def __init__(
        self,
        settings: SamplingSettings,
        template: DialogueTemplate,
        mode: str,
        history: HistoryStore,
        model_label: str,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.template = template
        self.chat = Chat(settings, template, mode, history, model_label)
        self.help_notes = keys.HELP_NOTES  # F1's notes (the app adds the keys it remapped)

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield self.chat
            yield SettingsPanel(self.settings, self.template, self.chat.mode, id="settings")
        yield StatusBar(id="status")
        yield Static(
            f"Terminal too small: make it at least {MIN_WIDTH}×{MIN_HEIGHT}.", id="too-small"
        )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#settings").border_title = "Settings"
        status = self.query_one(StatusBar)
        for name, shown in STATUS.items():
            self.watch(self.chat, name, functools.partial(setattr, status, shown))
        self._check_size(self.app.size)

    # ----------------------------------------------------------------- too small
    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size) -> None:
        small = size.width < MIN_WIDTH or size.height < MIN_HEIGHT
        self.set_class(small, "-too-small")
        # The message box is hidden then: what is typed must not be sent (or typed) unseen.
        self.query_one("#main").disabled = small
        self.chat.hidden = small
        if not small and self.focused is None and self.is_current:
            self.chat.focus_input()
            if self.chat.sender.send_when_loaded and self.chat.session is not None:
                self.chat.sender.send()  # typed ahead while small: send it now that it shows

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return keys.allowed(
            action,
            hidden=self.chat.hidden,
            generating=self.chat.generating,
            typing=isinstance(self.focused, TextArea | Input | SettingField),
            mode=self.chat.mode,
        )

    # ----------------------------------------------------------------- messages from below
    @on(Chat.ModeShown)
    def _mode_shown(self, event: Chat.ModeShown) -> None:
        self.query_one(SettingsPanel).set_mode(event.mode)
        self.refresh_bindings()

    @on(Chat.LayoutShown)
    def _layout_shown(self, event: Chat.LayoutShown) -> None:
        self.query_one(SettingsPanel).show_names(not event.roles)

    @on(Chat.Steering)
    def _steering(self) -> None:
        self.refresh_bindings()

    @on(Chat.TokenShown)
    def _token_shown(self, event: Chat.TokenShown) -> None:
        self.query_one(TokenInspector).show_token(event.token, event.decode)

    @on(SettingsPanel.ModeChanged)
    def _mode_changed(self, event: SettingsPanel.ModeChanged) -> None:
        self.chat.change_mode(event.mode)

    @on(SettingsPanel.NamesChanged)
    def _names_changed(self) -> None:
        self.chat.names_changed()

    @on(TokenInspector.Picked)
    def _alternative_clicked(self, event: TokenInspector.Picked) -> None:
        self.chat.branching.pick_alternative(event.n)

    # ----------------------------------------------------------------- replies
    def action_send(self) -> None:
        self.chat.sender.send()

    action_continue = action_send  # Ctrl+G in complete mode, shown as "Continue" there

    def action_regenerate(self) -> None:
        self.chat.sender.regenerate()

    def action_stop(self) -> None:
        self.chat.sender.stop()

    # ----------------------------------------------------------------- steering
    def action_temperature(self, delta: float) -> None:
        self._settings_changed(nudge_temperature(self.settings, delta))

    def action_top_k(self, step: int) -> None:
        self._settings_changed(step_top_k(self.settings, step))

    # [ ] { }: the same, allowed only while a reply streams or no text box has focus.
    action_steer_temperature, action_steer_top_k = action_temperature, action_top_k

    def _settings_changed(self, what: str) -> None:
        self.query_one(SettingsPanel).sync()
        self.chat.steered(what)

    # ----------------------------------------------------------------- conversations
    def action_new(self) -> None:
        self.chat.conversations.new()

    def action_history(self) -> None:
        self.chat.conversations.pick()

    def action_export(self) -> None:
        self.chat.conversations.export()

    def action_copy(self) -> None:
        session = self.chat.session
        text = session.last_reply() if session else ""
        if not text:
            self.chat.say("Nothing to copy yet.", timeout=2)
            return
        self.app.copy_to_clipboard(text)
        self.chat.say(f"Copied {len(text)} characters.", timeout=2)

    # ----------------------------------------------------------------- views
    def action_help(self) -> None:
        from minigpt_tui.tui.screens.help import HelpScreen  # dialogs load when first shown

        self.app.push_screen(HelpScreen(keys.HELP_KEYS, self.help_notes))

    def action_toggle_probs(self) -> None:
        """Ctrl+T: colour the replies' tokens by probability; the inspector shows the
        alternatives the model weighed for the token picked (← →)."""
        on = not self.chat.transcript.show_probs
        self.chat.transcript.set_show_probs(on)
        for widget in self.query("#inspector, #inspector-title"):
            widget.set_class(not on, "-hidden")
        self.chat.say(
            "Probability view "
            + ("on: Tab to the conversation, ← → pick a token" if on else "off"),
            timeout=3,
        )

    def action_toggle_panel(self) -> None:
        panel = self.query_one(SettingsPanel)
        panel.display = not panel.display

    def action_score(self) -> None:
        inspecting.open_score(self.chat)

    def action_compare(self) -> None:
        inspecting.open_compare(self.chat)
