"""The conversation tree (minigpt_tui/branches.py) and how history stores it, including a
database written by the release before branches (schema version 1)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from minigpt_tui.branches import Branches
from minigpt_tui.dialogue import Turn
from minigpt_tui.history import Conversation, HistoryStore

U, M = "user", "model"

# The schema of history.db as the release before branches wrote it (PRAGMA user_version 1).
SCHEMA_V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, mode TEXT NOT NULL, model TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE messages (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
PRAGMA user_version = 1;
"""


def turns(*texts: str) -> list[Turn]:
    return [Turn(U if i % 2 == 0 else M, t) for i, t in enumerate(texts)]


def test_changing_the_turns_makes_branches_and_keeps_the_old_ones() -> None:
    tree = Branches()
    tree.follow(turns("hi", "good morrow"))
    tree.follow(turns("hi"))  # regenerate: the reply is taken back...
    tree.follow(turns("hi", "good night"))  # ...and a new one kept beside it
    assert tree.turns() == turns("hi", "good night")
    assert tree.position(1) == (2, 2)
    tree.follow(turns("hello", "well met"))  # the first message edited and sent again
    assert tree.position(0) == (2, 2) and tree.count() == 5
    assert tree.switch(0, -1) and tree.turns() == turns("hi", "good night")
    assert tree.switch(1, -1) and tree.turns() == turns("hi", "good morrow")
    assert not tree.switch(1, -1)  # no branch before the first
    # Sending the same text again reuses the message it matches.
    tree.follow(turns("hi", "good night"))
    assert tree.count() == 5 and tree.position(1) == (2, 2)


def test_rows_round_trip_every_branch_and_the_one_shown() -> None:
    tree = Branches()
    tree.follow(turns("hi", "a", "more", "b"))
    tree.follow(turns("hi", "c"))
    tree.follow(turns("hey", "d"))
    again = Branches.from_rows(tree.rows())
    assert again.rows() == tree.rows() and again.turns() == turns("hey", "d")
    assert again.switch(0, -1) and again.turns() == turns("hi", "c")
    assert again.switch(1, -1) and again.turns() == turns("hi", "a", "more", "b")


def test_store_saves_and_reopens_every_branch(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.db")
    tree = Branches()
    tree.follow(turns("hi", "good morrow"))
    tree.follow(turns("hi", "good night"))
    conv = Conversation(None, "", "chat", "tiny", tree.turns(), tree=tree)
    store.save(conv)
    store.close()
    store = HistoryStore(tmp_path / "h.db")
    assert conv.id is not None
    back = store.load(conv.id)
    assert back is not None and back.tree is not None
    assert back.turns == turns("hi", "good night") and back.tree.position(1) == (2, 2)
    assert back.tree.switch(1, -1) and back.tree.turns() == turns("hi", "good morrow")
    # Saving what is shown now keeps both branches, and the other one shown.
    back.turns = back.tree.turns()
    store.save(back)
    again = store.load(conv.id)
    assert again is not None and again.turns == turns("hi", "good morrow")
    assert again.tree is not None and again.tree.count() == 3


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(SCHEMA_V1)
        raw.execute("INSERT INTO conversations VALUES (7, 'hi', 'chat', 'tiny', 1.0, 2.0, '{}')")
        raw.executemany(
            "INSERT INTO messages VALUES (7, ?, ?, ?)",
            [(i, t.role, t.text) for i, t in enumerate(turns("hi", "good morrow", "bye"))],
        )
    raw.close()
    store = HistoryStore(path)
    assert store.notice == ""  # opened, not moved aside
    assert not [p for p in tmp_path.iterdir() if ".broken-" in p.name]
    conv = store.load(7)
    assert conv is not None and conv.turns == turns("hi", "good morrow", "bye")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
    # Branch the old conversation and save it: the new layout holds both branches.
    assert conv.tree is not None
    conv.tree.follow(turns("hi", "good night"))
    conv.turns = conv.tree.turns()
    store.save(conv)
    store.close()
    back = HistoryStore(path).load(7)
    assert back is not None and back.tree is not None
    assert back.turns == turns("hi", "good night") and back.tree.count() == 4
