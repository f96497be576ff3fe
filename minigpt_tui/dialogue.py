"""Chat over a base model: a dialogue template for models trained on plays or transcripts.

The user speaks as one named speaker and the model answers as another; the model's turn ends
at a blank line or when it starts the user's next turn. A plain completion mode continues the
text as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
