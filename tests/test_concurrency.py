"""Concurrent jobs share the CPUs (model/jobs.py): the fair-share rule, the registry's stale
entries, the re-check during training, and inference taking one thread beside a training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from model import jobs
from model.backend import SINGLE_THREAD_PARAMS, default_threads
from model.jobs import Job, Registration, ThreadShare, fair_threads
from model.startup import RunOptions
from model.train import train
from tests.helpers import make_data

TRAIN, IDLE, BUSY = Job(1, "", "train"), Job(2, "", "infer", False), Job(3, "", "infer", True)


@pytest.mark.parametrize(
    ("kind", "cpus", "alone", "others", "want"),
    [
        ("train", 2, 2, [], 2),  # alone: exactly what it uses today
        ("train", 2, 1, [], 1),  # OMP_NUM_THREADS=1 stays 1
        ("train", 2, 2, [TRAIN], 1),  # two trainings on 2 cores: one thread each
        ("train", 2, 2, [TRAIN, TRAIN], 1),  # never fewer than one
        ("train", 8, 8, [TRAIN], 4),
        ("train", 8, 4, [TRAIN], 4),  # never more than alone
        ("train", 2, 2, [BUSY], 1),  # a reply streaming beside it takes a core
        ("train", 2, 2, [IDLE], 2),  # an idle chat takes nothing
        ("train", 8, 8, [BUSY, BUSY, TRAIN], 3),
        ("train", 2, 64, [], 2),  # never more than the machine has
        ("infer", 2, 2, [], 2),
        ("infer", 2, 2, [TRAIN], 1),  # inference yields to a training
        ("infer", 4, 4, [BUSY], 4),
    ],
)
def test_fair_share(kind: str, cpus: int, alone: int, others: list[Job], want: int) -> None:
    assert fair_threads(kind, cpus, alone, others) == want


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def register_other(directory: Path, pid: int, kind: str = "train", **kw: Any) -> Path:
    started = kw.pop("started", jobs.process_start(pid))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "started": started, "kind": kind, "busy": True}))
    return path


def test_live_entries_count_and_stale_ones_are_removed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = register_other(tmp_path, int(done.stdout), started="123")  # ended: a stale entry
    reused = register_other(tmp_path, os.getppid(), started="1")  # a pid now someone else's
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "odd.json").write_text(json.dumps({"pid": 1, "started": "", "kind": "x"}))
    live = register_other(tmp_path, sleeper.pid)
    assert jobs.others(tmp_path) == [Job(sleeper.pid, jobs.process_start(sleeper.pid), "train")]
    assert live.exists() and not dead.exists() and not reused.exists()
    sleeper.kill()
    sleeper.wait()
    assert jobs.others(tmp_path) == []
    assert not live.exists()


def test_registration_is_written_marked_busy_and_removed(tmp_path: Path) -> None:
    reg = Registration("infer", tmp_path)
    reg.write()
    me = os.getpid()
    assert jobs.others(tmp_path, me=-1) == [Job(me, jobs.process_start(me), "infer", False)]
    assert jobs.others(tmp_path) == []  # a process never counts itself
    with reg.busy():
        with reg.busy():  # nested (two panes streaming): busy until both end
            pass
        assert jobs.others(tmp_path, me=-1)[0].busy
    assert not jobs.others(tmp_path, me=-1)[0].busy
    reg.remove()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_registry_changes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    reg = Registration("train", blocker / "jobs")
    reg.write()  # no error: the job runs as it would alone
    assert not reg.written
    assert jobs.others(blocker / "jobs") == []


def test_thread_share_rechecks_at_intervals(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    now = [0.0]
    calls: list[int] = []
    reg = Registration("train", tmp_path)
    share = ThreadShare(reg, alone=2, cpus=2, set_threads=calls.append, clock=lambda: now[0])
    assert share.update() == 2 and calls == []  # alone: torch's threads are left as they are
    other = register_other(tmp_path, sleeper.pid)
    now[0] += jobs.RECHECK_SECONDS / 2
    assert share.update() == 2  # not re-read yet
    now[0] += jobs.RECHECK_SECONDS
    assert share.update() == 1 and calls == [1]
    other.unlink()  # the other training ended
    now[0] += jobs.RECHECK_SECONDS
    assert share.update() == 2 and calls == [1, 2]


def test_inference_takes_one_thread_while_a_training_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setenv(jobs.ENV_DIR, str(tmp_path))
    monkeypatch.setattr("model.backend.available_cpus", lambda: 4)
    assert default_threads(SINGLE_THREAD_PARAMS * 2) == 4
    register_other(tmp_path, sleeper.pid, "train")
    assert default_threads(SINGLE_THREAD_PARAMS * 2) == 1


def test_training_drops_to_its_share_beside_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    registry = tmp_path / "jobs"
    monkeypatch.setenv(jobs.ENV_DIR, str(registry))
    monkeypatch.setattr(jobs, "_current", None)
    monkeypatch.setattr("model.device.available_cpus", lambda: 2)
    register_other(registry, sleeper.pid, "train")
    seen: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "train":
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        opts = RunOptions(
            data=make_data(tmp_path), out=tmp_path / "run", device="cpu", on_event=on_event
        )
        model = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
        train(model, {"batch_size": 2, "max_iters": 3, "log_interval": 1}, opts)
    finally:
        torch.set_num_threads(before)
        reg = jobs._current
        if reg is not None:
            reg.remove()
    assert seen and set(seen) == {1}
    assert [p.name for p in registry.iterdir()] == [f"{sleeper.pid}.json"]


def test_a_registry_that_is_not_a_directory_of_ours_is_not_used(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "jobs"
    link.symlink_to(target)  # e.g. made first by another user in a shared /tmp
    (target / "1.json").write_text(json.dumps({"pid": 1, "started": "", "kind": "train"}))
    assert not jobs.usable(link)
    assert jobs.others(link) == []
    reg = Registration("train", link)
    reg.write()
    assert not reg.written and [p.name for p in target.iterdir()] == ["1.json"]


def test_a_fifo_in_the_registry_is_skipped_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "7.json")
    assert jobs.others(tmp_path) == []
