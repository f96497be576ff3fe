"""The conversation as a whole: start a new one (Ctrl+N), reopen one from history (F2, or a
search hit), save it after every reply, on New, a mode switch and quit, export it (Ctrl+S).

ConversationSaver (tui/saving.py) keeps the record without any UI; this brings it up to date
with the session and the screen, and says when saving or writing fails (the chat goes on).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from minigpt_tui.dialogue import MODES
from minigpt_tui.history import Conversation
from minigpt_tui.tui.screens.export import ExportScreen
from minigpt_tui.tui.screens.history import HistoryScreen
from minigpt_tui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from minigpt_tui.tui.app import ChatApp


class Conversations:
    def __init__(self, app: ChatApp) -> None:
        self.app = app

    def new(self) -> None:
        app = self.app
        app.branching.edit_at = None
        app.sender.cancel()
        self.save()
        app.saver.start_new(app.mode)
        if app.session is not None:
            app.session.reset()
        app.transcript.clear()
        app.document.load_text("")
        app.query_one(StatusBar).state = "new conversation"
        app.sync_context()

    def pick(self) -> None:
        """The history screen; the conversation picked there is reopened."""
        if len(self.app.screen_stack) > 1:
            return
        self.app.push_screen(HistoryScreen(self.app.history), self.reopen)

    def reopen(self, conv_id: int | None) -> None:
        if conv_id is None:
            return
        conv = self.app.history.load(conv_id)
        if conv is None:
            self.app.say("That conversation is gone.", severity="warning")
            return
        self.new()
        self.app.saver.conversation = conv  # saving from now on updates it
        self.open(conv)

    def open(self, conv: Conversation) -> None:
        """Show a saved conversation; the next message continues it."""
        app = self.app
        app.mode = conv.mode if conv.mode in MODES else "chat"
        app.show_mode()
        if app.session is not None:
            app.session.restore(conv.turns)
            if conv.tree is not None and app.mode == "chat":
                app.session.restore_branches(conv.tree)
        app.workflow.restore_system(conv)
        if app.mode == "complete":
            app.document.load_text("".join(t.text for t in conv.turns))
        else:
            for turn in conv.turns:
                app.transcript.add(turn.role, app.template.speaker(turn.role), turn.text)
            app.transcript.anchor()
            app.branching.label()
        app.query_one(StatusBar).state = "reopened"
        app.sync_context()

    def record(self) -> Conversation:
        app = self.app
        model = app.backend.info.name if app.backend is not None else ""
        return app.saver.record(app.mode, model, app.template, app.session, app.document.text)

    def save(self) -> None:
        self.record()
        problem = self.app.saver.save()
        if problem:  # keep chatting, say so
            self.app.say(problem, severity="warning")

    def export(self) -> None:
        if len(self.app.screen_stack) > 1:
            return
        if not self.record().turns:
            self.app.say("Nothing to export yet.", timeout=2)
            return
        self.app.push_screen(ExportScreen(self.app.saver.export_name()), self._export_to)

    def _export_to(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            written = self.app.saver.export(path, self.app.template)
        except OSError as e:
            self.app.say(f"Could not write {path}: {e.strerror or e}", severity="error")
            return
        self.app.say(f"Wrote {written}", timeout=4)
