"""What the chat app talks about, without any UI: turns, the document, and the prompt.

The app keeps one ChatSession; the prompt it builds is what the model sees next. In chat mode
that is the dialogue transcript rendered by `DialogueTemplate`, oldest turns dropped until it
fits the model's block (with room left for the reply); in complete mode it is the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.sampling import SamplingSettings
from model.tokenizer import Tokenizer, encode_lenient


@dataclass
class TokenInfo:
    text: str
    prob: float
    alternatives: list[tuple[int, float]]


@dataclass
class Prompt:
    ids: list[int]
    dropped_chars: list[str]  # characters the vocabulary lacks, left out of the prompt
    dropped_turns: int  # oldest turns left out so that the rest fits the block
    truncated: bool  # even the last turn is longer than the block: only its tail is seen


@dataclass
class ChatSession:
    tokenizer: Tokenizer
    block_size: int
    settings: SamplingSettings
    template: DialogueTemplate = field(default_factory=DialogueTemplate)
    mode: str = "chat"  # "chat" or "complete"
    turns: list[Turn] = field(default_factory=list)
    document: str = ""  # complete mode: the text the model continues

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

    def stop_strings(self) -> list[str]:
        return self.template.stop_strings() if self.mode == "chat" else []

    def last_reply(self) -> str:
        if self.mode == "complete":
            return self.document
        return next((t.text for t in reversed(self.turns) if t.role == "model"), "")
