"""The conversation's branches on screen: switch between them, edit a message, branch at a token.

The tree itself lives in the session (ChatSession keeps it in step with every change of its
turns; history schema 2); this keeps the transcript showing the branch chosen now, with "‹k/n›"
on every message that has others. Editing your message (`edit_at`) or continuing a reply from
another token starts a new branch beside the old one, which is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.dialogue import LayoutError
from minigpt_tui.generation import TokenEvent, stop_ids
from minigpt_tui.tui.session import Prompt
from minigpt_tui.tui.widgets.transcript import MessageView

if TYPE_CHECKING:
    from minigpt_tui.tui.chat.chat import Chat


class Branching:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.edit_at: int | None = None  # editing your message at this index (a new branch)

    def kept_reply(self, view: MessageView) -> None:
        """A reply joined the conversation: keep its tokens on its branch, label branches."""
        assert self.chat.session is not None
        self.chat.session.keep_tokens(view.tokens)
        self.label()

    def label(self) -> None:
        """Show "‹k/n›" on every message that has other branches."""
        chat = self.chat
        if chat.session is None or chat.mode != "chat":
            return
        tree = chat.session.branches
        for i, view in enumerate(chat.transcript.messages[: len(tree.path)]):
            k, n = tree.position(i)
            branch = (k, n) if n > 1 else None
            if branch != view.branch:
                view.branch = branch
                view.refresh_text()

    def show(self) -> None:
        """Draw the conversation again along the branch shown now."""
        chat = self.chat
        assert chat.session is not None
        chat.transcript.clear()
        for node in chat.session.branches.path:
            view = chat.transcript.add(node.role, chat.template.speaker(node.role), node.text)
            view.tokens = list(node.tokens)
        chat.transcript.anchor()
        self.label()
        chat.sync_context()

    def switch(self, index: int, step: int) -> None:
        """Show the message at `index` from its next (`step` 1) or previous (-1) branch."""
        chat = self.chat
        if chat.session is None or chat.generating:
            chat.say("Still replying: Esc stops it.", timeout=2)
            return
        self.edit_at = None
        if not chat.session.switch_branch(index, step):
            chat.say("No other branch that way.", timeout=2)
            return
        self.show()
        k, n = chat.session.branches.position(index)
        chat.state = f"branch {k}/{n}"
        chat.conversations.save()

    def edit(self, index: int) -> None:
        """Put your message at `index` in the message box: sending it makes a new branch."""
        chat = self.chat
        if chat.session is None or chat.generating:
            return
        self.edit_at = index
        chat.prompt_input.load_text(chat.session.turns[index].text)
        chat.prompt_input.focus()
        chat.state = "editing: Enter sends it as a new branch"

    def apply_edit(self) -> None:
        """Sending an edited message: the conversation goes back to before it (kept)."""
        session = self.chat.session
        if self.edit_at is None or session is None:
            return
        if self.edit_at >= len(session.turns):  # the conversation changed meanwhile
            self.edit_at = None
            return
        session.cut_at(self.edit_at)
        self.edit_at = None
        self.show()

    def pick_alternative(self, n: int) -> None:
        """The inspector's alternative `n` for the token selected in the transcript."""
        found = self.chat.transcript.alternative(n)
        if found is not None:
            self.branch_at(*found)

    def branch_at(self, index: int, position: int, token: int) -> None:
        """Continue reply `index` from its token `position`, made `token` instead: a new
        branch beside the old reply, which is kept."""
        chat = self.chat
        session, backend = chat.session, chat.backend
        if session is None or backend is None or chat.generating:
            chat.say("Still replying: Esc stops it.", timeout=2)
            return
        if token in stop_ids(session.tokenizer):
            what = "text" if token == session.tokenizer.eot else "reply"
            chat.say(f"That alternative ends the {what}: pick another.", timeout=3)
            return
        old = chat.transcript.messages[index].tokens
        session.cut_at(index)  # the old reply stays in the tree beside the new one
        self.show()
        try:
            prompt = session.prompt()
        except LayoutError as e:
            chat.say(f"Cannot ask the model: {e}", severity="error", timeout=8)
            return
        kept = [t for t in old[:position] if t.token >= 0]
        chosen = TokenEvent(
            token,
            session.tokenizer.decode([token]),
            dict(old[position].alternatives).get(token, 0.0),
            old[position].alternatives,
        )
        ids = prompt.ids + [t.token for t in kept] + [token]
        generation = session.generation(backend, Prompt(ids, [], prompt.dropped_turns, False))
        chat.sync_context(prompt=len(ids))
        target = chat.transcript.add("model", chat.template.speaker("model"))
        target.append([*kept, chosen])
        chat.transcript.anchor()
        chat.replies.start(generation, target)
