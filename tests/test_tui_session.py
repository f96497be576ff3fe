"""ChatSession: the prompt the chat app sends, windowed to the model's block, and the one writer
of the turns, which keeps the branch tree in step by itself."""

from __future__ import annotations

from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.tui.session import ChatSession
from model.tokenizer import CharTokenizer

TOK = CharTokenizer.from_text(["ROMEOJULIET:\n abcdefghijklmnopqrstuvwxyz.!"])


def session(block: int = 64, max_new: int = 16, mode: str = "chat") -> ChatSession:
    return ChatSession(
        TOK, block, SamplingSettings(max_new_tokens=max_new), DialogueTemplate(), mode
    )


def test_short_transcript_is_rendered_whole() -> None:
    s = session()
    s.restore([Turn("user", "hi"), Turn("model", "hello"), Turn("user", "bye")])
    p = s.prompt()
    assert TOK.decode(p.ids) == "ROMEO:\nhi\n\nJULIET:\nhello\n\nROMEO:\nbye\n\nJULIET:\n"
    assert p.dropped_turns == 0 and not p.truncated and not p.dropped_chars


def test_oldest_turns_are_dropped_to_leave_room_for_the_reply() -> None:
    s = session(block=64, max_new=16)  # budget: 64 - 16 = 48 tokens
    s.restore([Turn("user" if i % 2 == 0 else "model", f"turn {'x' * i}") for i in range(10)])
    p = s.prompt()
    text = TOK.decode(p.ids)
    assert len(p.ids) <= 48 and p.dropped_turns > 0
    assert text.endswith(f"JULIET:\nturn {'x' * 9}\n\nJULIET:\n")
    one_more = DialogueTemplate().render(s.turns[p.dropped_turns - 1 :])
    assert len(TOK.encode(one_more)) > 48, "it drops the fewest turns that make it fit"


def test_one_long_turn_is_kept_and_flagged() -> None:
    s = session(block=32)
    s.restore([Turn("user", "a" * 100 + "é")])
    p = s.prompt()
    assert p.truncated and p.dropped_turns == 0 and p.dropped_chars == ["é"]
    assert len(p.ids) > 32  # the Generation keeps the tail; the text itself is not cut here


def test_complete_mode_uses_the_document_without_stops() -> None:
    s = session(mode="complete")
    s.document = "once upon a time"
    assert TOK.decode(s.prompt().ids) == "once upon a time"
    assert s.stop_strings() == [] and s.last_reply() == "once upon a time"
    s.mode = "chat"
    assert "\n\n" in s.stop_strings()


def test_speaker_names_follow_one_rule() -> None:
    from minigpt_tui.dialogue import valid_speaker_name

    assert valid_speaker_name("NURSE") and valid_speaker_name(" FRIAR LAURENCE ")
    assert not any(valid_speaker_name(n) for n in ("", "   ", "A:B", "A\nB"))


def test_every_change_to_the_turns_keeps_the_branch_tree_in_step() -> None:
    s = session()
    s.add_turn(Turn("user", "hi"))
    s.add_turn(Turn("model", "hello"))
    assert [n.text for n in s.branches.path] == ["hi", "hello"] and s.branches.count() == 2
    assert s.drop_last_reply() and s.turns == [Turn("user", "hi")]
    assert not s.drop_last_reply(), "only the model's reply is taken back"
    s.add_turn(Turn("model", "good day"))  # Ctrl+R: a second reply beside the first
    assert s.branches.position(1) == (2, 2) and s.branches.count() == 3
    s.cut_at(0)  # an edited first message: the old one stays a branch
    s.add_turn(Turn("user", "hey"))
    assert s.turns == [Turn("user", "hey")] and s.branches.position(0) == (2, 2)
    assert s.switch_branch(0, -1) and [t.text for t in s.turns] == ["hi", "good day"]
    assert not s.switch_branch(0, -1), "no branch that way"
    s.turns.append(Turn("user", "unseen"))  # a copy: only the methods change the turns
    assert len(s.turns) == 2 and s.saved_turns("") == s.turns
    s.reset()
    assert s.turns == [] and s.branches.count() == 0
    s.restore([Turn("user", "a"), Turn("model", "b")])
    assert [n.text for n in s.branches.path] == ["a", "b"]
