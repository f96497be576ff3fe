"""`minigpt-tui watch RUN_DIR`: a live view of a training run from its metrics.jsonl.

Polls the file twice a second (reading only what was appended), folds the events into a
RunState, and shows the loss curves, speed, progress, ETA and the latest sample. A run that
ends, restarts or has its file replaced is followed on; a run directory without metrics yet
shows a waiting message until the file appears. `c` leaves for `chat --follow` on the run
(the app exits with "chat" and the command starts the chat).
"""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, ProgressBar, Static

from minigpt_tui.safe_text import plain
from minigpt_tui.tui.metrics import MetricsFollower, RunState, duration, metrics_path
from minigpt_tui.tui.widgets.plot import LinePlot

POLL_SECONDS = 0.5
STALE_SECONDS = 120  # no event for this long while "running": say so


class WatchApp(App[str | None]):
    CSS_PATH = "watch.tcss"
    TITLE = "minigpt-tui watch"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [  # noqa: RUF012
        Binding("r", "reload", "Reload"),
        Binding("c", "chat", "Chat with it"),
        Binding("q,ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, run: Path, poll: float = POLL_SECONDS) -> None:
        super().__init__()
        self.run_path = run
        self.follower = MetricsFollower(metrics_path(run))
        self.state = RunState()
        self.poll_seconds = poll

    def compose(self) -> ComposeResult:
        # Paths and everything read from metrics.jsonl are shown inert: no markup, plain().
        yield Static(id="run-header", markup=False)
        with Horizontal(id="progress-row"):
            yield ProgressBar(total=100, show_eta=False, show_percentage=True, id="progress")
            yield Static(id="eta", markup=False)
        yield LinePlot(empty="waiting for the first losses…", id="loss-plot")
        yield Static(id="run-stats", markup=False)
        with VerticalScroll(id="sample-box"):
            yield Static(id="sample", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # Held, not queried each poll: a poll may fire while the app is shutting down.
        self.header = self.query_one("#run-header", Static)
        self.bar = self.query_one(ProgressBar)
        self.eta_label = self.query_one("#eta", Static)
        self.plot = self.query_one(LinePlot)
        self.stats = self.query_one("#run-stats", Static)
        self.sample_box = self.query_one("#sample-box", VerticalScroll)
        self.sample = self.query_one("#sample", Static)
        self.plot.border_title = "loss: train · val (bold)"
        self.refresh_view()
        self.poll()
        self.set_interval(self.poll_seconds, self.poll)

    def poll(self) -> None:
        events, reset = self.follower.poll()
        if reset:
            self.state.reset()
            self.notify("metrics.jsonl started over: following the new run", timeout=4)
        if events or reset:
            self.state.apply_all(events)
            self.plot.set_series(self.state.train, self.state.val)  # only when there is news
        self.refresh_view()

    def action_reload(self) -> None:
        self.follower = MetricsFollower(self.follower.path)
        self.state = RunState()
        self.plot.set_series()
        self.poll()

    def action_chat(self) -> None:
        from minigpt_tui.tui.follow import RunWatcher

        run = self.run_path.parent if self.run_path.is_file() else self.run_path
        if RunWatcher.newest(run) is None:
            self.notify("No checkpoint yet: chat once the run has written one.", markup=False)
            return
        self.exit("chat")

    def refresh_view(self) -> None:
        s = self.state
        header = self.header
        if not self.follower.path.exists() and s.status == "waiting":
            header.update(plain(f"{self.run_path}: waiting for {self.follower.path.name}…"))
        else:
            status = s.status
            if s.status == "ended":
                status = f"ended ({s.end_reason})" if s.end_reason else "ended"
            elif s.status == "running":
                idle = s.idle_for(time.time())
                if idle is not None and idle > STALE_SECONDS:
                    status = f"no update for {duration(idle)}"
            total = f"/{s.max_iters:,}" if s.max_iters else ""
            restarts = f" · run {s.starts}" if s.starts > 1 else ""
            header.update(
                plain(
                    f"{self.run_path} · {status}{restarts} · iter {s.iter:,}{total}", one_line=True
                )
            )
        progress = s.progress()
        bar = self.bar
        if progress is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=round(progress * 100, 1))
        idle = s.idle_for(time.time())
        stale = idle is not None and idle > STALE_SECONDS
        eta = None if stale else s.eta()  # a stalled run has no honest ETA
        self.eta_label.update(
            f"ETA {duration(eta)}" if eta is not None else f"elapsed {duration(s.elapsed)}"
        )
        parts = [f"loss {s.loss:.4f}" if s.loss is not None else "loss —"]
        if s.val_loss is not None:
            parts.append(f"val {s.val_loss:.4f} @ {s.val_iter:,}")
        if s.val_loss_full is not None:
            parts.append(f"val (full) {s.val_loss_full:.4f}")
        if s.tokens_per_sec is not None:
            parts.append(f"{s.tokens_per_sec:,.0f} tok/s")
        if s.lr is not None:
            parts.append(f"lr {s.lr:.2e}")
        parts.append(f"elapsed {duration(s.elapsed)}")
        self.stats.update(" │ ".join(parts))
        self.sample_box.border_title = (
            f"latest sample @ iter {s.sample_iter:,}"
            if s.sample_iter is not None
            else "latest sample"
        )
        self.sample.update(plain(s.sample) or "no sample yet")
