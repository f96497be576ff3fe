"""A training run's directory: its checkpoints, `latest`, metrics file and housekeeping.

    RUN/step-NNNNNN/   complete checkpoints (model directories with trainer.pt), the newest
                       keep_checkpoints of them
    RUN/latest         a link to the newest complete checkpoint (model/modeldir.py)
    RUN/metrics.jsonl  the run's events (model/events.py)

Checkpoints are written by model/checkpoint.py under a temporary name and renamed into place,
so a killed run leaves at most stale temporary names, which `tidy` clears.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from model import modeldir
from model.events import METRICS_FILE

PID_FILE = ".train.pid"  # the process id of the run writing the directory, while it runs
STEP_DIR = re.compile(r"^step-(\d{6,})$")
STALE = re.compile(r"^\.(step-\d{6,}|latest)\.")  # temp names staged_dir/point_latest use


def step_dir(out: Path, step: int) -> Path:
    return out / f"step-{step:06d}"


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoint directories in a run directory, oldest first."""
    if not out.is_dir():
        return []
    found = [
        p for p in out.iterdir() if STEP_DIR.match(p.name) and (p / modeldir.CONFIG_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest(out: Path) -> Path | None:
    """The complete checkpoint RUN/latest points at, None when there is none (no link yet, or
    it names a checkpoint pruned meanwhile); ModelDirError when the link leads outside the
    run directory: a checkpoint of another run or model is never taken for this run's."""
    link = out / modeldir.LATEST
    if not (link.exists() or link.is_symlink()):
        return None
    target = modeldir.latest_target(out)
    return target if (target / modeldir.CONFIG_FILE).is_file() else None


def holds_run(out: Path) -> bool:
    return out.is_dir() and (
        bool(checkpoints(out)) or (out / METRICS_FILE).exists() or (out / modeldir.LATEST).exists()
    )


def can_resume(out: Path) -> bool:
    return bool(checkpoints(out)) or (out / modeldir.LATEST).exists()


def prune(out: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints (never the one `latest` points at)."""
    for old in checkpoints(out)[:-keep]:
        if (out / modeldir.LATEST).resolve() != old.resolve():
            shutil.rmtree(old, ignore_errors=True)


def clear(out: Path) -> None:
    """Remove a previous run's checkpoints, `latest` and metrics (`train --force`)."""
    for old in checkpoints(out):
        shutil.rmtree(old)
    for name in (modeldir.LATEST, METRICS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def tidy(out: Path) -> list[Path]:
    """Clear what a killed run left behind; returns the stale paths it removed.

    A process killed mid-checkpoint leaves its staging directory (.step-NNNNNN.*.tmp), maybe
    .step-NNNNNN.old from a replace (put back if the replacement never arrived) and maybe a
    torn last line in metrics.jsonl. Complete checkpoints and `latest` are never touched.
    """
    removed = []
    for p in sorted(out.iterdir()):
        if not STALE.match(p.name):
            continue
        final = out / p.name[1:].removesuffix(".old")
        if p.name.endswith(".old") and p.is_dir() and not final.exists():
            os.rename(p, final)  # killed between the two renames of a replace
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    with contextlib.suppress(OSError), open(out / METRICS_FILE, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")  # end the torn line: the next event starts on its own line
    return removed


class RunDirLocked(RuntimeError):
    """Another process is writing this run directory."""


@contextlib.contextmanager
def locked(out: Path) -> Iterator[Callable[[], None]]:
    """Hold the run directory for one training process while it runs there.

    The lock is the kernel's (flock on the directory itself), so it ends with the process
    however it ends: a run killed with kill -9 never leaves a lock that blocks --resume. A
    second run gets RunDirLocked naming the first's process id. Yields `claim`, which the run
    calls once it starts writing: it records the process id in RUN/.train.pid (removed at the
    end) for that message. Nothing is written before; a directory this call had to create is
    removed again if the run left it empty.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    pid_file = out / PID_FILE
    claimed = False

    def claim() -> None:
        nonlocal claimed
        modeldir.atomic_write_bytes(pid_file, f"{os.getpid()}\n".encode())
        claimed = True

    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirLocked(
                f"{out} is being written by another training run (process {_holder(out, fd)}); "
                "wait for it to end, or stop it, before training there"
            ) from None
        yield claim
    finally:
        if claimed:
            with contextlib.suppress(OSError):
                pid_file.unlink()
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):  # only if empty: a run that wrote nothing
                out.rmdir()


def _holder(out: Path, fd: int) -> str:
    """The process id holding the lock: from RUN/.train.pid, else the kernel's lock table."""
    with contextlib.suppress(OSError, ValueError):
        return str(int((out / PID_FILE).read_text().strip()))
    with contextlib.suppress(OSError, ValueError, IndexError):
        st = os.fstat(fd)
        where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and where in fields:
                return fields[fields.index(where) - 1]
    return "unknown"
