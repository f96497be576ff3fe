"""The conversation on screen as history keeps it: saved after every reply, on New, on a mode
switch and on quit; written to a file on Ctrl+S. No UI here: failures come back as text."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from minigpt_tui.dialogue import RoleTemplate, Template
from minigpt_tui.history import (
    Conversation,
    HistorySaveError,
    HistoryStore,
    default_export_name,
    export,
)
from minigpt_tui.tui.session import ChatSession


class ConversationSaver:
    def __init__(self, store: HistoryStore, model_label: str, mode: str) -> None:
        self.store = store
        self.model_label = model_label
        self.conversation = Conversation(None, "", mode, model_label)  # saved under its id

    def start_new(self, mode: str) -> None:
        self.conversation = Conversation(None, "", mode, self.model_label)

    def reopen(self, conv_id: int) -> Conversation | None:
        """The saved conversation, which later saves update; None when it is gone."""
        conv = self.store.load(conv_id)
        if conv is not None:
            self.conversation = conv
        return conv

    def record(
        self,
        mode: str,
        model: str,
        template: Template,
        session: ChatSession | None,
        document: str,
    ) -> Conversation:
        """Bring the record up to date with the session (`document`: the text shown now)."""
        conv = self.conversation
        conv.mode = mode
        conv.model = self.model_label or model
        conv.settings = {"user": template.user, "bot": template.model}
        if isinstance(template, RoleTemplate):  # a chat model's turns: roles
            conv.settings["layout"] = "roles"
        if template.system:
            conv.settings["system"] = template.system
        if session is not None:
            conv.turns = session.saved_turns(document)
            conv.tree = session.branches if mode == "chat" else None
        return conv

    def save(self) -> str | None:
        """Save the record (once it has turns); why that failed, in one line, if it did. The
        store keeps a conversation it could not write and tries again at quit (`chat` then
        ends in one error line if that fails too: HistoryStore.flush); one deleted meanwhile
        (by another chat) is written again."""
        if not self.conversation.turns:
            return None
        try:
            self.store.save(self.conversation)
        except HistorySaveError as e:  # "the conversation was not saved to ... (why)"
            return str(e)
        except (sqlite3.Error, OSError) as e:  # the caller keeps chatting
            return f"the conversation was not saved ({e})"
        return None

    def export_name(self) -> str:
        return default_export_name(self.conversation)

    def export(self, path: Path, template: Template) -> Path:
        """Write the record to `path` (.md: Markdown, .json/.jsonl: a `{"messages": [...]}`
        record, else plain text); OSError if it cannot."""
        return export(self.conversation, path, {"user": template.user, "model": template.model})
