"""Smoke test: `minigpt-tui chat` in a real terminal (tmux), typed at and read off the screen.

Uses the bundled model when it is installed, otherwise a tiny random model built here (torch
backend). Skipped where tmux is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minigpt_tui.history import HistoryStore
from minigpt_tui.models import BUNDLED_DIR, DEFAULT_MODEL

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tiny_model(target: Path) -> Path:
    from model import checkpoint, modeldir
    from model.config import GPTConfig
    from model.gpt import GPT
    from model.tokenizer import CharTokenizer

    tok = CharTokenizer.from_text(["hello world\n ROMEO:JULIET abcdefghijklmnopqrstuvwxyz"])
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    checkpoint.save(target, GPT(cfg), modeldir.make_meta(cfg, tok, name="tiny"))
    return target


def model_for_test(tmp_path: Path) -> str:
    bundled = BUNDLED_DIR / DEFAULT_MODEL
    if (bundled / "config.json").is_file():
        return str(bundled)
    return str(tiny_model(tmp_path / "tiny"))


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def wait(self, predicate: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"screen never matched; last screen:\n{self.screen()}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"minigpt-test-{uuid.uuid4().hex[:8]}")
    try:
        yield t
    finally:
        t("kill-server")


def chat_pid(tmux: Tmux) -> int:
    """The chat process: the child of the pane's shell."""
    shell = int(tmux("display", "-p", "-t", "chat", "#{pane_pid}").strip())
    children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
    return int(children[0])


def test_chat_in_a_real_terminal(tmp_path: Path, tmux: Tmux) -> None:
    model = model_for_test(tmp_path)
    data = tmp_path / "data"
    command = (
        f"MINIGPT_TUI_DATA_DIR={data} {sys.executable} -m minigpt_tui chat "
        f"--model {model} --seed 1 --max-tokens 24; sleep 5"
    )
    tmux("new-session", "-d", "-s", "chat", "-x", "80", "-y", "24", command)
    tmux.wait(lambda s: "ready │" in s)
    tmux("send-keys", "-t", "chat", "-l", "hello world")
    tmux("send-keys", "-t", "chat", "Enter")
    # A reply is done when the status bar is back to "ready" with the reply's timing; the
    # screen can be caught mid-repaint, so wait for all of it to be drawn.
    screen = tmux.wait(lambda s: "ttft" in s and "ready │" in s and "hello world" in s)
    lines = [line.split("│")[0].rstrip() for line in screen.splitlines()]
    speaker = next(i for i, line in enumerate(lines) if line.strip() == "JULIET")
    assert lines[speaker + 1].strip(), f"no reply under the speaker name:\n{screen}"
    tmux("send-keys", "-t", "chat", "C-q")
    tmux.wait(lambda s: "ready │" not in s, timeout=10)
    saved = HistoryStore(data / "history.db").list()
    assert [c.title for c in saved] == ["hello world"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to inspect")
def test_chat_on_onnx_never_loads_torch(tmp_path: Path, tmux: Tmux) -> None:
    export = pytest.importorskip("export.onnx_export")
    bundled = BUNDLED_DIR / DEFAULT_MODEL
    if (bundled / "model.onnx").is_file():
        model = bundled
    else:
        model = tiny_model(tmp_path / "tiny")
        export.export_onnx(model, verify=False)
    data = tmp_path / "data"
    command = (
        f"MINIGPT_TUI_DATA_DIR={data} {sys.executable} -m minigpt_tui chat --model {model} "
        "--backend onnx --no-history --seed 1 --max-tokens 16; sleep 5"
    )
    tmux("new-session", "-d", "-s", "chat", "-x", "80", "-y", "24", command)
    tmux.wait(lambda s: "ready │" in s)
    assert "onnx" in tmux.screen()
    tmux("send-keys", "-t", "chat", "-l", "hello")
    tmux("send-keys", "-t", "chat", "Enter")
    tmux.wait(lambda s: "ttft" in s and "ready │" in s)
    maps = Path(f"/proc/{chat_pid(tmux)}/maps").read_text()
    assert "onnxruntime" in maps and "libtorch" not in maps
    tmux("send-keys", "-t", "chat", "C-q")
    tmux.wait(lambda s: "ready │" not in s, timeout=10)
    assert not data.exists(), "--no-history keeps nothing"
