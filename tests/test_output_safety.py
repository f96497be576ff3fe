"""Text from files (model names, vocabularies, paths, configs) is never interpreted by the
terminal or by rich: minigpt_tui/safe_text.py shows it inert in every command.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from minigpt_tui.safe_text import markup, plain
from model import modeldir
from tests.helpers import EVIL, assert_inert, cli, expect_one_line_error


def test_plain_and_markup_show_controls_and_keep_text() -> None:
    assert plain("tab\tand\nline") == "tab\tand\nline"  # ordinary text is unchanged
    assert plain("a\tb\nc", one_line=True) == "a\\tb\\nc"
    assert plain(EVIL) == "\\x1b]0;PWNED\\x07\\x1b[2J[/][old]\\x9b31m\\u202eevil"
    from rich.console import Console

    console = Console(record=True, width=200)
    drive = "C:\\"  # a path ending in a backslash
    console.print(f"[bold]name:[/] {markup(EVIL)} at {markup(drive)}")
    shown = console.export_text()
    assert_inert(shown)
    assert "[/][old]" in shown and shown.endswith(" at C:\\\n")


class _Terminal:
    """sys.stdout as a terminal: generate shows what it writes there."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def flush(self) -> None:
        pass


def test_escapes_and_markup_from_files_reach_no_terminal_in_any_command(
    evil: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, model, data = evil["root"], evil["model"], evil["data"]
    out = tmp_path / "out [old] [" / "]"  # outputs under a path holding "[/]"
    out.mkdir(parents=True)
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps at this width: keep each line whole
    runs: list[tuple[str, ...]] = [
        ("info", str(model)),
        ("info", str(evil["onnx"])),
        ("eval", str(model), "--data", str(data), "--device", "cpu"),
        ("generate", "-m", str(model), "--backend", "torch", "-n", "8", "--stats", "hi"),
        ("generate", "-m", str(evil["onnx"]), "-n", "8", "--echo", "--stats", "hi"),
        ("data", "prepare", str(root / "corpus.txt"), "--out", str(out / "data")),
        (
            "train",
            "--data",
            str(data),
            "--out",
            str(out / "run"),
            "--device",
            "cpu",
            "--max-iters",
            "2",
            "--block-size",
            "8",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--eval-interval",
            "1",
            "--eval-iters",
            "1",
            "--batch-size",
            "2",
            "--no-final-eval",
        ),
        ("export", "onnx", str(model), "--out", str(out / "x"), "--no-verify"),
    ]
    for argv in runs:
        terminal = _Terminal()  # generate writes to a terminal; rich's commands to a capture,
        with monkeypatch.context() as m:  # where rich adds no styles of its own
            if argv[0] == "generate":
                m.setattr("sys.stdout", terminal)
            code = cli(*argv)
        captured = capsys.readouterr()
        shown = "".join(terminal.parts) + captured.out + captured.err
        assert code == 0, (argv, shown)
        assert_inert(shown)
        assert "Traceback" not in shown
        if argv[0] in ("info", "eval"):
            assert "[/][old]" in shown, shown  # the name, as it is, markup and all
        if argv[0] not in ("generate", "eval"):
            assert "[old] [/]" in shown, (argv, shown)  # paths are printed as they are
        if argv[0] == "generate":
            assert "\\x1b" in shown  # ESC was generated and shown as its escape
    # A bad file's text in an error line is inert too.
    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    (bad / modeldir.CONFIG_FILE).write_text(json.dumps({"format": EVIL}))
    line = expect_one_line_error(capsys, "info", bad)
    assert_inert(line)


def test_generate_into_a_pipe_keeps_the_text_as_generated(
    evil: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("generate", "-m", evil["model"], "--backend", "torch", "-n", "4", "hi") == 0
    assert "\x1b" in capsys.readouterr().out  # a pipe is data, not a terminal
