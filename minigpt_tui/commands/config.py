"""`minigpt-tui config path|show|edit`: the settings file (minigpt_tui/config.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import typer

from minigpt_tui.errors import UserError

config_app = typer.Typer(
    help="The settings file: defaults for chat (model, sampling, names, theme, keys).",
    no_args_is_help=True,
)


@config_app.command("path")
def path() -> None:
    """Print where the settings file is (MINIGPT_TUI_CONFIG overrides it)."""
    from minigpt_tui.config import config_path

    typer.echo(str(config_path()))


@config_app.command("show")
def show() -> None:
    """Print the settings file, after checking it (a bad file is one error line)."""
    from minigpt_tui.config import ConfigFileError, config_path, parse, read_text
    from minigpt_tui.tui.keys import BINDINGS

    p = config_path()
    try:
        text = read_text(p)
        if text is None:
            typer.echo(f"# no settings file at {p}: the defaults are in effect")
            return
        parse(text, p, BINDINGS)
    except ConfigFileError as e:
        raise UserError(str(e)) from None
    typer.echo(f"# {p}")
    typer.echo(text, nl=not text.endswith("\n"))


@config_app.command("edit")
def edit() -> None:
    """Open the settings file in $VISUAL / $EDITOR (a commented default file if there is none)."""
    from minigpt_tui.config import ConfigFileError, config_path, create_default, parse, read_text
    from minigpt_tui.tui.keys import BINDINGS

    p = config_path()
    if p.exists() and not p.is_file():
        raise UserError(f"config file {p} is not a regular file")
    variable = "VISUAL" if os.environ.get("VISUAL") else "EDITOR"
    editor = os.environ.get(variable) or ""
    try:
        command = shlex.split(editor) if editor.strip() else []
    except ValueError as e:  # an unbalanced quote
        raise UserError(f"${variable} {editor!r} cannot be split into a command ({e})") from None
    if not command:
        command = [next((e for e in ("nano", "vi") if shutil.which(e)), "")]
    if not command[0] or not shutil.which(command[0]):
        raise UserError(f"no editor found: set $EDITOR (the file is {p})")
    try:
        if create_default(p):
            typer.echo(f"created {p}", err=True)
    except OSError as e:
        raise UserError(f"cannot create {p}: {e.strerror or e}") from None
    code = subprocess.call([*command, str(p)])
    if code:
        raise UserError(f"the editor {command[0]} exited with status {code}")
    try:  # say now, not at the next chat, when the edit left the file unusable
        parse(read_text(p) or "", p, BINDINGS)
    except ConfigFileError as e:
        raise UserError(f"{e}; run `minigpt-tui config edit` again to fix it") from None


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
