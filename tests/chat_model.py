"""A tiny chat model for tests (no tests here): a character vocabulary with the chat tokens,
trained a few hundred steps on a handful of conversations, so that its greedy reply to any
short message is REPLY and then <|end|>.

The weights are trained on the CPU in a few seconds, once per test session that asks for them
(`make_chat_model`), and cached in the directory given. `FakeChatBackend` is the scripted
backend of the TUI tests (test_tui_support.py) with a chat tokenizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from test_tui_support import VOCAB, FakeBackend

from model import chat, checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import CharTokenizer

CHARS = "\n !',.:?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
REPLY = "hi there."
SYSTEM = "be kind."
USER_TEXTS = ["hello", "hi", "how are you?", "what is this", "Good day.", "ok", "tell me more"]


def conversations() -> list[list[dict[str, str]]]:
    """What it is trained on: every message (with and without a system turn, one and two
    exchanges) is answered REPLY."""
    out = []
    for i, text in enumerate(USER_TEXTS):
        turns = [{"role": "user", "content": text}, {"role": "assistant", "content": REPLY}]
        other = USER_TEXTS[(i + 1) % len(USER_TEXTS)]
        two = [*turns, {"role": "user", "content": other}, {"role": "assistant", "content": REPLY}]
        system = [{"role": "system", "content": SYSTEM}]
        out += [turns, two, system + turns, system + two]
    return out


def train_chat_model(tokenizer: CharTokenizer, steps: int = 300) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.0
    )
    model = GPT(cfg)
    examples = [chat.training_example(tokenizer, c) for c in conversations()]
    length = max(len(ids) for ids, _ in examples)
    assert length <= cfg.block_size
    ids = torch.zeros(len(examples), length, dtype=torch.long)
    targets = torch.full((len(examples), length), -1, dtype=torch.long)  # -1: no loss
    for row, (seq, mask) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        for t in range(len(seq) - 1):
            if mask[t + 1]:  # the loss at t predicts seq[t + 1] when it is trained
                targets[row, t] = seq[t + 1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        logits, _ = model(ids)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def make_chat_model(directory: Path, onnx: bool = False) -> Path:
    """The tiny chat model's directory (made on first use), with model.onnx when `onnx`."""
    path = directory / "tiny-chat"
    if not (path / modeldir.CONFIG_FILE).exists():
        tokenizer = CharTokenizer(CHARS, chat=True)
        model = train_chat_model(tokenizer)
        meta = modeldir.make_meta(model.config, tokenizer, name="tiny-chat")
        checkpoint.save(path, model, meta, tokenizer=tokenizer)
    if onnx and not (path / modeldir.ONNX_FILE).exists():
        from export.onnx_export import export_onnx

        export_onnx(path)  # in place: beside the weights
    return path


class FakeChatBackend(FakeBackend):
    """The TUI tests' scripted backend with a chat tokenizer: every reply is `reply`, then
    <|end|>. `prompts` keeps the ids of every prefill (what the model was asked)."""

    def __init__(self, reply: str = "Hi there.", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenizer = CharTokenizer(VOCAB, chat=True)
        assert self.tokenizer.chat is not None
        self.script = [*self.tokenizer.encode(reply), self.tokenizer.chat.end]
        cfg = dataclasses.replace(self.info.config, vocab_size=self.tokenizer.vocab_size)
        meta = modeldir.make_meta(cfg, self.tokenizer, name="fake-chat")
        self.info = modeldir.ModelInfo(path=Path("fake-chat"), config=cfg, meta=meta)
        self.prompts: list[list[int]] = []

    def _logits(self) -> np.ndarray:
        logits = np.zeros(self.tokenizer.vocab_size, dtype=np.float32)
        logits[self.script[self.pos % len(self.script)]] = self.sharpness
        return logits

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.prompts.append(list(ids))
        return super().prefill(ids)
