"""Helpers for the TUI tests: a scripted fake backend and an app factory (no tests here)."""

from __future__ import annotations

import asyncio
import functools
import string
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minigpt_tui.dialogue import DialogueTemplate
from minigpt_tui.history import HistoryStore
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui.app import ChatApp
from model import modeldir
from model.config import GPTConfig
from model.tokenizer import CharTokenizer

VOCAB = "\n !',.:?" + string.ascii_uppercase + string.ascii_lowercase


class FakeBackend:
    """Implements the Backend protocol: always predicts the next character of `script`,
    sleeping `delay` seconds per token like a slow model on a slow CPU."""

    name = "fake"

    def __init__(
        self,
        script: str = "Good morrow, sweet.\n\n",
        delay: float = 0.0,
        block_size: int = 64,
        sharpness: float = 12.0,
    ) -> None:
        self.tokenizer = CharTokenizer(VOCAB)
        self.script = self.tokenizer.encode(script)
        self.delay = delay
        self._block_size = block_size
        cfg = GPTConfig(vocab_size=len(VOCAB), block_size=block_size, n_layer=1, n_head=1, n_embd=8)
        meta = modeldir.make_meta(cfg, self.tokenizer, name="fake-model")
        self.info = modeldir.ModelInfo(path=Path("fake-model"), config=cfg, meta=meta)
        self.sharpness = sharpness  # logit of the scripted token (the others are 0)
        self.pos = 0
        self.decoded = 0

    @property
    def block_size(self) -> int:
        return self._block_size

    def _logits(self) -> np.ndarray:
        logits = np.zeros(len(VOCAB), dtype=np.float32)
        logits[self.script[self.pos % len(self.script)]] = self.sharpness
        return logits

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.pos = 0
        return self._logits()

    def decode(self, token: int) -> np.ndarray:
        time.sleep(self.delay)
        self.decoded += 1
        self.pos += 1
        return self._logits()


def make_app(
    backend: FakeBackend | None = None, history: HistoryStore | None = None, **settings: object
) -> ChatApp:
    fake = backend or FakeBackend()
    defaults: dict[str, object] = {"temperature": 0.8, "seed": 1, "max_new_tokens": 64}
    defaults.update(settings)
    return ChatApp(
        lambda: fake,
        model_label="fake-model",
        settings=SamplingSettings(**defaults),  # type: ignore[arg-type]
        template=DialogueTemplate(),
        history=history or HistoryStore.memory(),
    )


def said(app: Any, text: str) -> bool:
    """Whether a toast on screen now says `text`."""
    return any(text in n.message for n in app._notifications)


async def wait_for(pilot: object, predicate: object, timeout: float = 5.0) -> None:
    """Let the app run until predicate() holds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.01)  # type: ignore[attr-defined]


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test with asyncio (no async pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper
