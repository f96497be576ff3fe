"""Load a model off the UI thread and say when it is ready (or why it is not).

Loading a backend and its tokenizer (a GPT-2 BPE takes a moment) runs in a worker thread; the
owner hears `ModelLoader.Loaded(model)` or `ModelLoader.Failed(error)`. `load` may be called
again with another loader to bring in a different model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.dom import DOMNode
from textual.message import Message

from minigpt_tui.generation import Backend
from model.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    backend: Backend
    tokenizer: Tokenizer


def describe(error: BaseException | None) -> str:
    """An exception as one line of text for the user (long texts cut at 2000 characters)."""
    if error is None:
        return "unknown error"
    text = str(error) or type(error).__name__
    return " ".join(text.split()) if len(text) < 2000 else text[:2000] + "…"


class ModelLoader:
    class Loaded(Message):
        def __init__(self, model: LoadedModel) -> None:
            super().__init__()
            self.model = model

    class Failed(Message):
        def __init__(self, error: BaseException) -> None:
            super().__init__()
            self.error = error
            self.reason = describe(error)

    def __init__(self, owner: DOMNode) -> None:
        self.owner = owner  # runs the worker and receives the messages

    def load(self, loader: Callable[[], Backend]) -> None:
        self.owner.run_worker(
            lambda: self._load(loader), thread=True, exit_on_error=False, name="load"
        )

    def _load(self, loader: Callable[[], Backend]) -> None:  # worker thread
        try:
            backend = loader()
            tokenizer = backend.info.tokenizer()
        except Exception as e:  # shown to the user: the app decides whether it can go on
            self.owner.post_message(self.Failed(e))
            return
        self.owner.post_message(self.Loaded(LoadedModel(backend, tokenizer)))
