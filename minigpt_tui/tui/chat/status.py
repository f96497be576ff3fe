"""The chat's status values: what the status bar under it shows (the ChatScreen watches them)."""

from __future__ import annotations

from textual.containers import Vertical
from textual.reactive import var

from model.backend import Backend


class ChatStatus(Vertical):
    """The status values of the Chat widget (a base class): written by the chat alone."""

    state = var("loading…")  # what it is doing: "ready", "replying…", "branch 2/3", ...
    model = var("")  # the model's name
    backend_name = var("")
    params = var(0)
    block_size = var(0)
    context = var(0)  # tokens of the block in use
    ttft = var(-1.0)  # the last reply's time to first token (< 0: no reply yet)
    tokens_per_sec = var(-1.0)
    checkpoint = var("")  # chat --follow: the checkpoint talking now (step, val loss)
    unsaved = var("")  # why the conversation is not saved in history ("": it is, or is empty)

    def show_backend(self, backend: Backend) -> None:
        """The backend talking now: its name, size and block size."""
        self.backend_name = backend.name
        self.params = backend.info.config.num_params()
        self.block_size = backend.block_size

    def show_following(self, checkpoint: str, backend: str | None = None) -> None:
        """`chat --follow`: the checkpoint talking now ("": not following), and its backend."""
        self.checkpoint = checkpoint
        if backend is not None:
            self.backend_name = backend
