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
import os
import re
import shutil
from pathlib import Path

from model import modeldir
from model.events import METRICS_FILE

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
