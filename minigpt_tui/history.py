"""Saved conversations: a small SQLite database in the user's data directory.

    conversations(id, title, mode, model, created, updated, settings)
    messages(conversation_id, seq, role, text)
    messages_fts(text, conversation_id, seq)   FTS5 index of messages, where SQLite has FTS5

Search uses the FTS5 index where the Python build's SQLite has it, else a LIKE scan of the
messages (slower, same results for whole words). The index is an addition that older versions
of the app ignore (the schema version stays 1): opening a database that lacks it, or whose index
fell behind its messages, builds it from the saved messages.

A database that cannot be read (corrupt, not SQLite) is moved aside and a fresh one started,
so the app keeps working and the old file stays on disk for the user to inspect. A database
that another process keeps locked is not touched: this session keeps its history in memory.
`MINIGPT_TUI_DATA_DIR` overrides the data directory (tests use it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minigpt_tui.dialogue import Turn
from model.modeldir import atomic_write_bytes

DB_NAME = "history.db"
SCHEMA_VERSION = 1
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


def title_for(turns: list[Turn], limit: int = 60) -> str:
    first = next((t.text for t in turns if t.text.strip()), "")
    line = " ".join(first.split())
    return (line[: limit - 1] + "…" if len(line) > limit else line) or "(empty)"


class HistoryStore:
    """Conversations on disk, or in memory when `path` is None (--no-history, locked db)."""

    def __init__(self, path: Path | None, timeout: float = 2.0, fts: bool = True) -> None:
        self.path = path
        self.timeout = timeout  # seconds to wait for another writer before giving up
        self.notice = ""  # what went wrong opening the database, for the UI to show once
        self.want_fts = fts  # False: search with LIKE even where FTS5 exists (tests)
        self.fts = False  # whether search uses the FTS5 index (set when the db is opened)
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
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                self.notice = (
                    f"history database {self.path} is locked by another program; "
                    "this session's conversations are kept in memory only"
                )
                self.path = None
                return self._init(self._connect(":memory:"))
            return self._move_aside(e)
        except sqlite3.DatabaseError as e:
            return self._move_aside(e)
        except OSError as e:
            self.notice = f"cannot use {self.path} ({e.strerror}); history is kept in memory only"
            self.path = None
            return self._init(self._connect(":memory:"))

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
            if self.path is not None:
                db.execute("PRAGMA journal_mode = WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this app")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Touch both tables, so a database with the wrong layout fails here, not later.
            db.execute(
                "SELECT id, title, mode, model, created, updated, settings "
                "FROM conversations LIMIT 1"
            ).fetchall()
            db.execute("SELECT conversation_id, seq, role, text FROM messages LIMIT 1").fetchall()
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
        """Insert or update a conversation with all its turns; returns its id."""
        conv.updated = time.time()
        conv.title = title_for(conv.turns)
        settings = json.dumps(conv.settings)
        with self.db:
            if conv.id is None:
                cur = self.db.execute(
                    "INSERT INTO conversations (title, mode, model, created, updated, settings) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (conv.title, conv.mode, conv.model, conv.created, conv.updated, settings),
                )
                assert cur.lastrowid is not None
                conv.id = cur.lastrowid
            else:
                self.db.execute(
                    "UPDATE conversations SET title=?, mode=?, model=?, updated=?, settings=? "
                    "WHERE id=?",
                    (conv.title, conv.mode, conv.model, conv.updated, settings, conv.id),
                )
                self.db.execute("DELETE FROM messages WHERE conversation_id=?", (conv.id,))
            self.db.executemany(
                "INSERT INTO messages (conversation_id, seq, role, text) VALUES (?, ?, ?, ?)",
                [(conv.id, i, t.role, t.text) for i, t in enumerate(conv.turns)],
            )
            if self.fts:
                self.db.execute(f"DELETE FROM {FTS_TABLE} WHERE conversation_id=?", (conv.id,))
                self.db.executemany(
                    f"INSERT INTO {FTS_TABLE} (text, conversation_id, seq) VALUES (?, ?, ?)",
                    [(t.text, conv.id, i) for i, t in enumerate(conv.turns)],
                )
        return conv.id

    def search(self, query: str, limit: int = 200) -> list[SearchHit]:
        """Messages holding every word of `query` (as a word prefix with FTS5, anywhere with
        the LIKE fallback), best match first; any text is a valid query."""
        terms = query.split()[:MAX_SEARCH_TERMS]
        if not terms:
            return []
        if self.fts:
            match = " ".join('"' + t.replace('"', '""') + '"*' for t in terms)
            rows = self.db.execute(
                f"SELECT f.conversation_id, f.seq, c.title, c.updated, f.text FROM {FTS_TABLE} f "
                f"JOIN conversations c ON c.id = f.conversation_id WHERE {FTS_TABLE} MATCH ? "
                "ORDER BY rank, c.updated DESC LIMIT ?",
                (match, limit),
            ).fetchall()
        else:

            def like(t: str) -> str:
                return "%" + t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

            where = " AND ".join(["m.text LIKE ? ESCAPE '\\'"] * len(terms))
            rows = self.db.execute(
                "SELECT m.conversation_id, m.seq, c.title, c.updated, m.text FROM messages m "
                f"JOIN conversations c ON c.id = m.conversation_id WHERE {where} "
                "ORDER BY c.updated DESC, m.seq LIMIT ?",
                (*(like(t) for t in terms), limit),
            ).fetchall()
        return [
            SearchHit(int(cid), int(seq), title, updated, snippet(text, terms))
            for cid, seq, title, updated, text in rows
        ]

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
        conv.turns = [
            Turn(role, text)
            for role, text in self.db.execute(
                "SELECT role, text FROM messages WHERE conversation_id=? ORDER BY seq", (conv_id,)
            )
        ]
        return conv

    def delete(self, conv_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM conversations WHERE id=?", (conv_id,))
            if self.fts:
                self.db.execute(f"DELETE FROM {FTS_TABLE} WHERE conversation_id=?", (conv_id,))

    def close(self) -> None:
        self.db.close()


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


def export(conv: Conversation, path: Path, names: dict[str, str]) -> Path:
    """Write a conversation to `path` (.md means Markdown, anything else plain text)."""
    markdown = path.suffix.lower() in (".md", ".markdown")
    atomic_write_bytes(path, export_text(conv, names, markdown).encode("utf-8"))
    return path


def default_export_name(conv: Conversation, markdown: bool = True) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(conv.created))
    return f"minigpt-chat-{stamp}.{'md' if markdown else 'txt'}"
