"""Progress of long work in the CLI (`eval`, `score`): a rich bar on a terminal, a line every
few seconds otherwise (logs of a batch job still show it is moving)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

LINE_SECONDS = 5.0  # between two progress lines off a terminal


@contextlib.contextmanager
def work_progress(
    what: str, total: int, unit: str, console: Console | None = None
) -> Iterator[Callable[[int], None]]:
    """Show `what` advancing to `total` `unit`s; yields `update(done)`."""
    console = console or Console(stderr=True, highlight=False)
    if not console.is_terminal:
        last = [time.monotonic()]

        def line(done: int) -> None:
            if time.monotonic() - last[0] >= LINE_SECONDS:
                last[0] = time.monotonic()
                console.print(f"{what}: {done:,}/{total:,} {unit}", markup=False)

        yield line
        return
    bar = Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        TextColumn(f"{{task.completed:,.0f}}/{{task.total:,.0f}} {unit}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(what, total=total)
    with bar:
        yield lambda done: bar.update(task, completed=done)
