"""Following a training run's metrics.jsonl (UI-free, so `watch` and its tests share it).

The file grows one JSON object per line while the run trains. It may be replaced or truncated
(a run started again in the same directory): the follower notices a new inode or a shrinking
file and reads it again from the start. A line still being written is kept until it ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.events import METRICS_FILE, Record, parse_line

READ_LIMIT = 4 * 1024 * 1024  # bytes read per poll, so a huge file never stalls the UI


class MetricsFollower:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._pos = 0
        self._partial = b""
        self.bad_lines = 0

    def poll(self) -> tuple[list[Record], bool]:
        """New events since the last poll, and whether the file started over."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [], False
        reset = self._inode is not None and (st.st_ino != self._inode or st.st_size < self._pos)
        if reset:
            self._pos, self._partial = 0, b""
        self._inode = st.st_ino
        if st.st_size == self._pos:
            return [], reset
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                chunk = f.read(READ_LIMIT)
        except OSError:
            return [], reset
        self._pos += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        events = []
        for line in lines:
            if not line.strip():
                continue
            event = parse_line(line)
            if event is None:  # a torn, foreign or hostile line
                self.bad_lines += 1
            else:
                events.append(event)
        return events, reset


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


@dataclass
class RunState:
    """What the watch screen shows, folded from the events so far."""

    status: str = "waiting"  # waiting, running, ended
    end_reason: str = ""
    starts: int = 0
    max_iters: int | None = None
    time_budget: float | None = None
    start_time: float | None = None
    start_iter: int = 0
    iter: int = 0
    loss: float | None = None
    lr: float | None = None
    tokens_per_sec: float | None = None
    elapsed: float | None = None
    val_loss: float | None = None
    val_iter: int | None = None
    val_loss_full: float | None = None  # the final evaluation over the whole val split
    sample: str = ""
    sample_iter: int | None = None
    checkpoint: str = ""
    last_event_time: float | None = None
    train: list[tuple[int, float]] = field(default_factory=list)  # (iter, loss)
    val: list[tuple[int, float]] = field(default_factory=list)  # (iter, val_loss)
    _rate: list[tuple[float, int]] = field(default_factory=list)  # (time, iter), recent

    def reset(self) -> None:
        fresh = RunState()
        self.__dict__.update(fresh.__dict__)

    def apply_all(self, events: Iterable[Record]) -> None:
        for event in events:
            self.apply(event)

    def apply(self, e: Record) -> None:
        kind = e.get("event")
        now = _num(e.get("time"))
        if now is not None:
            self.last_event_time = now
        it = e.get("iter")
        it = int(it) if isinstance(it, int | float) else None
        if kind == "start":
            self.starts += 1
            start_iter = it or 0
            if e.get("resumed"):  # keep the curve up to where the run resumed
                self.train = [p for p in self.train if p[0] < start_iter]
                self.val = [p for p in self.val if p[0] < start_iter]
            else:
                self.train, self.val = [], []
                self.loss = self.val_loss = self.val_loss_full = None
                self.sample, self.sample_iter = "", None
            self.status, self.end_reason = "running", ""
            mi = e.get("max_iters")
            self.max_iters = int(mi) if isinstance(mi, int | float) and mi > 0 else None
            self.time_budget = _num(e.get("time_budget"))
            self.start_time = now
            self.start_iter = self.iter = start_iter
            self._rate = []
        elif kind == "train" and it is not None:
            if self.status == "waiting":
                self.status = "running"
            loss = _num(e.get("loss"))
            if loss is not None:
                self.train.append((it, loss))
                self.loss = loss
            self.iter = it
            self.lr = _num(e.get("lr"))
            self.tokens_per_sec = _num(e.get("tokens_per_sec"))
            self.elapsed = _num(e.get("elapsed"))
            if now is not None:
                self._rate.append((now, it))
                del self._rate[:-20]
        elif kind == "eval" and it is not None:
            val = _num(e.get("val_loss"))
            if val is not None:
                self.val.append((it, val))
                self.val_loss, self.val_iter = val, it
            full = _num(e.get("val_loss_full"))
            if full is not None:
                self.val_loss_full = full
        elif kind == "sample":
            self.sample = str(e.get("text", ""))
            self.sample_iter = it
        elif kind == "checkpoint":
            self.checkpoint = str(e.get("path", ""))
        elif kind == "end":
            self.status = "ended"
            self.end_reason = str(e.get("reason", ""))
            if it is not None:
                self.iter = it
            elapsed = _num(e.get("elapsed"))
            if elapsed is not None:
                self.elapsed = elapsed

    def iters_per_sec(self) -> float | None:
        if len(self._rate) < 2:
            return None
        (t0, i0), (t1, i1) = self._rate[0], self._rate[-1]
        return (i1 - i0) / (t1 - t0) if t1 > t0 and i1 > i0 else None

    def eta(self) -> float | None:
        """Seconds left: by iterations (at the recent rate) or by the time budget."""
        if self.status != "running":
            return None
        options = []
        rate = self.iters_per_sec()
        if self.max_iters and rate:
            options.append(max(0.0, (self.max_iters - self.iter) / rate))
        if self.time_budget and self.elapsed is not None:
            options.append(max(0.0, self.time_budget - self.elapsed))
        return min(options) if options else None

    def progress(self) -> float | None:
        if self.status == "ended":
            return 1.0
        parts = []
        if self.max_iters:
            parts.append(self.iter / self.max_iters)
        if self.time_budget and self.elapsed is not None:
            parts.append(self.elapsed / self.time_budget)
        return min(1.0, max(parts)) if parts else None

    def idle_for(self, now: float | None = None) -> float | None:
        if self.last_event_time is None:
            return None
        return (now if now is not None else time.time()) - self.last_event_time


def metrics_path(run: Path) -> Path:
    return run if run.name.endswith(".jsonl") else run / METRICS_FILE


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
