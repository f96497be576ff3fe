"""Crash safety: a training run killed with kill -9 at any moment resumes bit-exactly, an export
killed mid-write leaves a model that works, and a full disk loses nothing (checkpoints, exports,
data, chat history).

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError

from minigpt_tui.dialogue import Turn
from minigpt_tui.history import Conversation, HistoryStore, export
from model import checkpoint, modeldir, rundir, trainer_state
from model.events import METRICS_FILE
from tests.helpers import (
    TINY_SHAPE,
    cli,
    expect_one_line_error,
    make_data,
    make_model,
    tiny_train_args,
)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------- kill -9

MODEL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]


MODEL += ["--dropout", "0.1"]  # dropout: the torch RNG state must be restored too


RUN = ["--device", "cpu", "--batch-size", "8", "--max-iters", "80", "--ckpt-interval", "7"]


RUN += ["--no-samples", "--no-final-eval", "--keep-checkpoints", "3"]


MAX_ITERS = 80


# The child with every fsync slowed down, so that a checkpoint write takes long enough to be
# caught in the act (the staging directory exists for ~0.5 s instead of ~5 ms).
SLOW_FSYNC = (
    "import os, time; fsync = os.fsync\n"
    "os.fsync = lambda fd: (time.sleep(0.15), fsync(fd))[1]\n"
    "from minigpt_tui.cli import main; main()"
)


KILLS = 4


def _start(data: Path, out: Path, log: Path, resume: bool, slow_fsync: bool = False) -> Any:
    args = ["train", "--data", str(data), "--out", str(out), *RUN]
    args += ["--resume"] if resume else MODEL
    head = ["-c", SLOW_FSYNC] if slow_fsync else ["-m", "minigpt_tui"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, *head, *args], cwd=ROOT, env=env, stdout=f, stderr=f
        )


def _events(out: Path) -> list[dict[str, Any]]:
    """The events of the current (last started) process; torn lines are skipped."""
    try:
        lines = (out / METRICS_FILE).read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    return events[starts[-1] :] if starts else []


def _iteration(out: Path) -> int:
    return max((e["iter"] for e in _events(out) if e.get("event") == "train"), default=-1)


def _staging(out: Path) -> list[str]:
    try:
        return [n for n in os.listdir(out) if n.startswith(".step-") and n.endswith(".tmp")]
    except FileNotFoundError:
        return []


def _kill_when(proc: Any, ready: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _check_latest_loads(out: Path) -> int:
    """After any kill: `latest` is a complete checkpoint that loads, with its trainer state."""
    info = modeldir.read(out)
    model, _ = checkpoint.load(out)
    state = trainer_state.load(info)
    assert info.path.name == f"step-{state['step']:06d}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return int(state["step"])


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_exact(tmp_path: Path) -> None:
    seed = int(os.environ.get("HARDENING_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    note = f"(HARDENING_SEED={seed} reproduces the kill moments)"
    data = make_data(tmp_path)
    ref, out, log = tmp_path / "ref", tmp_path / "run", tmp_path / "train.log"
    reference = _start(data, ref, tmp_path / "ref.log", resume=False)  # alongside the kills

    # 1: a random iteration, after the first checkpoint.
    proc = _start(data, out, log, resume=False)
    target = rng.randint(8, 30)
    _kill_when(proc, lambda: _iteration(out) >= target)
    saved = [_check_latest_loads(out)]

    # 2: in the middle of writing a checkpoint (its staging directory exists).
    proc = _start(data, out, log, resume=True, slow_fsync=True)
    _kill_when(proc, lambda: bool(_staging(out)))
    assert _staging(out), f"the kill should leave a half-written checkpoint behind {note}"
    saved.append(_check_latest_loads(out))

    # 3: a random moment after launch (importing, loading, or training).
    proc = _start(data, out, log, resume=True)
    t_kill = time.monotonic() + rng.uniform(0.0, 3.0)
    _kill_when(proc, lambda: time.monotonic() >= t_kill or _iteration(out) >= MAX_ITERS - 10)
    saved.append(_check_latest_loads(out))

    # 4: a random iteration after the resume point.
    proc = _start(data, out, log, resume=True)
    target = min(saved[-1] + rng.randint(1, 12), MAX_ITERS - 5)
    _kill_when(proc, lambda: _iteration(out) >= target)
    saved.append(_check_latest_loads(out))
    assert len(saved) == KILLS

    # The last resume runs to the end and leaves nothing stale behind.
    proc = _start(data, out, log, resume=True)
    assert proc.wait(120) == 0, log.read_text(errors="replace")[-2000:] + note
    assert reference.wait(120) == 0
    assert _check_latest_loads(out) == MAX_ITERS
    assert not [p for p in out.iterdir() if rundir.STALE.match(p.name)]
    final = modeldir.resolve(out) / modeldir.WEIGHTS_FILE
    expected = modeldir.resolve(ref) / modeldir.WEIGHTS_FILE
    assert final.read_bytes() == expected.read_bytes(), f"resumed weights differ {note}"
    starts = [e for e in _all_events(out) if e.get("event") == "start"]
    resumed = [e["resumed"] for e in starts]  # a kill while importing leaves no start event
    assert resumed[0] is False and all(resumed[1:]) and len(resumed) <= KILLS + 1


def _all_events(out: Path) -> list[dict[str, Any]]:
    events = []
    for line in (out / METRICS_FILE).read_bytes().split(b"\n"):
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_tidy_run_dir_clears_what_a_kill_leaves_and_keeps_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name in ("step-000007", "step-000014"):
        make_model(run, name)
    modeldir.point_latest(run, run / "step-000014")
    (run / ".step-000021.abc123.tmp").mkdir()  # killed while staging step 21
    (run / ".step-000021.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    shutil.copytree(run / "step-000007", run / ".step-000028.old")  # killed mid-replace
    os.symlink("step-000007", run / ".latest.tmp")  # killed while re-pointing latest
    (run / METRICS_FILE).write_bytes(b'{"event": "start", "iter": 0}\n{"event": "tr')
    removed = rundir.tidy(run)
    assert sorted(p.name for p in removed) == [".latest.tmp", ".step-000021.abc123.tmp"]
    # The only copy of a checkpoint (its replacement never arrived) is put back.
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("m")) == [
        "latest",
        "step-000007",
        "step-000014",
        "step-000028",
    ]
    assert modeldir.read(run).path.name == "step-000014"
    assert (run / METRICS_FILE).read_bytes().endswith(b'"tr\n')
    assert rundir.tidy(run) == []  # idempotent, and a clean file is left alone
    assert (run / METRICS_FILE).read_bytes().endswith(b'"tr\n')


@pytest.mark.slow
def test_kill_9_during_export_leaves_a_model_that_still_works(
    good: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed while model.onnx is being written in place: the directory still loads, and
    either has no model.onnx or a complete one; exporting again works."""
    pytest.importorskip("onnxscript")
    model = tmp_path / "model"
    shutil.copytree(good[0], model)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", SLOW_FSYNC, "export", "onnx", str(model), "--no-verify"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: any(p.name.startswith(".model.onnx.") for p in model.iterdir()))
    checkpoint.load(model)
    info = modeldir.read(model)
    if info.has_onnx:  # killed after the rename: the file must be complete and usable
        assert cli("generate", "-m", model, "--backend", "onnx", "-n", "3", "hi") == 0
    # Export again (the kill may have left a temp file beside it: harmless).
    assert cli("export", "onnx", model, "--no-verify", "--force") == 0
    capsys.readouterr()
    assert cli("generate", "-m", model, "--backend", "onnx", "-n", "3", "--seed", "1", "hi") == 0
    assert capsys.readouterr().out.strip()


# --------------------------------------------------------------------- disk full


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    assert cli(*tiny_train_args(good[1], out, *TINY_SHAPE, "--max-iters", "5")) == 0
    before = (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes()
    capsys.readouterr()

    def full(*args: Any, **kwargs: Any) -> None:  # what safetensors raises on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)  # the disk fills on the next save
    line = expect_one_line_error(
        capsys, *tiny_train_args(good[1], out, "--resume", "--max-iters", "10")
    )
    assert "No space left on device" in line and "step-000005 is intact" in line
    assert _check_latest_loads(out) == 5
    assert (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes() == before
    assert not [p for p in out.iterdir() if rundir.STALE.match(p.name)]
    monkeypatch.undo()  # space again: the run continues from step 5
    assert cli(*tiny_train_args(good[1], out, "--resume", "--max-iters", "10")) == 0
    assert _check_latest_loads(out) == 10


def test_disk_full_while_exporting_keeps_the_model_dir(
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("onnxscript")
    model = tmp_path / "model"
    shutil.copytree(good[0], model)
    files = {p.name: p.read_bytes() for p in model.iterdir()}
    monkeypatch.setattr(modeldir.os, "fsync", _enospc)
    expect_one_line_error(capsys, "export", "onnx", model, "--no-verify")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == files  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_while_preparing_data_keeps_the_old_data(
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(good[1], data)
    files = {p.name: p.read_bytes() for p in data.iterdir()}
    monkeypatch.setattr(os, "fsync", _enospc)
    line = expect_one_line_error(
        capsys, "data", "prepare", good[0].parent / "corpus.txt", "-o", data, "--force"
    )
    assert "No space left on device" in line
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in data.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging dir left


def _conversation(text: str) -> Conversation:
    return Conversation(None, "", "chat", "tiny", [Turn("user", "hi"), Turn("model", text)])


def test_disk_full_while_exporting_a_conversation_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "chat.md"
    export(_conversation("first"), target, {})
    before = target.read_bytes()
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError) as e:
        export(_conversation("second " * 1000), target, {})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["chat.md"]  # no temp file left


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A real 1 MiB filesystem (tmpfs, needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk, leaving about `leave` bytes free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_real_disk_full_checkpoint_and_history(
    tiny_disk: Path,
    good: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tiny_disk / "run"
    assert cli(*tiny_train_args(good[1], out, *TINY_SHAPE, "--max-iters", "5")) == 0
    before = (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes()
    store = HistoryStore(tiny_disk / "history.db")
    first = store.save(_conversation("kept"))
    _fill(tiny_disk, leave=16 * 1024)
    capsys.readouterr()
    expect_one_line_error(capsys, *tiny_train_args(good[1], out, "--resume", "--max-iters", "10"))
    assert _check_latest_loads(out) == 5
    assert (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".step-")]
    with pytest.raises(sqlite3.Error):
        for _ in range(50):  # a long conversation no longer fits
            store.save(_conversation("x" * 100_000))
    store.close()
    reopened = HistoryStore(tiny_disk / "history.db")
    loaded = reopened.load(first)
    assert loaded is not None and loaded.turns[-1].text == "kept"
    reopened.close()
