"""CLI commands, one module each; `register_all` attaches them to the typer app."""

from __future__ import annotations

import importlib
import sys

import typer

from minigpt_tui.errors import UserError

# Each module defines `register(app)`. Modules import heavy libraries inside their commands.
MODULES = [
    "data",
    "train",
    "evaluate",
    "info",
    "generate",
    "chat",
    "export",
    "convert",
    "watch",
    "score",
    "config",
]


# The top-level command each module registers (its own name, except evaluate's `eval`).
COMMANDS = {("eval" if name == "evaluate" else name): name for name in MODULES}


def register_all(app: typer.Typer) -> None:
    for name in MODULES:
        register_one(app, name)


def register_one(app: typer.Typer, name: str) -> None:
    """Attach the commands of the module `name` (one of MODULES) to the app."""
    try:
        module = importlib.import_module(f"minigpt_tui.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"minigpt_tui.commands.{name}":
            return  # not written yet
        raise
    module.register(app)


def require_terminal(command: str, instead: str) -> None:
    """Full-screen apps need a terminal on stdin and stdout: refuse pipes and files in one line
    (`chat < /dev/null` would otherwise draw escape codes into a file, or wait forever)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"{command} is a full-screen app and needs a terminal; {instead}")
