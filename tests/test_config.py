"""The settings file: parsing, `config path|show|edit`, flags over file over defaults, a bad file
(one warning line, the app still starts with the defaults), and the theme the app writes back."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from minigpt_tui import config
from minigpt_tui.tui.keys import BINDING_IDS
from tests.helpers import cli, make_model


@pytest.fixture
def cfg_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "config.toml"
    monkeypatch.setenv(config.ENV_VAR, str(path))
    return path


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, in_terminal: None) -> list[Any]:
    """`chat` up to the point where the app would take over the terminal."""
    from minigpt_tui.tui.app import ChatApp

    apps: list[Any] = []
    monkeypatch.setattr(ChatApp, "run", lambda self, *a, **k: apps.append(self))
    return apps


FULL = """\
model = "some/model"
backend = "torch"
theme = "nord"
system = "You are kind."

[sampling]
temperature = 1
top_k = 5
top_p = 0.9
max_tokens = 40
seed = 7

[speakers]
user = "ALICE"
bot = "BOB"

[keys]
send = "ctrl+g,f9"
switch_model = "f12"
"""


def test_parse_reads_every_key(tmp_path: Path) -> None:
    c = config.parse(FULL, tmp_path / "c.toml", BINDING_IDS)
    assert (c.model, c.backend, c.theme, c.system) == (
        "some/model",
        "torch",
        "nord",
        "You are kind.",
    )
    assert c.sampling == {"temperature": 1.0, "top_k": 5, "top_p": 0.9, "max_tokens": 40, "seed": 7}
    assert isinstance(c.sampling["temperature"], float)  # an integer is a fine number
    assert c.speakers == {"user": "ALICE", "bot": "BOB"}
    assert c.keys == {"send": "ctrl+g,f9", "switch_model": "f12"}


def test_the_default_file_parses_and_sets_nothing(tmp_path: Path) -> None:
    assert config.parse(config.DEFAULT_FILE, tmp_path / "c.toml", BINDING_IDS) == config.Config()


def test_path_show_edit(
    cfg_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("config", "path") == 0
    assert capsys.readouterr().out.strip() == str(cfg_file)
    assert cli("config", "show") == 0
    assert "no settings file" in capsys.readouterr().out
    monkeypatch.setenv("EDITOR", "true")  # an editor that changes nothing
    assert cli("config", "edit") == 0
    assert cfg_file.read_text() == config.DEFAULT_FILE  # the commented default, made once
    mine = "# mine\ntheme = 'nord'\n"
    cfg_file.write_text(mine)
    assert cli("config", "edit") == 0
    assert cfg_file.read_text() == mine  # never overwritten
    assert cli("config", "show") == 0
    assert "theme = 'nord'" in capsys.readouterr().out


def test_edit_with_a_failing_editor_is_one_line(
    cfg_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITOR", "false")
    monkeypatch.delenv("VISUAL", raising=False)
    assert cli("config", "edit") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the editor false exited")
    monkeypatch.setenv("EDITOR", "no-such-editor-here")
    assert cli("config", "edit") == 1
    assert "no editor found" in capsys.readouterr().err


def test_edit_that_breaks_the_file_says_so(
    cfg_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITOR", f"sh -c 'echo colour = 1 >> {cfg_file}'")
    monkeypatch.delenv("VISUAL", raising=False)
    assert cli("config", "edit") == 1
    assert "unknown key 'keys.colour'" in capsys.readouterr().err


def test_flags_win_over_the_file_and_the_file_over_defaults(
    cfg_file: Path, started: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_model(tmp_path)
    cfg_file.parent.mkdir()
    cfg_file.write_text(FULL.replace("some/model", str(model)).replace('"torch"', '"auto"'))
    assert cli("chat", "--no-history", "-t", "0.3", "--bot", "CAROL") == 0
    app = started[-1]
    s = app.settings
    assert (s.temperature, s.top_k, s.top_p, s.max_new_tokens, s.seed) == (0.3, 5, 0.9, 40, 7)
    assert (app.template.user, app.template.model) == ("ALICE", "CAROL")
    assert app.template.system == "You are kind."
    assert app.model_label == "tiny"  # the file's model
    assert app.workflow.theme == "nord"
    assert app.workflow.keymap == {"send": "ctrl+g,f9", "switch_model": "f12"}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("[sampling]\ntemperature = 'hot'\n", "'sampling.temperature'"),
        ("backend = 'tpu'\n", "'backend'"),
        ("theme = 'no-such-theme'\n", "'theme'"),
        ("[sampling]\ntop_p = 2.0\n", "top-p"),
        ("[speakers]\nuser = 'A:B'\n", "'speakers.user'"),
        ("[keys]\nfly = 'f9'\n", "'keys.fly'"),
        ("not toml at all\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_and_chat_starts_with_defaults(
    content: str,
    names: str,
    cfg_file: Path,
    started: list[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg_file.parent.mkdir()
    cfg_file.write_text(content + "[speakers]\nbot = 'BOB'\n" if "[" not in content else content)
    assert cli("chat", "--no-history", "-m", str(make_model(tmp_path))) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: config file ")
    assert names in lines[0] and lines[0].endswith("using the defaults")
    app = started[-1]
    assert app.template.model == "JULIET" and app.settings.temperature == 0.8
    assert app.workflow.notice is not None  # shown in the app too


def test_remember_theme_keeps_the_users_lines(cfg_file: Path) -> None:
    assert config.remember_theme("nord") is None  # no file: made from the default
    text = cfg_file.read_text()
    assert tomllib.loads(text)["theme"] == "nord" and "# minigpt-tui settings" in text
    cfg_file.write_text("# my notes\nmodel = 'x'\ntheme = 'nord'\n\n[sampling]\nseed = 3\n")
    assert config.remember_theme("gruvbox") is None
    assert cfg_file.read_text() == (
        "# my notes\nmodel = 'x'\ntheme = \"gruvbox\"\n\n[sampling]\nseed = 3\n"
    )
    cfg_file.write_text("[sampling]\nseed = 3\n")  # no top-level lines: goes before the table
    assert config.remember_theme("nord") is None
    assert tomllib.loads(cfg_file.read_text()) == {"theme": "nord", "sampling": {"seed": 3}}
    cfg_file.write_text("colour = 1\n")  # a broken file is never rewritten
    problem = config.remember_theme("nord")
    assert problem is not None and "'colour'" in problem
    assert cfg_file.read_text() == "colour = 1\n"


def test_the_texts_about_themes_name_the_theme_key(
    cfg_file: Path, started: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from textual.binding import Binding

    from minigpt_tui.tui.keys import BINDINGS

    key = next(
        b.key for b in BINDINGS if isinstance(b, Binding) and b.action == "app.theme"
    ).upper()
    assert f"{key} in chat picks one" in config.DEFAULT_FILE
    cfg_file.parent.mkdir()
    cfg_file.write_text("theme = 'no-such-theme'\n")
    assert cli("chat", "--no-history", "-m", str(make_model(tmp_path))) == 0
    assert f"({key} in chat lists them)" in capsys.readouterr().err
