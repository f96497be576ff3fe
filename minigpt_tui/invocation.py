"""The arguments this process' command was started with, for records (`train` stores its
command line in config.json) and for relaunching (`train --nproc` restarts itself under
torchrun). The CLI's entry point sets them; commands read them."""

from __future__ import annotations

_args: list[str] = []


def set_args(args: list[str]) -> None:
    global _args
    _args = list(args)


def args() -> list[str]:
    return list(_args)
