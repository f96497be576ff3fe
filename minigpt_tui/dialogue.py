"""How the chat lays out its turns for the model: two layouts behind one interface.

- `DialogueTemplate`, for text continuers (models trained on plays or transcripts): the user
  speaks as one named speaker and the model answers as another; the model's turn ends at a
  blank line or when it starts the user's next turn.
- `RoleTemplate`, for chat models (a tokenizer with chat tokens, model/chat.py): the system
  text is the system turn, each message and reply a user or assistant turn, laid out by
  model/chat.py (the one implementation of that format); a reply ends at `<|end|>`.

`layout_for(tokenizer, dialogue)` picks the one a model needs. Both give `speaker(role)`, the
`system` text, `fit` (the prompt's ids within a token budget, oldest turns dropped),
`stop_strings()` and `clean(reply)`. A plain completion mode continues the text as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from model import chat as chat_format
from model.tokenizer import Tokenizer, encode_lenient

# How the chat app talks to a model: a dialogue through this template, or continuing a document.
MODES = ("chat", "complete")

# What a speaker name must be, for the error a bad --user/--bot gets.
SPEAKER_NAME_RULE = "a non-empty name without ':'"


def valid_speaker_name(name: str) -> bool:
    """A name that can open a speech: something left after stripping, and no ':' or line
    break (either would end the name early in the rendered dialogue)."""
    name = name.strip()
    return bool(name) and ":" not in name and "\n" not in name


@dataclass
class Turn:
    role: str  # "user" or "model"
    text: str


@dataclass
class DialogueTemplate:
    user: str = "ROMEO"
    model: str = "JULIET"
    turn: str = "{name}:\n{text}\n\n"  # how one speech is laid out in the training text
    stops: list[str] = field(default_factory=lambda: ["\n\n"])
    # What the dialogue starts with (a persona, instructions, a few example turns): always in
    # the prompt, ahead of the turns; empty for the plain play layout.
    system: str = ""

    def speaker(self, role: str) -> str:
        return self.user if role == "user" else self.model

    def render(self, turns: list[Turn]) -> str:
        """The transcript so far, ending where the model's next speech begins."""
        text = "".join(
            self.turn.format(name=self.speaker(t.role), text=t.text.strip("\n")) for t in turns
        )
        opener = self.turn.split("{text}")[0].format(name=self.model)
        return self.system_head() + text + opener

    def system_head(self) -> str:
        system = self.system.strip("\n")
        return system + "\n\n" if system.strip() else ""

    def stop_strings(self) -> list[str]:
        """Where the model's speech ends: a blank line, or a new line opening the user's turn.

        The user's opener is matched without its trailing whitespace, so "ROMEO:" followed by
        a space or the end of the stream stops the reply too.
        """
        user_opener = self.turn.split("{text}")[0].format(name=self.user).rstrip()
        return [*self.stops, "\n" + user_opener]

    @staticmethod
    def clean(reply: str) -> str:
        return reply.strip("\n")

    def fit(self, tokenizer: Tokenizer, turns: Sequence[Turn], budget: int) -> Fitted:
        """The transcript's ids within `budget` tokens, the fewest oldest turns dropped (at
        least the last turn is kept, even when it alone is over the budget)."""

        def encode(first: int) -> tuple[list[int], list[str]]:
            return encode_lenient(tokenizer, self.render(list(turns[first:])))

        # A binary search, since the prompt only gets shorter as turns are dropped.
        lo, hi = 0, max(0, len(turns) - 1)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(encode(mid)[0]) <= budget:
                hi = mid
            else:
                lo = mid + 1
        ids, dropped = encode(lo)
        return Fitted(ids, dropped, lo)


@dataclass
class Fitted:
    """A conversation's prompt within a token budget (`fit`)."""

    ids: list[int]
    dropped_chars: list[str]  # characters the vocabulary lacks, left out
    dropped_turns: int  # oldest turns left out so that the rest fits


class LayoutError(ValueError):
    """The conversation cannot be laid out for the model (said to the user as it is)."""


# The names a chat model's turns are shown with (the roles speak, not characters of a play).
ROLE_NAMES = {"user": "You", "model": "Assistant"}


def messages_of(turns: Sequence[Turn], system: str = "") -> list[chat_format.Message]:
    """The chat format's messages for the chat's turns: the system text (when it has any
    visible character) as the system turn, then "user" and "model" turns as user and
    assistant turns. Two messages of yours in a row (a reply that said nothing between them)
    are one user turn, joined by a line break."""
    out = [chat_format.Message("system", system)] if system.strip() else []
    for turn in turns:
        role = "assistant" if turn.role == "model" else turn.role
        if out and role == "user" and out[-1].role == "user":
            out[-1] = chat_format.Message("user", f"{out[-1].content}\n{turn.text}")
        else:
            out.append(chat_format.Message(role, turn.text))
    return out


class RoleTemplate:
    """A chat model's layout: roles, not speakers (see the module docstring). The system text
    is the dialogue template's (one owner, whichever layout the model talking now uses)."""

    def __init__(self, dialogue: DialogueTemplate) -> None:
        self.dialogue = dialogue
        self.user = ROLE_NAMES["user"]
        self.model = ROLE_NAMES["model"]

    @property
    def system(self) -> str:
        return self.dialogue.system

    @system.setter
    def system(self, text: str) -> None:
        self.dialogue.system = text

    def speaker(self, role: str) -> str:
        return ROLE_NAMES.get(role, role)

    def stop_strings(self) -> list[str]:
        return []  # a reply ends at the end-of-turn token (generation.stop_ids)

    @staticmethod
    def clean(reply: str) -> str:
        return reply  # content is kept as given (model/chat.py)

    def fit(self, tokenizer: Tokenizer, turns: Sequence[Turn], budget: int) -> Fitted:
        """The prompt for the next reply (model.chat.fit: the oldest exchanges dropped, never
        the system turn) when the conversation ends with your message; otherwise the
        conversation so far (what the context holds between replies). Characters a character
        vocabulary lacks are left out of the text. LayoutError when it cannot be laid out."""
        cleaned, dropped = [], []
        for turn in turns:
            ids, unknown = encode_lenient(tokenizer, turn.text)
            dropped += [c for c in unknown if c not in dropped]
            cleaned.append(Turn(turn.role, tokenizer.decode(ids) if unknown else turn.text))
        system, unknown = encode_lenient(tokenizer, self.system)
        dropped += [c for c in unknown if c not in dropped]
        messages = messages_of(cleaned, tokenizer.decode(system) if unknown else self.system)
        try:
            if messages and messages[-1].role == "user":
                found = chat_format.fit(tokenizer, messages, budget)
                return Fitted(found.ids, dropped, found.dropped)
            tokens = chat_format.chat_tokens(tokenizer)
            contents = [tokenizer.encode(m.content) for m in messages]
            return Fitted(chat_format.assemble(tokens, messages, contents)[0].tolist(), dropped, 0)
        except ValueError as e:  # ChatFormatError, TokenizerError
            raise LayoutError(str(e)) from None
        except KeyError as e:  # a role the format has no marker for (a hostile history)
            raise LayoutError(f"unknown role {e}") from None


Template: TypeAlias = DialogueTemplate | RoleTemplate


def layout_for(tokenizer: Tokenizer, dialogue: DialogueTemplate) -> Template:
    """The layout a model talks in: roles when its tokenizer has chat tokens, else the dialogue
    (whose speaker names and system text come from the settings)."""
    return RoleTemplate(dialogue) if tokenizer.chat is not None else dialogue
