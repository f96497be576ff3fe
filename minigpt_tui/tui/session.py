"""What the chat app talks about, without any UI: the mode, turns, the document, and the prompt.

The chat widget keeps one ChatSession, the one owner of the conversation's state (its mode
included): every change to the turns goes through its methods (`add_turn`, `cut_at`,
`drop_last_reply`, `switch_branch`, `restore`, `reset`), which keep the branch tree in step, so
`turns` is always the tree's shown path. The prompt it builds is what the model sees next. In
chat mode that is the conversation laid out by its template (minigpt_tui/dialogue.py: the
dialogue transcript for a text continuer, the chat format's turns for a chat model), oldest
turns dropped until it fits the model's block (with room left for the reply); in complete mode
it is the document. The tokenizer, block size and template are the loaded model's: another
model can take over a session by replacing them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from minigpt_tui.branches import Branches
from minigpt_tui.dialogue import DialogueTemplate, Template, Turn
from minigpt_tui.generation import Backend, Generation, TokenEvent
from minigpt_tui.sampling import Sampler, SamplingSettings
from model.tokenizer import Tokenizer, encode_lenient


@dataclass
class Prompt:
    ids: list[int]
    dropped_chars: list[str]  # characters the vocabulary lacks, left out of the prompt
    dropped_turns: int  # oldest turns left out so that the rest fits the block
    truncated: bool  # even the last turn is longer than the block: only its tail is seen


@dataclass
class Notice:
    """Something the user should know about a prompt before the reply starts."""

    text: str
    severity: Literal["information", "warning"]  # as Textual's notify takes it
    timeout: float


@dataclass
class ChatSession:
    tokenizer: Tokenizer
    block_size: int
    settings: SamplingSettings
    template: Template = field(default_factory=DialogueTemplate)
    mode: str = "chat"  # one of dialogue.MODES: "chat" or "complete"
    document: str = ""  # complete mode: the text the model continues
    # Complete mode: the document before the last continuation, and right after it (Ctrl+R
    # redoes the continuation only while the document is still as the model left it).
    document_before: str = ""
    document_after: str = ""
    told_window: bool = False  # said that the oldest turns fell out of the context
    # Chat mode: every branch of the conversation; `turns` is the one shown (see branches.py).
    branches: Branches = field(default_factory=Branches, repr=False, compare=False)
    # One sampler for the session: with a seed the whole conversation repeats, and a
    # regenerated reply still differs from the one it replaces.
    sampler: Sampler = field(init=False, repr=False, compare=False)
    sampler_seed: int | None = field(init=False, repr=False, compare=False)

    _turns: list[Turn] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.sampler = Sampler(self.settings)
        self.sampler_seed = self.settings.seed

    # ----------------------------------------------------------------- the turns (one writer)
    @property
    def turns(self) -> list[Turn]:
        """The conversation shown now (chat mode): the branch tree's current path. A copy:
        change it with the methods below."""
        return list(self._turns)

    def _set_turns(self, turns: list[Turn]) -> None:
        self._turns = list(turns)
        self.branches.follow(self._turns)  # a changed list of turns becomes a branch

    def add_turn(self, turn: Turn) -> None:
        """Your message or the model's reply, at the end of the branch shown."""
        self._set_turns([*self._turns, turn])

    def cut_at(self, index: int) -> None:
        """Go back to before turn `index` (an edited message or a reply branched at a token
        continues from there); what was cut stays in the tree as a branch."""
        self._set_turns(self._turns[:index])

    def drop_last_reply(self) -> bool:
        """Take back the model's last reply (Ctrl+R asks again; the old one stays a branch);
        False when the last turn is not the model's."""
        if not self._turns or self._turns[-1].role != "model":
            return False
        self.cut_at(len(self._turns) - 1)
        return True

    def reserve(self) -> int:
        """Tokens left free for the reply when the transcript is windowed."""
        return max(0, min(self.settings.max_new_tokens, self.block_size // 4))

    def prompt(self) -> Prompt:
        """What the model sees next. dialogue.LayoutError when a chat model's conversation
        cannot be laid out (a message with no character the model knows)."""
        if self.mode == "complete":
            ids, dropped = encode_lenient(self.tokenizer, self.document)
            return Prompt(ids, dropped, 0, len(ids) > self.block_size)
        budget = max(1, self.block_size - self.reserve())
        fitted = self.template.fit(self.tokenizer, self._turns, budget)
        return Prompt(
            fitted.ids,
            fitted.dropped_chars,
            fitted.dropped_turns,
            len(fitted.ids) > self.block_size,
        )

    def generation(self, backend: Backend, prompt: Prompt) -> Generation:
        """The reply to `prompt`, ready to stream (it reads `settings` on every token)."""
        self.settings.stop = self.stop_strings()
        if self.settings.seed != self.sampler_seed:  # a seed typed into the panel
            self.sampler_seed = self.settings.seed
            self.sampler.reseed(self.settings.seed)
        return Generation(
            backend,
            self.tokenizer,
            prompt.ids,
            self.settings,
            cancel=threading.Event(),
            sampler=self.sampler,
        )

    def notices(self, prompt: Prompt) -> list[Notice]:
        """What to tell the user about `prompt`: left-out characters, a text longer than the
        context, and (once per conversation) that the oldest turns no longer fit."""
        out: list[Notice] = []
        if prompt.dropped_chars:
            shown = " ".join(repr(c) for c in prompt.dropped_chars[:12])
            out.append(
                Notice(f"Left out characters the model does not know: {shown}", "warning", 6)
            )
        if prompt.truncated:
            out.append(
                Notice(
                    f"Text longer than the model's context ({len(prompt.ids)} tokens): "
                    f"it sees the last {self.block_size}. Your text is kept.",
                    "warning",
                    6,
                )
            )
        elif prompt.dropped_turns and not self.told_window:
            self.told_window = True  # once per conversation: it stays true from here on
            out.append(
                Notice(
                    f"The {prompt.dropped_turns} oldest turns no longer fit the context; "
                    "the model does not see them.",
                    "information",
                    4,
                )
            )
        return out

    def stop_strings(self) -> list[str]:
        return self.template.stop_strings() if self.mode == "chat" else []

    def last_reply(self) -> str:
        if self.mode == "complete":
            return self.document
        return next((t.text for t in reversed(self._turns) if t.role == "model"), "")

    def reset(self) -> None:
        """A new conversation, in the same mode."""
        self.branches = Branches()
        self._turns = []
        self.document = self.document_before = self.document_after = ""
        self.told_window = False

    def restore(self, turns: list[Turn], tree: Branches | None = None) -> None:
        """Continue a saved conversation: its turns (with all their branches when `tree` is
        given, chat mode), or in complete mode its document."""
        if self.mode == "complete":
            self.document = "".join(t.text for t in turns)
        elif tree is not None:
            self.branches = tree
            self._turns = tree.turns()
        else:
            self._set_turns(turns)

    def switch_branch(self, index: int, step: int) -> bool:
        """Show the branch `step` away from turn `index`; False when there is none."""
        moved = self.branches.switch(index, step)
        self._turns = self.branches.turns()
        return moved

    def keep_tokens(self, tokens: list[TokenEvent]) -> None:
        """The tokens of the last reply (the probability view and branching at a token)."""
        self.branches.path[-1].tokens = list(tokens)

    def saved_turns(self, document: str) -> list[Turn]:
        """What history keeps of the conversation: its turns, or the document as shown now."""
        if self.mode == "complete":
            return [Turn("document", document)] if document else []
        return self.turns
