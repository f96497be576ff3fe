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


def register_all(app: typer.Typer) -> None:
    for name in MODULES:
        try:
            module = importlib.import_module(f"minigpt_tui.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"minigpt_tui.commands.{name}":
                continue  # not written yet
            raise
        module.register(app)


def require_terminal(command: str, instead: str) -> None:
    """Full-screen apps need a terminal on stdin and stdout: refuse pipes and files in one line
    (`chat < /dev/null` would otherwise draw escape codes into a file, or wait forever)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"{command} is a full-screen app and needs a terminal; {instead}")
