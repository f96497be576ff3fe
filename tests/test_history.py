"""The SQLite conversation history: round trips, bad databases, export."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from minigpt_tui.dialogue import Turn
from minigpt_tui.history import (
    Conversation,
    HistoryStore,
    data_dir,
    default_export_name,
    export,
    export_text,
    title_for,
)

NAMES = {"user": "ROMEO", "model": "JULIET"}


def conv(*texts: str) -> Conversation:
    turns = [Turn("user" if i % 2 == 0 else "model", t) for i, t in enumerate(texts)]
    return Conversation(None, "", "chat", "tiny", turns)


def test_save_list_load_update_delete(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.db")
    a = conv("Hello there", "Good morrow.")
    store.save(a)
    b = conv("Second talk")
    store.save(b)
    assert [c.title for c in store.list()] == ["Second talk", "Hello there"]
    a.turns.append(Turn("user", "More"))
    store.save(a)
    assert store.list()[0].id == a.id, "updating moves a conversation to the top"
    store.close()

    again = HistoryStore(tmp_path / "h.db")
    loaded = again.load(a.id)  # type: ignore[arg-type]
    assert loaded is not None
    assert [(t.role, t.text) for t in loaded.turns] == [
        ("user", "Hello there"),
        ("model", "Good morrow."),
        ("user", "More"),
    ]
    again.delete(a.id)  # type: ignore[arg-type]
    assert again.load(a.id) is None  # type: ignore[arg-type]
    assert [c.id for c in again.list()] == [b.id]


def test_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    db.write_bytes(b"this is not an sqlite database, just some bytes" * 100)
    store = HistoryStore(db)
    assert "moved it to" in store.notice
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.db.broken-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    store.save(conv("fresh start"))
    assert [c.title for c in store.list()] == ["fresh start"]


def test_wrong_schema_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE conversations (x INTEGER)")
    store = HistoryStore(db)
    assert "unreadable" in store.notice and store.persistent
    store.save(conv("works"))


def test_locked_database_falls_back_to_memory(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    HistoryStore(db).close()
    holder = sqlite3.connect(db)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = HistoryStore(db, timeout=0.05)
        assert "locked" in store.notice and not store.persistent
        store.save(conv("kept in memory"))
        assert [c.title for c in store.list()] == ["kept in memory"]
    finally:
        holder.rollback()
        holder.close()
    assert db.exists(), "a locked database is never moved or touched"


def test_memory_store_and_data_dir_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGPT_TUI_DATA_DIR", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    store = HistoryStore.default()
    assert store.path == tmp_path / "d" / "history.db" and store.path.exists()
    mem = HistoryStore.memory()
    assert not mem.persistent
    mem.save(conv("x"))
    assert len(mem.list()) == 1


def test_export_markdown_and_text(tmp_path: Path) -> None:
    c = conv("Hello", "Good morrow.\nHow now?")
    c.title = title_for(c.turns)
    md = export_text(c, NAMES, markdown=True)
    assert md.startswith("# Hello\n")
    assert "**ROMEO:**\n\nHello\n" in md and "**JULIET:**\n\nGood morrow.\nHow now?\n" in md
    txt = export_text(c, NAMES, markdown=False)
    assert txt == "ROMEO:\nHello\n\nJULIET:\nGood morrow.\nHow now?\n"
    (tmp_path / "sub").mkdir()  # export creates no directory (issue 17): it must exist
    written = export(c, tmp_path / "sub" / "talk.txt", NAMES)
    assert written.read_text() == txt
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["talk.txt"], "no temp files left"
    assert default_export_name(c).endswith(".md")


def test_complete_mode_exports_the_document() -> None:
    c = Conversation(None, "Once", "complete", "tiny", [Turn("document", "Once upon a time")])
    assert export_text(c, NAMES, markdown=False) == "Once upon a time\n"


def test_title_is_first_line_shortened() -> None:
    assert title_for([Turn("user", "  a\nb  ")]) == "a b"
    assert title_for([]) == "(empty)"
    assert len(title_for([Turn("user", "x" * 200)])) == 60


def _lock(db: Path) -> sqlite3.Connection:
    """Another program holding the database: every write waits, then fails."""
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_save_that_fails_is_said_kept_and_retried(tmp_path: Path) -> None:
    """A database locked by another program after the app opened it: the save fails in one
    line naming the database (not a silent loss), the store remembers the conversation as
    unsaved, and flush() saves it once the lock is gone."""
    from minigpt_tui.history import HistorySaveError

    db = tmp_path / "history.db"
    store = HistoryStore(db, timeout=0.05)
    a = conv("Hello there", "Good morrow.")
    store.save(a)
    a.turns.append(Turn("user", "the last exchange"))
    holder = _lock(db)
    try:
        with pytest.raises(HistorySaveError) as caught:
            store.save(a)
        assert str(db) in str(caught.value) and "\n" not in str(caught.value)
        assert store.unsaved_error() is not None
        assert store.flush() is not None, "still locked: flush says why"
    finally:
        holder.rollback()
        holder.close()
    assert store.flush() is None and store.unsaved_error() is None
    store.close()
    loaded = HistoryStore(db).load(a.id)  # type: ignore[arg-type]
    assert loaded is not None and loaded.turns[-1].text == "the last exchange"


def test_quitting_chat_with_an_unsaved_exchange_is_one_line_and_non_zero(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_terminal: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The app saved its last exchange while another program held the database: `chat` used
    to end with exit 0 and the exchange lost without a word."""
    from minigpt_tui.tui.app import ChatApp
    from tests.helpers import expect_one_line_error, make_model

    monkeypatch.setenv("MINIGPT_TUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MINIGPT_TUI_CONFIG", str(tmp_path / "none.toml"))
    model = make_model(tmp_path)
    db = tmp_path / "data" / "history.db"
    holders: list[sqlite3.Connection] = []

    def run(self: ChatApp, *args: object, **kwargs: object) -> None:
        from minigpt_tui.history import HistorySaveError

        self.history.timeout = 0.05
        holders.append(_lock(db))  # another program takes the database mid-session
        with pytest.raises(HistorySaveError):  # what the app shows at the time
            self.history.save(conv("hi", "hello"))

    monkeypatch.setattr(ChatApp, "run", run)
    monkeypatch.setattr("minigpt_tui.history.QUIT_RETRY_SECONDS", 0.05)
    try:
        line = expect_one_line_error(capsys, "chat", "-m", model)
    finally:
        for h in holders:
            h.rollback()
            h.close()
    assert "not saved" in line and str(db) in line


def test_a_database_from_a_newer_version_is_read_only_never_moved(tmp_path: Path) -> None:
    """A downgrade used to move the newer database aside and start an empty one: all history
    hidden. It is opened read-only: listed, never written, never moved."""
    db = tmp_path / "history.db"
    store = HistoryStore(db)
    store.save(conv("made by a newer app"))
    store.close()
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA journal_mode = DELETE")  # one file: nothing beside it to compare
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    before = db.read_bytes()
    store = HistoryStore(db)
    assert store.read_only and store.persistent
    assert "newer" in store.notice and "read-only" in store.notice
    assert [c.title for c in store.list()] == ["made by a newer app"]
    store.save(conv("not written"))
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.db"]
    assert db.read_bytes() == before


def test_delete_can_be_undone_and_a_deleted_open_conversation_saves_again(
    tmp_path: Path,
) -> None:
    """Deleting the conversation on screen used to make every later save fail (a foreign
    key): saving it again brings it back. delete() returns what restore() puts back."""
    store = HistoryStore(tmp_path / "h.db")
    a = conv("keep me", "kept")
    store.save(a)
    removed = store.delete(a.id)  # type: ignore[arg-type]
    assert removed is not None and store.load(a.id) is None  # type: ignore[arg-type]
    store.restore(removed)
    back = store.load(a.id)  # type: ignore[arg-type]
    assert back is not None and [t.text for t in back.turns] == ["keep me", "kept"]
    assert store.search("keep")
    store.delete(a.id)  # type: ignore[arg-type]
    a.turns.append(Turn("user", "still talking"))
    store.save(a)  # the open conversation, deleted from the list meanwhile
    again = store.load(a.id)  # type: ignore[arg-type]
    assert again is not None and again.turns[-1].text == "still talking"


def test_exporting_over_a_fifo_or_device_is_an_oserror_and_replaces_nothing(
    tmp_path: Path,
) -> None:
    """Ctrl+S export, after its second Enter: as root it replaced /dev/null with a regular
    file. An OSError (what the app shows as `Could not write ...`), the FIFO kept."""
    import os

    fifo = tmp_path / "talk.md"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="only a regular file is replaced"):
        export(conv("Hello"), fifo, NAMES)
    assert fifo.exists() and not fifo.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["talk.md"]


def test_a_session_kept_in_memory_because_of_a_lock_is_saved_at_quit_or_said(
    tmp_path: Path,
) -> None:
    """Locked at start, the store keeps the session in memory (the app says so once); at quit
    flush() writes it to the database if the lock is gone, else says it is lost."""
    db = tmp_path / "history.db"
    HistoryStore(db).close()
    holder = _lock(db)
    try:
        store = HistoryStore(db, timeout=0.05)
        assert not store.persistent
        store.save(conv("said while locked", "reply"))
        assert store.unsaved_error() is not None and "memory" in store.unsaved_error()  # type: ignore[operator]
        assert store.flush(timeout=0.05) is not None
    finally:
        holder.rollback()
        holder.close()
    assert store.flush(timeout=0.05) is None
    store.close()
    assert [c.title for c in HistoryStore(db).list()] == ["said while locked"]


def test_no_history_keeps_nothing_and_says_nothing_at_quit() -> None:
    store = HistoryStore.memory()
    store.save(conv("not kept, as asked"))
    assert store.unsaved_error() is None and store.flush() is None


# --------------------------------------- a data directory that cannot be written


def _turn(text: str) -> Any:
    from minigpt_tui.dialogue import Turn

    return Turn("user", text)


def _saved(path: Path) -> int:
    store = HistoryStore(path)
    conv_id = store.save(Conversation(None, "", "chat", "tiny", [_turn("kept")]))
    store.close()
    return conv_id


def test_an_unusable_data_dir_keeps_history_in_memory_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINIGPT_TUI_DATA_DIR", "/proc/self")
    store = HistoryStore.default()
    assert not store.persistent and "/proc/self/history.db cannot be created" in store.notice
    store.save(Conversation(None, "", "chat", "tiny", [_turn("in memory")]))
    assert [c.title for c in store.list()] == ["in memory"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    """A directory that cannot be written, with a healthy history.db saved in it first: a
    read-only tmpfs when we are root (root ignores file modes), else chmod."""
    where = tmp_path / "ro"
    where.mkdir()
    if os.geteuid() != 0:
        conv_id = _saved(where / "history.db")
        (where / "history.db").chmod(0o444)
        where.chmod(0o555)
        yield where, conv_id
        where.chmod(0o755)
        return
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here")
    try:
        conv_id = _saved(where / "history.db")
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, timeout=10)
        yield where, conv_id
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def test_a_read_only_history_opens_read_only_and_is_never_moved_aside(
    read_only_dir: tuple[Path, int],
) -> None:
    where, conv_id = read_only_dir
    before = sorted(p.name for p in where.iterdir())
    store = HistoryStore(where / "history.db")
    assert store.read_only and store.persistent and "is read-only" in store.notice
    loaded = store.load(conv_id)
    assert loaded is not None and loaded.turns[0].text == "kept"
    store.save(Conversation(None, "", "chat", "tiny", [_turn("not saved")]))  # no error
    store.delete(conv_id)
    assert [c.id for c in store.list()] == [conv_id]
    store.close()
    assert sorted(p.name for p in where.iterdir()) == before  # nothing moved aside


def test_a_data_dir_that_cannot_be_written_keeps_history_in_memory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; /proc covers this case as root")
    where = tmp_path / "empty-ro"
    where.mkdir()
    where.chmod(0o555)
    try:
        store = HistoryStore(where / "history.db")
        assert not store.persistent and "cannot be created" in store.notice
    finally:
        where.chmod(0o755)
