"""What a command loads at startup (issue 25): `generate` builds only its own command and
imports neither the other commands' modules nor rich (nor pydantic, which typer 0.29 pulled
in); help, a bare call and a mistyped command still see every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_tui_support import FakeBackend, make_app, run_async, wait_for

from minigpt_tui.cli import main
from minigpt_tui.commands import COMMANDS, MODULES

ROOT = Path(__file__).parent.parent


INTEREST = ("minigpt_tui.commands.", "rich", "pydantic")


def loaded_after(args: list[str], prefixes: tuple[str, ...] = INTEREST) -> list[str]:
    """The modules starting with one of `prefixes` loaded by a fresh interpreter after
    main(args)."""
    code = f"""
import json, sys
from minigpt_tui.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))
"""
    # A job registry of its own: a training another test of this worker registered would make
    # the reply yield to it (model/jobs.py), which starts a thread pool a lone start does not.
    env = {**os.environ, "MINIGPT_JOBS_DIR": tempfile.mkdtemp(prefix="minigpt-jobs-")}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout.splitlines()[-1]))


def test_generate_loads_only_its_own_command() -> None:
    loaded = loaded_after(["generate", "--max-tokens", "1", "-t", "0", "To be"])
    assert loaded == ["minigpt_tui.commands.generate"]


def test_greedy_generate_imports_nothing_it_does_not_use() -> None:
    """A greedy reply from a char model draws no random numbers, checks no checksum, parses
    no TOML and starts no thread pool: numpy.random (and the secrets/hashlib it pulls in),
    hashlib, tomllib, concurrent.futures and logging are imported only where used."""
    avoided = ("numpy.random", "hashlib", "secrets", "tomllib", "concurrent", "logging")
    loaded = loaded_after(["generate", "--max-tokens", "1", "-t", "0", "To be"], avoided)
    assert loaded == []


def test_every_module_has_its_command_name() -> None:
    assert sorted(COMMANDS.values()) == sorted(MODULES)
    assert COMMANDS["eval"] == "evaluate" and "evaluate" not in COMMANDS


@pytest.mark.parametrize("args", [["--help"], ["generat"]])
def test_help_and_typos_see_every_command(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        main(args)
    except SystemExit as e:
        assert e.code == (0 if args == ["--help"] else 2)
    out = capsys.readouterr()
    text = out.out + out.err
    if args == ["--help"]:
        assert all(name in text for name in COMMANDS)
    else:
        assert "No such command 'generat'" in text and "generate" in text


def test_one_command_app_keeps_the_command_name(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the one-command group, usage and errors still name `minigpt-tui generate`."""
    with pytest.raises(SystemExit) as e:
        main(["generate", "--no-such-option"])
    assert e.value.code == 2
    assert "No such option: --no-such-option" in capsys.readouterr().err
    try:
        main(["generate", "--help"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert "minigpt-tui generate" in capsys.readouterr().out


def test_chat_loads_its_dialogs_when_first_shown() -> None:
    """The chat's first frame needs none of its dialogs (help, history, export, the error
    screen): their modules load when one is first pushed (the Pilot tests open each)."""
    code = """
import json, sys
import minigpt_tui.commands.chat, minigpt_tui.tui.app
print(json.dumps(sorted(m for m in sys.modules if m.startswith("minigpt_tui.tui.screens."))))
"""
    # A job registry of its own: a training another test of this worker registered would make
    # the reply yield to it (model/jobs.py), which starts a thread pool a lone start does not.
    env = {**os.environ, "MINIGPT_JOBS_DIR": tempfile.mkdtemp(prefix="minigpt-jobs-")}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


@run_async
async def test_chat_makes_the_document_when_complete_mode_first_shows() -> None:
    """Complete mode's document (a TextArea, hidden in chat mode) is made when the chat first
    switches to complete mode; a chat that never does, saves and starts anew without it."""
    app = make_app(FakeBackend("Sweet."), max_new_tokens=4)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        assert app.chat.document_area is None and not app.query("#document")
        await pilot.press("ctrl+n")  # a new conversation in chat mode needs no document
        assert app.chat.document_area is None
        app.chat.change_mode("complete")
        await wait_for(pilot, lambda: app.focused is app.chat.document)
        assert app.chat.document_area is not None and app.query_one("#document").display
        assert not app.chat.prompt_input.display
        app.chat.change_mode("chat")
        await pilot.pause()
        assert not app.query_one("#document").display and app.focused is app.chat.prompt_input
