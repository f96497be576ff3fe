"""Shared test setup: one thread per test process (pytest -n 2 runs two of them on 2 cores),
so that OpenMP threads of parallel workers never fight over the cores; and the model
directories several test files spoil copies of (`good`, `evil`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Each test process (and what it starts) has its own job registry (model/jobs.py): the two
# workers of pytest -n 2 must not halve each other's threads, nor a user's trainings ours.
os.environ["MINIGPT_JOBS_DIR"] = tempfile.mkdtemp(prefix="minigpt-jobs-")


import pytest


@pytest.fixture(autouse=True)
def steady_cursor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshot tests: text cursors never blink, so a snapshot taken on a busy machine (after
    the first half-second blink) shows the cursor as a quick one does."""
    if "snap_compare" not in request.fixturenames:
        return
    from textual.widgets import Input, TextArea

    monkeypatch.setattr(TextArea, "_toggle_cursor_blink_visible", lambda self: None)
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


@pytest.fixture(autouse=True)
def _private_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the user's settings file or writes their data directory (a test that
    needs either sets the variable itself)."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("MINIGPT_TUI_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("MINIGPT_TUI_DATA_DIR", str(home / "data"))


@pytest.fixture
def in_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if stdin and stdout were a terminal: `chat` and `watch` refuse to start without one."""
    for command in ("chat", "watch"):
        monkeypatch.setattr(f"minigpt_tui.commands.{command}.require_terminal", lambda *a: None)


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A good tiny model directory and its data (read only: tests spoil copies of them)."""
    from tests.helpers import make_data, make_model

    tmp = tmp_path_factory.mktemp("good")
    return make_model(tmp), make_data(tmp)


@pytest.fixture(scope="session")
def evil(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model called EVIL whose character vocabulary holds ESC and BEL, in a directory whose
    name holds rich markup; its data; and its ONNX export (made once, through the CLI; read
    only: tests change copies of them)."""
    import torch

    from model import checkpoint, modeldir
    from model.config import GPTConfig
    from model.gpt import GPT
    from model.tokenizer import CharTokenizer
    from tests.helpers import EVIL, TEXT, cli, make_data

    root = tmp_path_factory.mktemp("evil") / "runs [old] [" / "]"  # a path holding "[/]"
    root.mkdir(parents=True)
    text = TEXT + "\x1b[2J\x07" * 20
    torch.manual_seed(0)
    tok = CharTokenizer.from_text([text])
    cfg = GPTConfig(
        vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, tie_weights=False
    )
    model = GPT(cfg)
    with torch.no_grad():  # ESC is the likeliest next token everywhere
        model.ln_f.weight.zero_()
        model.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.encode("\x1b")[0]] = 5.0
    path = root / "model"
    training = {"command": EVIL, "data_sha256": EVIL, "data_source": EVIL}
    meta = modeldir.make_meta(cfg, tok, name=EVIL, summary={EVIL: EVIL}, training=training)
    checkpoint.save(path, model, meta)
    data = make_data(root, text=text)
    assert cli("export", "onnx", path, "--out", root / "onnx", "--no-verify") == 0
    return {"root": root, "model": path, "data": data, "onnx": root / "onnx"}
