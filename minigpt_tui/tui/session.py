"""What the chat app talks about, without any UI: the mode, turns, the document, and the prompt.

The app keeps one ChatSession, the one owner of the conversation's state (its mode included);
the prompt it builds is what the model sees next. In chat mode that is the dialogue transcript
rendered by `DialogueTemplate`, oldest turns dropped until it fits the model's block (with room
left for the reply); in complete mode it is the document. The tokenizer and block size are the
loaded model's: another model can take over a session by replacing them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from minigpt_tui.branches import Branches
from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.generation import Backend, Generation
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
    template: DialogueTemplate = field(default_factory=DialogueTemplate)
    mode: str = "chat"  # one of dialogue.MODES: "chat" or "complete"
    turns: list[Turn] = field(default_factory=list)
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

    def __post_init__(self) -> None:
        self.sampler = Sampler(self.settings)
        self.sampler_seed = self.settings.seed

    def reserve(self) -> int:
        """Tokens left free for the reply when the transcript is windowed."""
        return max(0, min(self.settings.max_new_tokens, self.block_size // 4))

    def prompt(self) -> Prompt:
        if self.mode == "complete":
            ids, dropped = encode_lenient(self.tokenizer, self.document)
            return Prompt(ids, dropped, 0, len(ids) > self.block_size)
        budget = max(1, self.block_size - self.reserve())

        def encode(first: int) -> tuple[list[int], list[str]]:
            return encode_lenient(self.tokenizer, self.template.render(self.turns[first:]))

        # The fewest oldest turns to drop so that the rest fits: a binary search, since the
        # prompt only gets shorter as turns are dropped (keep at least the last turn).
        lo, hi = 0, max(0, len(self.turns) - 1)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(encode(mid)[0]) <= budget:
                hi = mid
            else:
                lo = mid + 1
        ids, dropped = encode(lo)
        return Prompt(ids, dropped, lo, len(ids) > self.block_size)

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
        return next((t.text for t in reversed(self.turns) if t.role == "model"), "")

    def reset(self) -> None:
        """A new conversation, in the same mode."""
        self.turns = []
        self.document = self.document_before = self.document_after = ""
        self.told_window = False
        self.branches = Branches()

    def restore(self, turns: list[Turn]) -> None:
        """Continue a saved conversation: its turns, or in complete mode its document."""
        if self.mode == "complete":
            self.document = "".join(t.text for t in turns)
        else:
            self.turns = list(turns)

    def sync_branches(self) -> Branches:
        """The tree with `turns` as its shown path (a changed list of turns becomes a branch)."""
        self.branches.follow(self.turns)
        return self.branches

    def restore_branches(self, tree: Branches) -> None:
        """Continue a saved conversation with all its branches (chat mode)."""
        self.branches = tree
        self.turns = tree.turns()

    def switch_branch(self, index: int, step: int) -> bool:
        """Show the branch `step` away from turn `index`; False when there is none."""
        moved = self.sync_branches().switch(index, step)
        self.turns = self.branches.turns()
        return moved

    def saved_turns(self, document: str) -> list[Turn]:
        """What history keeps of the conversation: its turns, or the document as shown now."""
        if self.mode == "complete":
            return [Turn("document", document)] if document else []
        return list(self.turns)
