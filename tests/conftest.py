"""Shared test setup: one thread per test process (pytest -n 2 runs two of them on 2 cores),
so that OpenMP threads of parallel workers never fight over the cores."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
