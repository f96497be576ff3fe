"""The conversation as a whole: start a new one (Ctrl+N), reopen one from history (Ctrl+L, or
a search hit), save it after every reply, on New, a mode switch and quit, export it (Ctrl+S).

ConversationSaver (tui/saving.py) keeps the record without any UI; this brings it up to date
with the session and the screen, and says when saving or writing fails (the chat goes on).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from minigpt_tui.dialogue import MODES
from minigpt_tui.history import Conversation

if TYPE_CHECKING:
    from minigpt_tui.tui.chat.chat import Chat


class Conversations:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def new(self) -> None:
        chat = self.chat
        chat.branching.edit_at = None
        chat.sender.cancel()
        self.save()
        chat.saver.start_new(chat.mode)
        if chat.session is not None:
            chat.session.reset()
        chat.transcript.clear()
        if chat.document_area is not None:
            chat.document.load_text("")
        chat.state = "new conversation"
        chat.sync_context()

    def pick(self) -> None:
        """The history screen; the conversation picked there is reopened."""
        from minigpt_tui.tui.screens.history import HistoryScreen  # loaded when first shown

        screen = HistoryScreen(self.chat.history, self.chat.saver.conversation.id)
        self.chat.app.push_screen(screen, self.reopen)

    def reopen(self, conv_id: int | None) -> None:
        if conv_id is None:
            return
        conv = self.chat.history.load(conv_id)
        if conv is None:
            self.chat.say("That conversation is gone.", severity="warning")
            return
        self.new()
        self.chat.saver.conversation = conv  # saving from now on updates it
        self.open(conv)

    def open(self, conv: Conversation) -> None:
        """Show a saved conversation; the next message continues it."""
        chat = self.chat
        chat.show_mode(conv.mode if conv.mode in MODES else "chat")
        if chat.session is not None:
            chat.session.restore(conv.turns, conv.tree)
        system = conv.settings.get("system")
        chat.template.system = system if isinstance(system, str) else chat.default_system
        if chat.mode == "complete":
            chat.document.load_text("".join(t.text for t in conv.turns))
        else:
            for turn in conv.turns:
                chat.transcript.add(turn.role, chat.template.speaker(turn.role), turn.text)
            chat.transcript.anchor()
            chat.branching.label()
        chat.state = "reopened"
        chat.sync_context()

    def open_at(self, conv_id: int, seq: int) -> None:
        """A search hit: reopen its conversation and scroll to message `seq`, marked."""
        chat = self.chat
        self.reopen(conv_id)
        if chat.mode != "chat":
            return
        views = chat.transcript.messages
        if 0 <= seq < len(views):
            view = views[seq]
            view.add_class("-hit")
            chat.transcript.anchor(False)
            transcript = chat.transcript  # scrolled once the chat screen shows again
            chat.app.call_after_refresh(transcript.scroll_to_widget, view, top=True, animate=False)

    def record(self) -> Conversation:
        chat = self.chat
        model = chat.backend.info.name if chat.backend is not None else ""
        document = chat.document.text if chat.document_area is not None else ""
        return chat.saver.record(chat.mode, model, chat.template, chat.session, document)

    def save(self) -> None:
        """Save now; a failure is said in a toast and stays in the status bar until a save
        works (and at quit: ChatApp.action_quit)."""
        self.record()
        problem = self.chat.saver.save()
        if problem and problem != self.chat.unsaved:  # keep chatting, say so (once)
            self.chat.say(problem, severity="error", timeout=10)
        # Also an earlier conversation the store still holds unsaved (it retries at quit).
        self.chat.unsaved = problem or self.chat.history.unsaved_error() or ""

    def export(self) -> None:
        if not self.record().turns:
            self.chat.say("Nothing to export yet.", timeout=2)
            return
        from minigpt_tui.tui.screens.export import ExportScreen  # loaded when first shown

        self.chat.app.push_screen(ExportScreen(self.chat.saver.export_name()), self._export_to)

    def _export_to(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            written = self.chat.saver.export(path, self.chat.template)
        except OSError as e:
            self.chat.say(f"Could not write {path}: {e.strerror or e}", severity="error")
            return
        self.chat.say(f"Wrote {written}", timeout=4)
