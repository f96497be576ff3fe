"""The conversation's branches on screen: switch between them, edit a message, branch at a token.

The tree itself lives in the session (`ChatSession.sync_branches`, history schema 2); this
keeps the transcript showing the branch chosen now, with "‹k/n›" on every message that has
others. Editing your message (`edit_at`) or continuing a reply from another token starts a new
branch beside the old one, which is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.generation import TokenEvent
from minigpt_tui.tui.session import Prompt
from minigpt_tui.tui.widgets.status_bar import StatusBar
from minigpt_tui.tui.widgets.transcript import MessageView

if TYPE_CHECKING:
    from minigpt_tui.tui.app import ChatApp


class Branching:
    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.edit_at: int | None = None  # editing your message at this index (a new branch)

    def kept_reply(self, view: MessageView) -> None:
        """A reply joined the conversation: keep its tokens on its branch, label branches."""
        assert self.app.session is not None
        self.app.session.sync_branches().path[-1].tokens = list(view.tokens)
        self.label()

    def label(self) -> None:
        """Show "‹k/n›" on every message that has other branches."""
        app = self.app
        if app.session is None or app.mode != "chat":
            return
        tree = app.session.sync_branches()
        for i, view in enumerate(app.transcript.messages[: len(tree.path)]):
            k, n = tree.position(i)
            branch = (k, n) if n > 1 else None
            if branch != view.branch:
                view.branch = branch
                view.refresh_text()

    def show(self) -> None:
        """Draw the conversation again along the branch shown now."""
        app = self.app
        assert app.session is not None
        app.transcript.clear()
        for node in app.session.branches.path:
            view = app.transcript.add(node.role, app.template.speaker(node.role), node.text)
            view.tokens = list(node.tokens)
        app.transcript.anchor()
        self.label()
        app.sync_context()

    def switch(self, index: int, step: int) -> None:
        """Show the message at `index` from its next (`step` 1) or previous (-1) branch."""
        app = self.app
        if app.session is None or app.generating:
            app.say("Still replying: Esc stops it.", timeout=2)
            return
        self.edit_at = None
        if not app.session.switch_branch(index, step):
            app.say("No other branch that way.", timeout=2)
            return
        self.show()
        k, n = app.session.branches.position(index)
        app.query_one(StatusBar).state = f"branch {k}/{n}"
        app.conversations.save()

    def edit(self, index: int) -> None:
        """Put your message at `index` in the message box: sending it makes a new branch."""
        app = self.app
        if app.session is None or app.generating:
            return
        self.edit_at = index
        app.prompt_input.load_text(app.session.turns[index].text)
        app.prompt_input.focus()
        app.query_one(StatusBar).state = "editing: Enter sends it as a new branch"

    def apply_edit(self) -> None:
        """Sending an edited message: the conversation goes back to before it (kept)."""
        session = self.app.session
        if self.edit_at is None or session is None:
            return
        if self.edit_at >= len(session.turns):  # the conversation changed meanwhile
            self.edit_at = None
            return
        session.sync_branches()
        session.turns = session.turns[: self.edit_at]
        self.edit_at = None
        session.sync_branches()
        self.show()

    def pick_alternative(self, n: int) -> None:
        """The inspector's alternative `n` for the token selected in the transcript."""
        found = self.app.transcript.alternative(n)
        if found is not None:
            self.branch_at(*found)

    def branch_at(self, index: int, position: int, token: int) -> None:
        """Continue reply `index` from its token `position`, made `token` instead: a new
        branch beside the old reply, which is kept."""
        app = self.app
        session, backend = app.session, app.backend
        if session is None or backend is None or app.generating:
            app.say("Still replying: Esc stops it.", timeout=2)
            return
        if token == session.tokenizer.eot:
            app.say("That alternative ends the text: pick another.", timeout=3)
            return
        view = app.transcript.messages[index]
        old = view.tokens
        session.sync_branches()
        session.turns = session.turns[:index]
        session.sync_branches()  # the old reply stays in the tree beside the new one
        self.show()
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
        app.prompt_len = min(len(ids), session.block_size)
        target = app.transcript.add("model", app.template.model)
        target.append([*kept, chosen])
        app.transcript.anchor()
        app.replies.start(generation, target)
