"""`minigpt-tui watch`: following metrics.jsonl, folding events, drawing, and the live app."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_tui_support import run_async, wait_for

from minigpt_tui.cli import main
from minigpt_tui.tui.metrics import MetricsFollower, RunState, duration, metrics_path
from minigpt_tui.tui.watch_app import WatchApp
from minigpt_tui.tui.widgets.plot import BRAILLE_BASE, as_series, rasterize, thin, y_range
from model.events import METRICS_FILE


def line(**event: Any) -> str:
    return json.dumps(event) + "\n"


def start(t: float = 1000.0, it: int = 0, resumed: bool = False, **kw: Any) -> str:
    return line(
        event="start",
        time=t,
        iter=it,
        max_iters=kw.get("max_iters", 100),
        time_budget=kw.get("time_budget"),
        config={},
        resumed=resumed,
    )


def train(it: int, loss: float, t: float | None = None, elapsed: float | None = None) -> str:
    return line(
        event="train",
        time=t if t is not None else 1000.0 + it,
        iter=it,
        loss=loss,
        lr=1e-3,
        tokens_per_sec=5000.0,
        elapsed=elapsed if elapsed is not None else it,
    )


def test_follower_reads_appends_partial_lines_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    f = MetricsFollower(path)
    assert f.poll() == ([], False), "a missing file is just 'nothing yet'"
    path.write_text(start() + train(1, 3.0) + '{"event": "train", "it')
    events, reset = f.poll()
    assert [e["event"] for e in events] == ["start", "train"] and not reset
    with open(path, "a") as out:
        out.write('er": 2, "loss": 2.5}\n' + "not json\n" + "[1, 2]\n")
    events, _ = f.poll()
    assert [(e["event"], e["iter"]) for e in events] == [("train", 2)]
    assert f.bad_lines == 2
    assert f.poll() == ([], False)


def test_follower_notices_truncation_and_replacement(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(start() + train(1, 3.0) + train(2, 2.9))
    f = MetricsFollower(path)
    f.poll()
    path.write_text(start(t=2000))  # truncated in place: shorter than what was read
    events, reset = f.poll()
    assert reset and [e["event"] for e in events] == ["start"]
    tmp = tmp_path / "new.jsonl"
    tmp.write_text(start(t=3000) + train(1, 4.0) + train(2, 3.9) + train(3, 3.8))
    os.replace(tmp, path)  # replaced by a new file (new inode)
    events, reset = f.poll()
    assert reset and len(events) == 4


def test_watch_skips_hostile_metrics_lines(tmp_path: Path) -> None:
    from minigpt_tui.tui.metrics import MetricsFollower

    path = tmp_path / METRICS_FILE
    good = json.dumps({"event": "train", "iter": 1, "loss": 2.0})
    path.write_bytes(b"[" * 100_000 + b"\n\xff\xfe\n" + b"9" * 5000 + b"\n" + good.encode() + b"\n")
    follower = MetricsFollower(path)
    events, _ = follower.poll()
    assert [e["iter"] for e in events] == [1] and follower.bad_lines == 3


def test_run_state_folds_a_run_and_restarts() -> None:
    s = RunState()
    s.apply_all(
        json.loads(x)
        for x in [
            start(max_iters=100),
            train(10, 3.0, t=1010),
            train(20, 2.5, t=1020),
            line(event="eval", time=1020, iter=20, train_loss=2.5, val_loss=2.7),
            line(event="sample", time=1021, iter=20, text="ROMEO:\nhi"),
        ]
    )
    assert s.status == "running" and s.iter == 20 and s.loss == 2.5
    assert s.train == [(10, 3.0), (20, 2.5)] and s.val == [(20, 2.7)]
    assert s.sample == "ROMEO:\nhi" and s.sample_iter == 20
    assert s.iters_per_sec() == pytest.approx(1.0)
    assert s.eta() == pytest.approx(80.0)
    assert s.progress() == pytest.approx(0.2)
    # Resumed from iter 15: keep the curve before it, drop what will be redone.
    s.apply(json.loads(start(t=1100, it=15, resumed=True)))
    assert s.train == [(10, 3.0)] and s.val == [] and s.starts == 2
    # A fresh start clears everything.
    s.apply(json.loads(start(t=1200)))
    assert s.train == [] and s.sample == "" and s.loss is None
    s.apply(json.loads(line(event="eval", time=1290, iter=0, val_loss_full=1.75)))
    s.apply(json.loads(line(event="end", time=1300, iter=0, reason="time budget", elapsed=99)))
    assert s.status == "ended" and s.end_reason == "time budget" and s.eta() is None
    assert s.val_loss_full == 1.75 and s.elapsed == 99 and s.val == []


def test_eta_from_time_budget() -> None:
    s = RunState()
    s.apply(json.loads(start(max_iters=0, time_budget=600)))
    s.apply(json.loads(train(5, 3.0, elapsed=150)))
    assert s.eta() == pytest.approx(450) and s.progress() == pytest.approx(0.25)


def test_plot_rasterizes_a_falling_line() -> None:
    pts = [(float(i), 4.0 - i * 0.1) for i in range(30)]
    lo, hi = y_range([as_series(pts)])  # type: ignore[misc]
    assert lo < 1.1 and hi > 1.1
    cells = rasterize(pts, 0, 29, lo, hi, width=10, height=4)
    assert cells[0][0] and cells[-1][-1], "starts top-left, ends bottom-right"
    assert not cells[-1][0] and not cells[0][-1]
    assert all(0 <= b < 256 for row in cells for b in row)
    assert chr(BRAILLE_BASE + cells[0][0]) != " "
    assert y_range([as_series([])]) is None
    many = as_series([(float(i), float(i % 2)) for i in range(100_000)] + [(1e5, float("nan"))])
    thinned = thin(many, 0, 99_999, 40)
    assert len(thinned) == 40 and all(abs(y - 0.5) < 0.01 for _, y in thinned), "column means"
    assert duration(3725) == "1h02m" and duration(75) == "1m15s" and duration(None) == "—"
    assert metrics_path(Path("run")) == Path("run/metrics.jsonl")


@run_async
async def test_watch_app_follows_a_live_run(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    app = WatchApp(tmp_path, poll=0.02)
    async with app.run_test(size=(80, 24)) as pilot:
        header = app.query_one("#run-header")
        await pilot.pause(0.05)
        assert "waiting for metrics.jsonl" in str(header.render())
        path.write_text(
            start(max_iters=100)
            + "".join(train(i, 4 - i / 50) for i in range(1, 40))
            + line(event="sample", time=1040, iter=39, text="JULIET:\nAy me")
        )
        await wait_for(pilot, lambda: app.state.iter == 39)
        await pilot.pause(0.05)
        assert "iter 39/100" in str(header.render())
        assert "Ay me" in str(app.query_one("#sample").render())
        with open(path, "a") as out:
            out.write(line(event="end", time=1050, iter=39, reason="done"))
        await wait_for(pilot, lambda: app.state.status == "ended")
        await pilot.pause(0.05)
        assert "ended (done)" in str(header.render())
        path.write_text(start(t=5000, max_iters=10))  # a new run in the same directory
        await wait_for(pilot, lambda: app.state.status == "running" and app.state.train == [])
        assert app.state.max_iters == 10


def test_watch_command_rejects_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["watch", str(tmp_path / "nope" / "run")])
    assert e.value.code != 0
    assert "run directory not found" in capsys.readouterr().err


def test_a_fifo_or_device_named_metrics_jsonl_never_blocks_or_takes_events(tmp_path: Path) -> None:
    """train's event log appends only to a regular file: a FIFO put in its place is one
    TrainingError at once (no reader, no wait), and `watch`'s follower reads nothing from it."""
    import time

    from model.errors import TrainingError
    from model.events import EventLog

    path = tmp_path / METRICS_FILE
    os.mkfifo(path)
    start = time.monotonic()
    with pytest.raises(TrainingError, match=r"metrics\.jsonl"):
        EventLog(path).emit({"event": "notice", "iter": 0, "text": "hi"})  # type: ignore[typeddict-item]
    assert time.monotonic() - start < 5
    assert MetricsFollower(path).poll() == ([], False)
    log = EventLog(tmp_path / "ok.jsonl")
    log.emit({"event": "notice", "iter": 0, "text": "hi"})  # type: ignore[typeddict-item]
    assert json.loads((tmp_path / "ok.jsonl").read_text())["text"] == "hi"
