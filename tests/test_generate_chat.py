"""`minigpt-tui generate --chat / --system / --messages`: a chat model's next reply for scripts,
on both backends, torch-free on ONNX; and the one-line errors of its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_model import make_chat_model

from minigpt_tui.generation import Generation, load_backend
from minigpt_tui.sampling import SamplingSettings
from model import chat
from tests.helpers import cli, expect_one_line_error, make_model
from tests.test_no_torch import run_child


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chat_model(tmp_path_factory.mktemp("generate-chat"), onnx=True)


def reference(model: Path, messages: list[dict[str, str]], backend: str = "torch") -> str:
    """The greedy reply through the generation loop itself."""
    engine = load_backend(model, backend)
    tok = engine.info.tokenizer()
    gen = Generation(
        engine,
        tok,
        chat.prompt_ids(tok, messages),
        SamplingSettings(temperature=0, max_new_tokens=60),
    )
    list(gen)
    assert gen.stats.stop_reason == "end", "the tiny chat model ends its turn"
    return gen.text


def reply(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[str, str]:
    capsys.readouterr()
    assert cli("generate", "-t", "0", "-n", "60", *args) == 0
    out, err = capsys.readouterr()
    return out, err


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_chat_prints_one_reply_ending_at_end_of_turn(
    tiny_chat: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = reply(capsys, "-m", tiny_chat, "--backend", backend, "--chat", "hello", "--stats")
    expected = reference(tiny_chat, [{"role": "user", "content": "hello"}])
    assert out == expected and expected.startswith("hi th") and "<|" not in out
    assert "stopped by end of turn" in err
    system = [{"role": "system", "content": "be kind."}, {"role": "user", "content": "hi"}]
    out, _ = reply(
        capsys, "-m", tiny_chat, "--backend", backend, "--system", "be kind.", "--chat", "hi"
    )
    assert out == reference(tiny_chat, system, backend)


def test_messages_continue_a_conversation(
    tiny_chat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    talk = [
        {"role": "system", "content": "be kind."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there."},
        {"role": "user", "content": "how are you?"},
    ]
    record = tmp_path / "talk.json"
    record.write_text(json.dumps({"messages": talk}))
    out, _ = reply(capsys, "-m", tiny_chat, "--messages", record)
    assert out == reference(tiny_chat, talk)
    bare = tmp_path / "list.json"
    bare.write_text(json.dumps(talk[1:3]))  # the list itself, ending with a reply
    out, _ = reply(capsys, "-m", tiny_chat, "--messages", bare, "--chat", "how are you?")
    assert out == reference(tiny_chat, talk[1:])
    out, _ = reply(
        capsys,
        "-m",
        tiny_chat,
        "--messages",
        bare,
        "--system",
        "be kind.",
        "--chat",
        "how are you?",
    )
    assert out == reference(tiny_chat, talk)


def test_plain_generate_still_continues_text_on_a_chat_model(
    tiny_chat: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = reply(capsys, "-m", tiny_chat, "hello")
    engine = load_backend(tiny_chat, "torch")
    tok = engine.info.tokenizer()
    gen = Generation(
        engine, tok, tok.encode("hello"), SamplingSettings(temperature=0, max_new_tokens=60)
    )
    list(gen)
    assert out == gen.text and "<|" not in out


def test_chat_without_torch(tiny_chat: Path, tmp_path: Path) -> None:
    from export.onnx_export import export_onnx

    onnx_only = tmp_path / "onnx-only"
    export_onnx(tiny_chat, onnx_only, verify=False)
    code = f"""
from minigpt_tui.cli import main
try:
    main(["generate", "-m", {str(onnx_only)!r}, "-t", "0", "--chat", "hello", "--stats"])
finally:
    bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not bad, bad
"""
    res = run_child(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout == reference(tiny_chat, [{"role": "user", "content": "hello"}], "onnx")
    assert "backend onnx" in res.stderr


def bad_messages(tmp: Path) -> dict[str, Path]:
    files = {
        "not JSON": "{nope",
        "not a list": '{"messages": 3}',
        "roles out of order": '[{"role": "assistant", "content": "hi"}]',
        "unknown role": '[{"role": "robot", "content": "hi"}]',
        "empty content": '[{"role": "user", "content": ""}]',
        "ends with a reply": json.dumps(
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        ),
        "system twice": json.dumps(
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}
        ),
    }
    out = {}
    for name, text in files.items():
        out[name] = tmp / f"{name.replace(' ', '-')}.json"
        out[name].write_text(text)
    return out


@pytest.mark.parametrize(
    ("case", "extra", "says"),
    [
        ("not JSON", [], "is not JSON"),
        ("not a list", [], "expected"),
        ("roles out of order", [], "roles out of order"),
        ("unknown role", [], "unknown role"),
        ("empty content", [], "empty content"),
        ("ends with a reply", [], "ends with a user turn"),
        ("system twice", ["--system", "x"], "its own system turn"),
    ],
)
def test_bad_conversations_are_one_error_line(
    tiny_chat: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    extra: list[str],
    says: str,
) -> None:
    path = bad_messages(tmp_path)[case]
    line = expect_one_line_error(capsys, "generate", "-m", tiny_chat, "--messages", path, *extra)
    assert says in line


def test_flags_that_do_not_go_together_and_models_that_cannot_chat(
    tiny_chat: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text_model = make_model(tmp_path)
    m = ["generate", "-m", tiny_chat]
    assert "no chat template" in expect_one_line_error(
        capsys, "generate", "-m", text_model, "--chat", "hello"
    )
    assert "not both" in expect_one_line_error(capsys, *m, "--chat", "hi", "hello")
    assert "--system" in expect_one_line_error(capsys, *m, "--system", "x", "hello")
    assert "--echo" in expect_one_line_error(capsys, *m, "--chat", "hi", "--echo")
    assert "no such file" in expect_one_line_error(capsys, *m, "--messages", tmp_path / "nope.json")
    assert "not a regular file" in expect_one_line_error(capsys, *m, "--messages", tmp_path)
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{"role": "user", "content": "a" * 200}]))
    monkeypatch.setattr("minigpt_tui.commands.generate.MAX_MESSAGES_BYTES", 100)
    assert "is over" in expect_one_line_error(capsys, *m, "--messages", big)
    line = expect_one_line_error(capsys, *m, "--chat", "☃")
    assert "--unknown-chars drop" in line
    line = expect_one_line_error(capsys, *m, "--chat", "☃", "--unknown-chars", "drop")
    assert "empty content" in line


def test_forked_and_lockstep_streams_stop_at_end_of_turn(tiny_chat: Path) -> None:
    """Compare panes' ways of running (a fork per stream, or decoded together) stop where
    one generation alone stops, and carry no stop token."""
    import threading

    from minigpt_tui.streams import lockstep, stream_slots

    backend = load_backend(tiny_chat, "onnx")
    tok = backend.info.tokenizer()
    assert tok.chat is not None
    prompts = [
        chat.prompt_ids(tok, [{"role": "user", "content": text}]) for text in ("hello", "ok")
    ]

    def settings() -> SamplingSettings:
        return SamplingSettings(temperature=0, max_new_tokens=60)

    alone = []
    for ids in prompts:
        gen = Generation(backend, tok, ids, settings())
        list(gen)
        alone.append(gen.text)
    slots = stream_slots(backend, 2, threading.Lock())
    forked = [
        Generation(s.backend, tok, ids, settings()) for s, ids in zip(slots, prompts, strict=True)
    ]
    events = [list(g) for g in forked]
    assert [g.text for g in forked] == alone
    assert all(e.token != tok.chat.end for evs in events for e in evs)
    together = lockstep(backend, 2)
    assert together is not None
    gens = [Generation(backend, tok, ids, settings()) for ids in prompts]
    seen: list[list[int]] = [[], []]
    together.run(gens, lambda i, e: seen[i].append(e.token), lambda i: None)
    assert [g.text for g in gens] == alone
    assert [g.stats.stop_reason for g in gens] == ["end", "end"]
    assert all(tok.chat.end not in s for s in seen)
