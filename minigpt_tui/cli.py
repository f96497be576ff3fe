"""The `minigpt-tui` command line (typer + rich).

Each command lives in its own module under minigpt_tui/commands/ and imports its heavy
dependencies (torch, onnxruntime, textual) only when it runs, so that `--help` is instant and
`generate`/`chat` on ONNX models never import torch. When the first argument names a command,
only that command's module is imported and only its options are built (`_command`): the
others cost ~0.05 s of CPU at each start, a sixth of a `generate --max-tokens 1`.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING

import typer

from minigpt_tui import invocation
from minigpt_tui.errors import UserError, known_errors

try:  # typer >= 0.24 vendors click as typer._click; older releases depend on click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

if TYPE_CHECKING:
    from rich.console import Console
    from typer.core import TyperGroup


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="minigpt-tui",
        help="Train, export and talk to small GPT-2-style language models from a terminal.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _new_app()  # every command: for --help, a bare call and a mistyped command
_single: dict[str, typer.Typer] = {}  # a command name -> an app with that command alone


def _register() -> None:
    from minigpt_tui.commands import register_all

    if not app.registered_commands:  # once per process: main() may run many times (tests)
        register_all(app)


def _command(args: list[str]) -> TyperGroup:
    """The click group that runs these arguments: when the first one names a command, a group
    of that command alone (the same usage, help and errors for it); else the whole app."""
    from minigpt_tui.commands import COMMANDS, register_one

    name = args[0] if args else ""
    if name not in COMMANDS:
        _register()
        return typer.main.get_group(app)
    if name not in _single:
        _single[name] = _new_app()
        register_one(_single[name], COMMANDS[name])
    return typer.main.get_group(_single[name])


def err_console() -> Console:
    """The console for error lines (rich is imported only when one is printed)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> None:
    err_console().print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every anticipated failure ends as one line on stderr and a non-zero exit."""
    args = sys.argv[1:] if argv is None else argv
    invocation.set_args(args)
    command = _command(args)
    try:
        rv = command.main(args=argv, prog_name="minigpt-tui", standalone_mode=False)
    except typer.Abort:
        err_console().print("aborted")
        raise SystemExit(130) from None
    except click_exceptions.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            e.show()
            raise SystemExit(0) from None
        fail(_escape(e.format_message()), e.exit_code or 2)
    except KeyboardInterrupt:
        err_console().print("interrupted")
        raise SystemExit(130) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as e:
        if e.errno == errno.EPIPE:
            _quiet_broken_pipe()
        fail(_escape(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")))
    except known_errors() as e:
        fail(_escape(str(e)))
    except UserError as e:
        fail(_escape(str(e)))
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)


def _escape(text: str) -> str:
    """One line that neither rich nor the terminal interprets (it may quote a file's text)."""
    from minigpt_tui.safe_text import markup

    return markup(" ".join(text.split()), one_line=True)


def _quiet_broken_pipe() -> None:
    # The reader went away (`| head`): exit quietly, without a traceback on flush.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)
