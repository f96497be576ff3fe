"""How `minigpt-tui train` shows progress: a live rich bar on a terminal, log lines otherwise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from minigpt_tui.safe_text import markup
from model.events import EvalEvent, Event, StartEvent, TrainEvent


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class TrainView:
    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False, quiet=quiet)
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.state: dict[str, Any] = {"loss": None, "val": None, "tps": None, "mfu": ""}
        self.total = 0
        self.budget: float | None = None
        self._last_print = 0.0
        self.eval_task: TaskID | None = None

    def __enter__(self) -> TrainView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _start(self, event: StartEvent) -> None:
        self.total = int(event["max_iters"])
        self.budget = event.get("time_budget")
        cfg = event["config"]["model"]
        self.console.print(
            f"[bold]training[/] {event['params']:,} parameters "
            f"({cfg['n_layer']} layers, {cfg['n_head']} heads, {cfg['n_embd']} wide, block "
            f"{cfg['block_size']}) on {event['device']} ({event['dtype']}, "
            f"{event['world_size']} process{'es' if event['world_size'] > 1 else ''}), "
            f"{event['tokens_per_step']:,} tokens/step"
            + (" [yellow](resumed)[/]" if event.get("resumed") else "")
        )
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]iter {task.completed:>6.0f}/{task.total:.0f}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
                TextColumn("{task.fields[tps]} tok/s{task.fields[mfu]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            total = self.budget if self.budget else self.total
            self.task = self.progress.add_task(
                "train", total=total, completed=0, loss="-", val="-", tps="-", mfu=""
            )
            if self.budget:
                self.progress.columns = (
                    TextColumn("[bold]{task.completed:>5.0f}/{task.total:.0f}s"),
                    *self.progress.columns[1:],
                )
            self.progress.start()

    def handle(self, event: Event) -> None:
        """Show one training event (the run's `on_event` callback)."""
        if event["event"] == "start":
            self._start(event)
        elif event["event"] == "train":
            self.state["loss"] = event["loss"]
            self.state["tps"] = event["tokens_per_sec"]
            if event.get("mfu") is not None:
                self.state["mfu"] = f"  MFU {event['mfu']:.1%}"
            self._update(event)
        elif event["event"] == "eval" and "val_loss" in event:
            self.state["val"] = event["val_loss"]
            self._print(
                f"iter {event['iter']}: train loss {_fmt(event['train_loss'])}, "
                f"val loss {_fmt(event['val_loss'])}"
            )
            self._update(event)
        elif event["event"] == "eval" and "val_loss_full" in event:
            self._print(f"whole-split validation loss: {event['val_loss_full']:.4f}")
        elif event["event"] == "notice":
            self.note(event["text"])
        elif event["event"] == "checkpoint":
            self._print(f"[dim]saved {markup(event['path'])}[/]")

    def _update(self, event: TrainEvent | EvalEvent) -> None:
        fields = {
            "loss": _fmt(self.state["loss"]),
            "val": _fmt(self.state["val"]),
            "tps": _fmt(self.state["tps"], ",.0f"),
            "mfu": self.state["mfu"],
        }
        if self.progress is not None and self.task is not None:
            if not self.budget:
                self.progress.update(self.task, completed=event["iter"], **fields)
            elif event["event"] == "train":  # a time budget's bar moves with the seconds
                self.progress.update(self.task, completed=event["elapsed"], **fields)
            else:  # an evaluation carries no time: keep the bar where it is
                self.progress.update(self.task, **fields)
        elif event["event"] == "train" and time.monotonic() - self._last_print > 5:
            self._last_print = time.monotonic()
            self.console.print(
                f"iter {event['iter']}/{self.total}: loss {fields['loss']}, lr {event['lr']:.2e}, "
                f"{fields['tps']} tok/s{fields['mfu']}"
            )

    def final_eval_progress(self, done: int, total: int) -> None:
        """The final validation's progress (the run's `on_progress` callback): its own bar on
        a terminal, a line every 5 s otherwise."""
        if self.live:
            if self.eval_task is None:
                if self.progress is not None:
                    self.progress.stop()
                self.progress = Progress(
                    TextColumn("[bold]final validation"),
                    BarColumn(),
                    TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
                    TimeRemainingColumn(),
                    TextColumn("[dim]Ctrl+C skips it"),
                    console=self.console,
                )
                self.eval_task = self.progress.add_task("eval", total=total)
                self.progress.start()
            if self.progress is not None:
                self.progress.update(self.eval_task, completed=done)
        elif time.monotonic() - self._last_print > 5 or done == total:
            self._last_print = time.monotonic()
            self.console.print(f"final validation: {done:,}/{total:,} tokens (Ctrl+C skips it)")

    def note(self, text: str) -> None:
        self._print(f"[yellow]note:[/] {markup(text)}")

    def _print(self, text: str) -> None:
        self.console.print(text)

    def finish(self, result: dict[str, Any], seconds: float) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        what = "stopped (checkpoint saved)" if result["reason"] == "interrupted" else "finished"
        self.console.print(
            f"[green]{what}[/] at iteration {result['iter']} in {seconds:.1f}s; "
            f"model in {markup(result['out'])}"
        )
