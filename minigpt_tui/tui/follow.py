"""`chat --follow`: talk to a run while it trains, switching to each newer checkpoint.

`train` writes each checkpoint under a temporary name, renames it into place complete, and only
then points RUN/latest at it (model/modeldir.py), so the link names complete checkpoints only.
The watcher reads the link (one readlink, cheap enough to poll every second, also over ssh on
a busy disk) and reports a checkpoint it has not loaded yet; the app loads it in a worker and
switches between replies. A checkpoint pruned away while loading fails that load only: the
next poll finds the newer one. The first load, which has no model to fall back on, moves on to
the newest checkpoint instead.

Checkpoints hold PyTorch weights: the torch backend loads them as they are; `--backend onnx`
exports each one to ONNX first (a few seconds, in the loading worker) into a directory of this
session's, removed at exit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from minigpt_tui.errors import UserError
from model import modeldir, rundir

if TYPE_CHECKING:
    from model.backend import Backend

POLL_SECONDS = 1.0


@dataclass
class Checkpoint:
    """A complete checkpoint of the run: where it is, and what its config.json says of it."""

    path: Path
    step: int | None
    val_loss: float | None

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        step: int | None = None
        val: float | None = None
        try:  # the summary is for the status line only: a surprise in it is not an error
            summary = json.loads((path / modeldir.CONFIG_FILE).read_text("utf-8"))["summary"]
            step = summary.get("iter") if isinstance(summary.get("iter"), int) else None
            v = summary.get("val_loss")
            val = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        if step is None and (m := rundir.STEP_DIR.match(path.name)):
            step = int(m.group(1))
        return cls(path, step, val)

    def describe(self) -> str:
        parts = [f"step {self.step:,}" if self.step is not None else self.path.name]
        if self.val_loss is not None:
            parts.append(f"val loss {self.val_loss:.4f}")
        return " · ".join(parts)


class RunWatcher:
    """Which checkpoint of a run is the newest, read from its `latest` link."""

    def __init__(self, run: Path, current: Path) -> None:
        self.run = run
        self.current = current  # the checkpoint loaded (or loading) now
        self.seen = current.name  # the newest checkpoint name handed out

    @classmethod
    def open(cls, path: Path) -> RunWatcher:
        """Follow the run at `path` (a run directory; a checkpoint inside one means its run)."""
        path = path.expanduser()
        if rundir.STEP_DIR.match(path.name) or path.name == modeldir.LATEST:
            path = path.parent
        if not path.is_dir():
            raise UserError(f"--follow needs a training run directory; {path} is not a directory")
        newest = cls.newest(path)
        if newest is None:
            if rundir.holds_run(path):
                raise UserError(
                    f"{path} has no checkpoint yet; start chat --follow once `train` has written "
                    "one (or lower --ckpt-interval)"
                )
            raise UserError(f"--follow needs a training run directory; {path} is not one")
        return cls(path, newest)

    @staticmethod
    def newest(run: Path) -> Path | None:
        """The checkpoint `latest` points at, if it is complete; else the newest step dir.
        ModelDirError when `latest` leads outside the run (modeldir.latest_target)."""
        modeldir.latest_target(run)
        try:
            target = run / os.readlink(run / modeldir.LATEST)
        except OSError:  # no link (yet), or not a link: a plain directory `latest`
            target = run / modeldir.LATEST
        if (target / modeldir.CONFIG_FILE).is_file():
            return target
        found = rundir.checkpoints(run)
        return found[-1] if found else None

    def load_first(self, load: Callable[[Path], Backend]) -> Backend:
        """Load the checkpoint followed now. `train` keeps only its newest few, so the one
        picked at start can be pruned before (or while) it is read: then take the newest."""
        for _ in range(3):
            try:
                return load(self.current)
            except Exception:
                newest = self.newest(self.run)
                if newest is None or newest == self.current:
                    raise  # nothing newer to try: this failure is the model's own
                self.current = newest
                self.seen = newest.name
        return load(self.current)

    def poll(self) -> Path | None:
        """A newer checkpoint than the last one handed out, or None. A `latest` retargeted
        outside the run is never followed (it is not this run's checkpoint)."""
        try:
            modeldir.latest_target(self.run)
            name = os.readlink(self.run / modeldir.LATEST)
        except (OSError, modeldir.ModelDirError):
            return None
        if name == self.seen or Path(name).name == self.seen:
            return None
        target = self.run / name
        if not (target / modeldir.CONFIG_FILE).is_file():
            return None  # pruned meanwhile, or not what train writes: wait for the next
        self.seen = target.name
        return target


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def follow_backend(backend: str) -> str:
    """The backend a followed run uses: torch unless ONNX is asked for; both need PyTorch,
    since checkpoints hold PyTorch weights (ONNX exports each one first)."""
    if not torch_available():
        raise UserError(
            "--follow needs PyTorch: a run's checkpoints are PyTorch weights (install "
            "minigpt-tui[train], or export a checkpoint and chat with it without --follow)"
        )
    return "onnx" if backend == "onnx" else "torch"


class CheckpointLoader:
    """Loads a checkpoint with the follow backend (a `ModelLoader` loader, in its worker)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.exports: Path | None = None  # this session's ONNX exports (onnx backend only)

    def label(self) -> str:
        return "torch" if self.backend == "torch" else "onnx (fresh export)"

    def __call__(self, path: Path) -> Backend:
        from minigpt_tui.generation import load_backend

        if self.backend == "torch":
            return load_backend(path, "torch")
        from export.onnx_export import export_onnx

        if self.exports is None:
            self.exports = Path(tempfile.mkdtemp(prefix="minigpt-follow-"))
        out = self.exports / path.name
        export_onnx(path, out, verify=False, force=True)
        backend = load_backend(out, "onnx")  # the session holds the graph: the file may go
        for old in self.exports.iterdir():
            if old != out:
                shutil.rmtree(old, ignore_errors=True)
        return backend

    def close(self) -> None:
        if self.exports is not None:
            shutil.rmtree(self.exports, ignore_errors=True)
            self.exports = None
