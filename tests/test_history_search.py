"""History search (FTS5 where SQLite has it, LIKE where not: both give the same hits), the index
added to a database that today's app made, and the system text saved with a conversation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.history import Conversation, HistoryStore, fts5_available

TALKS = [
    [Turn("user", "What light through yonder window breaks?"), Turn("model", "It is the east.")],
    [Turn("user", "A plague o' both your houses!"), Turn("model", "They have made worms' meat")],
    [Turn("user", "Parting is such sweet sorrow"), Turn("model", "that I shall say good night")],
    [Turn("document", '100% of the_window is 50\\50 (NEAR "east") AND -night*')],
]


def store(fts: bool, path: Path | None = None) -> HistoryStore:
    s = HistoryStore(path, fts=fts)
    for i, turns in enumerate(TALKS):
        s.save(Conversation(None, "", "chat" if i < 3 else "complete", "m", turns))
    return s


def hits(s: HistoryStore, query: str) -> list[tuple[int, int]]:
    return sorted((h.conversation_id, h.seq) for h in s.search(query))


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
def test_search_finds_messages(fts: bool) -> None:
    s = store(fts)
    assert s.fts is (fts and fts5_available(s.db))
    assert hits(s, "window") == [(1, 0), (4, 0)]
    assert hits(s, "WINDOW breaks") == [(1, 0)]  # every word, any case
    assert hits(s, "sorrow night") == []  # words of two messages: no single message has both
    assert hits(s, "good night") == [(3, 1)]
    assert hits(s, "nothing-like-this") == []
    assert hits(s, "   ") == []
    (hit,) = [h for h in s.search("east") if h.conversation_id == 1]
    assert hit.snippet == ("It is the ", "east", ".")
    assert hit.title == "What light through yonder window breaks?"


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
@pytest.mark.parametrize(
    "query",
    ['"', "*", "(", 'NEAR("a" "b")', "AND", "-night", "%", "_", "\\", "a" * 5000, "x " * 500],
)
def test_any_text_is_a_valid_query(fts: bool, query: str) -> None:
    s = store(fts)
    s.search(query)  # never raises (FTS5 syntax is quoted away, LIKE wildcards escaped)


def test_like_wildcards_are_literal() -> None:
    s = store(False)
    assert hits(s, "100%") == [(4, 0)] and hits(s, "%") == [(4, 0)]
    assert hits(s, "the_window") == [(4, 0)]
    assert hits(s, "50\\50") == [(4, 0)]


def test_both_ways_agree_on_whole_words() -> None:
    fts, like = store(True), store(False)
    for query in ["window", "the east", "plague houses", "sweet", "good night", "meat"]:
        assert hits(fts, query) == hits(like, query), query


def test_delete_and_resave_keep_the_index_in_step() -> None:
    s = store(True)
    s.delete(1)
    assert hits(s, "window") == [(4, 0)]
    conv = s.load(2)
    assert conv is not None
    conv.turns.append(Turn("user", "a window again"))
    s.save(conv)
    assert hits(s, "window") == [(2, 2), (4, 0)]
    assert hits(s, "plague") == [(2, 0)]  # no stale rows from the earlier save


# The layout today's app (schema version 1, before the search index) writes, spelled out so
# that this fixture never changes with the code.
TODAY_SCHEMA = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL, mode TEXT NOT NULL,
    model TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}');
CREATE TABLE messages (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq));
PRAGMA user_version = 1;
"""


def todays_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(TODAY_SCHEMA)
    db.execute(
        "INSERT INTO conversations VALUES (1, 'Hello', 'chat', 'shakespeare-char', 1.0, 2.0, ?)",
        (json.dumps({"user": "ROMEO", "bot": "JULIET"}),),
    )
    db.executemany(
        "INSERT INTO messages VALUES (1, ?, ?, ?)",
        [(0, "user", "Hello, fair maiden"), (1, "model", "Good morrow to you")],
    )
    db.commit()
    db.close()


def test_a_database_made_by_todays_app_gains_search_and_system_text(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    todays_database(path)
    s = HistoryStore(path)
    assert s.notice == ""  # opened as it is, not moved aside
    assert hits(s, "morrow") == [(1, 1)]  # the index was built from the old messages
    old = s.load(1)
    assert old is not None and "system" not in old.settings
    new = Conversation(None, "", "chat", "gpt2", [Turn("user", "Hi")])
    new.settings = {"user": "Q", "bot": "A", "system": "You are terse.\n\nQ:\nHi?\n\nA:\nYes."}
    s.save(new)
    s.close()
    s = HistoryStore(path)  # and again: nothing rebuilt or lost
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == 2  # migrated to the tree
    again = s.load(new.id or 0)
    assert again is not None and again.settings["system"].startswith("You are terse.")
    assert hits(s, "morrow") == [(1, 1)] and hits(s, "Hi") == [(2, 0)]
    s.close()


def test_an_index_behind_its_messages_is_rebuilt(tmp_path: Path) -> None:
    """Saves made where SQLite had no FTS5 (or by an older app) are indexed at the next open."""
    path = tmp_path / "history.db"
    store(True, path).close()
    plain = HistoryStore(path, fts=False)
    plain.save(Conversation(None, "", "chat", "m", [Turn("user", "unseen words here")]))
    plain.close()
    s = HistoryStore(path)
    assert hits(s, "unseen") == [(5, 0)]
    s.close()


def test_system_text_leads_the_prompt_and_is_never_windowed_out() -> None:
    from minigpt_tui.sampling import SamplingSettings
    from minigpt_tui.tui.session import ChatSession
    from model.tokenizer import CharTokenizer

    chars = (
        "\n !',.:?0123456789"
        + "".join(chr(c) for c in range(65, 91))
        + "".join(chr(c) for c in range(97, 123))
    )
    template = DialogueTemplate(system="Be brief.")
    assert template.render([Turn("user", "Hi")]) == "Be brief.\n\nROMEO:\nHi\n\nJULIET:\n"
    assert DialogueTemplate().render([Turn("user", "Hi")]) == "ROMEO:\nHi\n\nJULIET:\n"
    session = ChatSession(CharTokenizer(chars), 64, SamplingSettings(max_new_tokens=8), template)
    session.restore(
        [Turn("user" if i % 2 == 0 else "model", f"turn number {i}") for i in range(20)]
    )
    prompt = session.prompt()
    text = session.tokenizer.decode(prompt.ids)
    assert prompt.dropped_turns > 0 and text.startswith("Be brief.\n\n")
    assert text.endswith("turn number 19\n\nJULIET:\n") and len(prompt.ids) <= 64
