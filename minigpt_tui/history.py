"""Saved conversations: a small SQLite database in the user's data directory.

    conversations(id, title, mode, model, created, updated, settings)
    messages(conversation_id, seq, role, text, parent, shown)
    messages_fts(text, conversation_id, seq)   FTS5 index of messages, where SQLite has FTS5

Messages form a tree (minigpt_tui/branches.py): `parent` is the seq of the message above (NULL
for a first turn), `shown` marks the child each message shows (the branch on screen). Version 1
files (a plain list of messages) are migrated in place when opened: each message's parent is
the one before it.

Search uses the FTS5 index where the Python build's SQLite has it, else a LIKE scan of the
messages (slower, same results for whole words); both find text on every branch. Opening a
database that lacks the index, or whose index fell behind its messages, builds it from the
saved messages.

A database that cannot be read (corrupt, not SQLite) is moved aside and a fresh one started,
so the app keeps working and the old file stays on disk for the user to inspect. A database
that another process keeps locked is not touched: this session keeps its history in memory.
A healthy database that cannot be written (read-only file or filesystem) is opened read-only:
its conversations can be reopened, this session's are not saved. A data directory where no
database can be made (read-only, /proc, a file) leaves history in memory. Each case sets
`notice`, which the app shows once.
`MINIGPT_TUI_DATA_DIR` overrides the data directory (tests use it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minigpt_tui.branches import Branches
from minigpt_tui.dialogue import Turn, messages_of
from model.errors import first_line
from model.modeldir import ModelDirError, atomic_write_bytes

DB_NAME = "history.db"
SCHEMA_VERSION = 2
QUIT_RETRY_SECONDS = 5.0  # how long flush() waits for another writer at quit
SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    mode TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    parent INTEGER,
    shown INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (conversation_id, seq)
);
"""
FTS_TABLE = "messages_fts"
MAX_SEARCH_TERMS = 20


def fts5_available(db: sqlite3.Connection) -> bool:
    """Whether this SQLite can make FTS5 tables (most builds can; some minimal ones cannot)."""
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError:
        return False
    return True


@dataclass
class SearchHit:
    conversation_id: int
    seq: int  # the message's index in the conversation
    title: str
    updated: float
    snippet: tuple[str, str, str]  # text before the match, the match, text after


def snippet(text: str, terms: list[str], before: int = 30, after: int = 60) -> tuple[str, str, str]:
    """Where the first term occurs in `text`, with some context, on one line."""
    flat = " ".join(text.split())
    low = flat.lower()
    found = [(i, t) for t in terms if (i := low.find(t.lower())) >= 0]
    if not found:
        return "", "", flat[: before + after]
    i, term = min(found)
    start = max(0, i - before)
    return (
        ("…" if start else "") + flat[start:i],
        flat[i : i + len(term)],
        flat[i + len(term) : i + len(term) + after],
    )


def data_dir() -> Path:
    env = os.environ.get("MINIGPT_TUI_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("minigpt-tui"))


@dataclass
class Conversation:
    id: int | None
    title: str
    mode: str  # "chat" or "complete"
    model: str
    turns: list[Turn] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    settings: dict[str, Any] = field(default_factory=dict)
    tree: Branches | None = None  # every branch; None: just `turns`


def title_for(turns: list[Turn], limit: int = 60) -> str:
    first = next((t.text for t in turns if t.text.strip()), "")
    line = " ".join(first.split())
    return (line[: limit - 1] + "…" if len(line) > limit else line) or "(empty)"


class HistorySaveError(sqlite3.Error):
    """A conversation that could not be written (the database locked by another program, the
    disk full): one line naming the database. The store keeps the conversation as unsaved:
    flush() tries again, unsaved_error() says why it is not saved."""


class NewerSchema(sqlite3.DatabaseError):
    """A database written by a newer version of this app: read it, never write or move it."""


class HistoryStore:
    """Conversations on disk, or in memory when `path` is None (--no-history, locked db)."""

    def __init__(self, path: Path | None, timeout: float = 2.0, fts: bool = True) -> None:
        self.path = path
        self.timeout = timeout  # seconds to wait for another writer before giving up
        self.notice = ""  # what went wrong opening the database, for the UI to show once
        self.read_only = False  # a database we may read but not write: nothing is saved
        self.want_fts = fts  # False: search with LIKE even where FTS5 exists (tests)
        self.fts = False  # whether search uses the FTS5 index (set when the db is opened)
        self._unsaved: dict[int, tuple[Conversation, str]] = {}  # id(conv) -> (conv, why)
        self.fallback: tuple[Path, str] | None = None  # (database, why) when kept in memory
        self.db = self._open()

    @classmethod
    def default(cls) -> HistoryStore:
        return cls(data_dir() / DB_NAME)

    @classmethod
    def memory(cls, fts: bool = True) -> HistoryStore:
        return cls(None, fts=fts)

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def _connect(self, target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=self.timeout, check_same_thread=False)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._init(self._connect(":memory:"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._init(self._connect(str(self.path)))
        except NewerSchema as e:  # a downgrade: never move it aside, never write it
            return self._open_read_only(e)
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                return self._in_memory("is locked by another program")
            if self.path.is_file() and ("readonly" in str(e) or "unable to open" in str(e)):
                return self._open_read_only(e)
            if not self.path.is_file():  # no database could be made where it should be
                return self._in_memory(f"cannot be created ({e})")
            return self._move_aside(e)
        except sqlite3.DatabaseError as e:
            return self._move_aside(e)
        except OSError as e:
            return self._in_memory(f"cannot be created ({e.strerror or e})")

    def _in_memory(self, why: str) -> sqlite3.Connection:
        assert self.path is not None
        self.fallback = (self.path, why)
        self.notice = (
            f"history database {self.path} {why}; this session's conversations are kept "
            "in memory only"
        )
        self.path = None
        return self._init(self._connect(":memory:"))

    def _open_read_only(self, error: Exception) -> sqlite3.Connection:
        """A database we may not write: read it as it is, never move it aside."""
        assert self.path is not None
        try:
            db = _connect_read_only(self.path, self.timeout)
        except sqlite3.Error as e:
            return self._in_memory(f"cannot be written ({error}) nor read ({e})")
        self.read_only = True
        why = (
            f"was written by a newer minigpt-tui ({error})"
            if isinstance(error, NewerSchema)
            else f"is read-only ({error})"
        )
        self.notice = (
            f"history database {self.path} {why}: opened read-only, saved conversations can "
            "be opened, but this session's are not saved"
        )
        return db

    def _move_aside(self, error: Exception) -> sqlite3.Connection:
        assert self.path is not None
        aside = self.path.with_name(f"{self.path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while aside.exists():
            aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        self.notice = f"history database was unreadable ({error}); moved it to {aside}"
        return self._init(self._connect(str(self.path)))

    def _init(self, db: sqlite3.Connection) -> sqlite3.Connection:
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # before any write
            if version > SCHEMA_VERSION:
                raise NewerSchema(f"schema version {version}; this one knows {SCHEMA_VERSION}")
            if self.path is not None:
                db.execute("PRAGMA journal_mode = WAL")
            migrate(db)
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            _touch_tables(db)
            self.fts = self.want_fts and fts5_available(db) and self._index(db)
            db.commit()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _index(self, db: sqlite3.Connection) -> bool:
        """Make the FTS5 index if missing (version 1 databases, or ones made where SQLite had
        no FTS5) and rebuild it if it fell behind the messages. False if it cannot be used."""
        try:
            db.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} "
                "USING fts5(text, conversation_id UNINDEXED, seq UNINDEXED)"
            )
            (indexed,) = db.execute(f"SELECT count(*) FROM {FTS_TABLE}").fetchone()
            (messages,) = db.execute("SELECT count(*) FROM messages").fetchone()
            if indexed != messages:
                db.execute(f"DELETE FROM {FTS_TABLE}")
                db.execute(
                    f"INSERT INTO {FTS_TABLE} (text, conversation_id, seq) "
                    "SELECT text, conversation_id, seq FROM messages"
                )
        except sqlite3.OperationalError:
            return False
        return True

    def save(self, conv: Conversation) -> int:
        """Insert or update a conversation with all its turns (and branches); returns its id (0
        when the database is read-only: nothing is written). HistorySaveError (one line) when
        it cannot be written: the conversation is then kept as unsaved (see flush)."""
        conv.updated = time.time()
        conv.title = title_for(conv.turns)
        if self.read_only:
            return conv.id or 0
        new = conv.id is None
        try:
            _write(self.db, conv, self.fts)
        except sqlite3.Error as e:
            if new:
                conv.id = None  # the insert was rolled back: that id may be another's later
            why = f"the conversation was not saved to {self.path or 'memory'} ({first_line(e)})"
            self._unsaved[id(conv)] = (conv, why)
            raise HistorySaveError(why) from None
        self._unsaved.pop(id(conv), None)
        assert conv.id is not None
        return conv.id

    def unsaved_error(self) -> str | None:
        """Why a conversation this session changed is not saved (the last failure; or the
        database it was meant for could not be used, so it is in memory only), or None."""
        if self._unsaved:
            return next(reversed(self._unsaved.values()))[1]
        if self.fallback is not None and self.list(limit=1):
            where, why = self.fallback
            return f"this session's conversations were kept in memory only ({where} {why})"
        return None

    def flush(self, timeout: float | None = None) -> str | None:
        """At the end of a session: try again to save every unsaved conversation, waiting up
        to `timeout` seconds (QUIT_RETRY_SECONDS) for another writer, and write a session
        kept in memory to the database it was meant for if that can be opened now. Returns
        what is still not saved, or None. `chat` calls it at quit, so that a lost exchange
        ends in an error line, not in silence."""
        wait = QUIT_RETRY_SECONDS if timeout is None else timeout
        self.db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            for conv, _ in list(self._unsaved.values()):
                with contextlib.suppress(HistorySaveError):
                    self.save(conv)
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        if self.fallback is not None and self.list(limit=1):
            _copy_to_disk(self, self.fallback[0], wait)
        return self.unsaved_error()

    def search(self, query: str, limit: int = 200) -> list[SearchHit]:
        """Messages holding every word of `query` (as a word prefix with FTS5, anywhere with
        the LIKE fallback), best match first; any text is a valid query."""
        return _search(self.db, self.fts, query, limit)

    def list(self, limit: int = 500) -> list[Conversation]:
        """Conversations, newest first, without their turns."""
        rows = self.db.execute(
            "SELECT id, title, mode, model, created, updated, settings FROM conversations "
            "ORDER BY updated DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_row(r) for r in rows]

    def load(self, conv_id: int) -> Conversation | None:
        row = self.db.execute(
            "SELECT id, title, mode, model, created, updated, settings FROM conversations "
            "WHERE id=?",
            (conv_id,),
        ).fetchone()
        if row is None:
            return None
        conv = _row(row)
        rows = self.db.execute(
            "SELECT seq, parent, role, text, shown FROM messages WHERE conversation_id=? "
            "ORDER BY seq",
            (conv_id,),
        ).fetchall()
        conv.tree = Branches.from_rows([(s, p, r, t, bool(on)) for s, p, r, t, on in rows])
        conv.turns = conv.tree.turns()
        return conv

    def delete(self, conv_id: int) -> Conversation | None:
        """Remove a conversation; returns it whole (turns and branches), for restore() to put
        back (an undo), or None when there was none or nothing may be written."""
        if self.read_only:
            return None
        gone = self.load(conv_id)
        with self.db:
            self.db.execute("DELETE FROM conversations WHERE id=?", (conv_id,))
            if self.fts:
                self.db.execute(f"DELETE FROM {FTS_TABLE} WHERE conversation_id=?", (conv_id,))
        return gone

    def restore(self, conv: Conversation) -> int:
        """Put back a conversation delete() returned, under its id and time (undo)."""
        updated = conv.updated
        conv_id = self.save(conv)
        conv.updated = updated
        with self.db:
            self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (updated, conv_id))
        return conv_id

    def close(self) -> None:
        self.db.close()


def _write(db: sqlite3.Connection, conv: Conversation, fts: bool) -> None:
    """Insert or update `conv` and all its messages in one transaction."""
    settings = json.dumps(conv.settings)
    with db:
        row = (conv.title, conv.mode, conv.model, conv.updated, settings)
        updated = conv.id is not None and (
            db.execute(
                "UPDATE conversations SET title=?, mode=?, model=?, updated=?, settings=? "
                "WHERE id=?",
                (*row, conv.id),
            ).rowcount
        )
        if not updated:  # new, or deleted meanwhile (from the history list): insert it
            cur = db.execute(
                "INSERT INTO conversations (id, title, mode, model, created, updated, "
                "settings) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv.id, conv.title, conv.mode, conv.model, conv.created, *row[3:]),
            )
            assert cur.lastrowid is not None
            conv.id = cur.lastrowid
        db.execute("DELETE FROM messages WHERE conversation_id=?", (conv.id,))
        tree = conv.tree if conv.tree is not None else Branches()
        tree.follow(conv.turns)  # the turns shown are the tree's shown path
        rows = list(tree.rows())
        db.executemany(
            "INSERT INTO messages (conversation_id, seq, role, text, parent, shown) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(conv.id, seq, role, text, up, int(on)) for seq, up, role, text, on in rows],
        )
        if fts:  # every branch's messages, by the same seq as the messages table
            db.execute(f"DELETE FROM {FTS_TABLE} WHERE conversation_id=?", (conv.id,))
            db.executemany(
                f"INSERT INTO {FTS_TABLE} (text, conversation_id, seq) VALUES (?, ?, ?)",
                [(text, conv.id, seq) for seq, _, _, text, _ in rows],
            )


def _connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """`path` opened read-only, its tables checked: read-only mode first, immutable where that
    cannot work (a read-only filesystem has no room for SQLite's lock files)."""
    from urllib.parse import quote

    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(
            f"file:{quote(str(path))}?{flags}", uri=True, timeout=timeout, check_same_thread=False
        )
        try:
            _touch_tables(db)
            return db
        except sqlite3.Error as e:
            db.close()
            last = e
    assert last is not None
    raise last


def _search(db: sqlite3.Connection, fts: bool, query: str, limit: int) -> list[SearchHit]:
    """Messages holding every word of `query` (as a word prefix with FTS5, anywhere with
    the LIKE fallback), best match first; any text is a valid query."""
    terms = query.split()[:MAX_SEARCH_TERMS]
    if not terms:
        return []
    if fts:
        match = " ".join('"' + t.replace('"', '""') + '"*' for t in terms)
        rows = db.execute(
            f"SELECT f.conversation_id, f.seq, c.title, c.updated, f.text FROM {FTS_TABLE} f "
            f"JOIN conversations c ON c.id = f.conversation_id WHERE {FTS_TABLE} MATCH ? "
            "ORDER BY rank, c.updated DESC LIMIT ?",
            (match, limit),
        ).fetchall()
    else:

        def like(t: str) -> str:
            return "%" + t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        where = " AND ".join(["m.text LIKE ? ESCAPE '\\'"] * len(terms))
        rows = db.execute(
            "SELECT m.conversation_id, m.seq, c.title, c.updated, m.text FROM messages m "
            f"JOIN conversations c ON c.id = m.conversation_id WHERE {where} "
            "ORDER BY c.updated DESC, m.seq LIMIT ?",
            (*(like(t) for t in terms), limit),
        ).fetchall()
    return [
        SearchHit(int(cid), int(seq), title, updated, snippet(text, terms))
        for cid, seq, title, updated, text in rows
    ]


def _copy_to_disk(memory: HistoryStore, path: Path, timeout: float) -> None:
    """Move an in-memory session's conversations to the database at `path`, if it can be
    opened for writing now (each one leaves memory once written; `fallback` is cleared when
    all have)."""
    disk = HistoryStore(path, timeout=timeout, fts=memory.want_fts)
    try:
        if disk.path is None or disk.read_only:
            return
        with contextlib.suppress(HistorySaveError):
            for listed in reversed(memory.list()):
                assert listed.id is not None
                conv = memory.load(listed.id)
                if conv is not None:
                    conv.id = None
                    disk.save(conv)
                    memory.delete(listed.id)
            memory.fallback = None
    finally:
        disk.close()


def _touch_tables(db: sqlite3.Connection) -> None:
    """Read both tables, so that a database with the wrong layout fails now, not later."""
    db.execute(
        "SELECT id, title, mode, model, created, updated, settings FROM conversations LIMIT 1"
    ).fetchall()
    db.execute(
        "SELECT conversation_id, seq, role, text, parent, shown FROM messages LIMIT 1"
    ).fetchall()


def migrate(db: sqlite3.Connection) -> None:
    """Version 1 -> 2: messages gain `parent` (the message before) and `shown` (all of them)."""
    columns = [r[1] for r in db.execute("PRAGMA table_info(messages)")]
    if columns and "parent" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN parent INTEGER")
        db.execute("ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1")
        db.execute("UPDATE messages SET parent = seq - 1 WHERE seq > 0")


def _row(r: Iterable[Any]) -> Conversation:
    cid, title, mode, model, created, updated, settings = r
    try:
        parsed = json.loads(settings)
    except (TypeError, ValueError):
        parsed = {}
    return Conversation(
        cid, title, mode, model, [], created, updated, parsed if isinstance(parsed, dict) else {}
    )


def export_text(conv: Conversation, names: dict[str, str], markdown: bool) -> str:
    """A conversation as Markdown or plain text; `names` maps roles to speaker names."""
    if conv.mode == "complete":
        body = "".join(t.text for t in conv.turns)
        return f"# {conv.title}\n\n{body}\n" if markdown else body + "\n"
    parts = [f"# {conv.title}\n"] if markdown else []
    for t in conv.turns:
        name = names.get(t.role, t.role)
        parts.append(f"**{name}:**\n\n{t.text}\n" if markdown else f"{name}:\n{t.text}\n")
    return "\n".join(parts)


JSON_SUFFIXES = (".json", ".jsonl")


def export_json(conv: Conversation) -> str:
    """A conversation as one JSON record on one line (so exports concatenate into JSON
    Lines): a chat as `{"messages": [{"role", "content"}]}`, the shape `data prepare` reads
    (the system text as the system turn, your messages as user turns, replies as assistant
    turns; model/chat.py), a document as `{"text": ...}`."""
    if conv.mode == "complete":
        record: dict[str, Any] = {"text": "".join(t.text for t in conv.turns)}
    else:
        system = conv.settings.get("system")
        found = messages_of(conv.turns, system if isinstance(system, str) else "")
        record = {"messages": [{"role": m.role, "content": m.content} for m in found]}
    return json.dumps(record, ensure_ascii=False) + "\n"


def export(conv: Conversation, path: Path, names: dict[str, str]) -> Path:
    """Write a conversation to `path` (.md means Markdown, .json or .jsonl a JSON record
    (`export_json`), anything else plain text). The directory must exist: none is created (a
    mistyped path must not make folders). OSError when it cannot be written, also when `path`
    is not a regular file (a FIFO, /dev/null)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(path.parent))
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        text = export_json(conv)
    else:
        text = export_text(conv, names, markdown=suffix in (".md", ".markdown"))
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except ModelDirError as e:  # a FIFO or a device there: never replaced
        raise OSError(errno.EEXIST, str(e)) from None
    return path


def default_export_name(conv: Conversation, markdown: bool = True) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(conv.created))
    return f"minigpt-chat-{stamp}.{'md' if markdown else 'txt'}"
