"""Model and run directories used before, newest first, for the chat app's model picker.

Kept as a small JSON list in the data directory (next to the history database). A file that
cannot be read is treated as empty and replaced at the next write: it only saves typing.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from minigpt_tui.history import data_dir
from model import userfile

FILE_NAME = "recent-models.json"
KEEP = 12
MAX_BYTES = 64 * 1024


def recent_path() -> Path:
    return data_dir() / FILE_NAME


def load() -> list[str]:
    path = recent_path()
    try:
        items = json.loads(userfile.read_text(path, MAX_BYTES))
    except (OSError, ValueError, RecursionError):  # UserFileError: a FIFO, too large, not UTF-8
        return []
    if not isinstance(items, list):
        return []
    return [p for p in items if isinstance(p, str) and p and "\n" not in p][:KEEP]


def remember(model: Path) -> None:
    """Put a model directory (or a run directory) first in the list; bundled models are listed
    anyway, so they are not kept. Failing to write is silent: nothing depends on it."""
    from minigpt_tui.models import BUNDLED_DIR
    from model.modeldir import write_json

    path = str(model.expanduser().absolute())
    if model.absolute().is_relative_to(BUNDLED_DIR):
        return
    items = [path, *(p for p in load() if p != path)][:KEEP]
    with contextlib.suppress(OSError, ValueError):  # ModelDirError: not a regular file there
        write_json(recent_path(), items)
