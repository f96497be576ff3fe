"""Files the user names: read bounded (model/userfile.py), written only over regular files of
ours (model/modeldir.py), and no reader left that bypasses either."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from model import modeldir, userfile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_only_regular_files_are_read_and_a_fifo_never_blocks(tmp_path: Path, fifo: Path) -> None:
    t0 = time.perf_counter()
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        with pytest.raises(userfile.UserFileError, match=f"is {kind}, not a regular file"):
            userfile.read_bytes(path, 10)
    with pytest.raises(userfile.UserFileError, match="is a directory"):
        userfile.read_text(tmp_path, 10)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(FileNotFoundError):
        userfile.read_bytes(tmp_path / "nope", 10)


def test_the_byte_limit_is_the_read_not_stat(tmp_path: Path) -> None:
    """stat says 0 for /proc files and devices; the read itself stops at the limit."""
    good = tmp_path / "a.txt"
    good.write_bytes(b"x" * 10)
    assert userfile.read_bytes(good, 10) == b"x" * 10
    with pytest.raises(userfile.TooLarge, match="is over 9 bytes"):
        userfile.read_bytes(good, 9)
    link = tmp_path / "link.txt"
    link.symlink_to(good)
    assert userfile.read_text(link, 10) == "x" * 10  # a link to a regular file is fine
    assert Path("/proc/self/status").stat().st_size == 0
    with pytest.raises(userfile.TooLarge):
        userfile.read_bytes("/proc/self/status", 16)


HOSTILE_TOML = {
    "deep arrays": "a = " + "[" * 20_000 + "]" * 20_000,
    "deep inline tables": "a = " + "{b = " * 5_000 + "1" + "}" * 5_000,
    "dotted keys": "a" + ".a" * 30_000 + " = 1",  # 60 KB: 15 s and 3.5 GB in tomllib
    "dotted table header": "[" + ".".join(["t"] * 40) + "]",
    "many tables": "[[a]]\n" * 5_000,
    "many keys": "".join(f"k{i} = {i}\n" for i in range(5_000)),
}


@pytest.mark.parametrize("text", HOSTILE_TOML.values(), ids=HOSTILE_TOML.keys())
def test_hostile_toml_is_refused_before_tomllib_runs(text: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(userfile.UserFileError, match=r"deeper than|more than"):
        userfile.parse_toml(text, "f.toml")
    assert time.perf_counter() - t0 < 1


def test_ordinary_toml_passes_the_structure_check() -> None:
    text = (
        'x = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r [ [ [ {"\n'
        "'lit' = 'a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q'\n"
        '"a.b" = 1\nv = [1.5, 2.5e3, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0,'
        " 14.0, 15.0, 16.0, 17.0, 18.0]\n"
        "[sampling]\ntemperature = 0.5  # a comment with [ [ [ and a.b.c.d.e.f.g.h.i.j.k.l.m.n\n"
        '[keys]\nsend = "ctrl+g,f9"\n'
        'doc = """\nmany [[[[[[[[[[[[[[[[[[[[ and ..................\n"""\n'
        "point = { x = 1, y.z = 2 }\n"
    )
    data = userfile.parse_toml(text, "f.toml")
    assert data["sampling"]["temperature"] == 0.5 and data["keys"]["point"]["y"]["z"] == 2


def test_outputs_replace_only_regular_files(tmp_path: Path, fifo: Path) -> None:
    """atomic_file: a FIFO or a device at the path is refused (as root /dev/null was replaced
    by a regular file); a link to a regular file is written through, the link kept."""
    with pytest.raises(modeldir.ModelDirError, match="a FIFO; only a regular file is replaced"):
        modeldir.atomic_write_bytes(fifo, b"x")
    assert fifo.exists() and not fifo.is_file()
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    modeldir.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"
    with pytest.raises(modeldir.ModelDirError, match="character device"):
        modeldir.check_output(Path("/dev/null"), force=True)
    with (
        pytest.raises(modeldir.ModelDirError, match="not a directory"),
        modeldir.staged_dir(fifo, replace=True),
    ):
        pass


def test_an_output_never_is_or_holds_or_lies_inside_an_input(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    for out in (model, model / "x.gguf", model / "sub" / "x", tmp_path):
        with pytest.raises(modeldir.ModelDirError, match="which this command reads"):
            modeldir.check_not_input(out, [model])
    modeldir.check_not_input(tmp_path / "other", [model])


def test_a_run_s_latest_outside_the_run_is_refused(tmp_path: Path) -> None:
    from model import rundir

    run = tmp_path / "run"
    (run / "step-000001").mkdir(parents=True)
    (run / "step-000001" / "config.json").write_text("{}")
    assert rundir.latest(run) is None
    modeldir.point_latest(run, run / "step-000001")
    assert rundir.latest(run) == (run / "step-000001").resolve()
    for elsewhere in (tmp_path, Path("../run/step-000001"), Path(".."), Path("/")):
        (run / "latest").unlink()
        (run / "latest").symlink_to(elsewhere)
        with pytest.raises(modeldir.ModelDirError, match="outside the run directory"):
            rundir.latest(run)


# Reads of a path that are not through model/userfile.py: each is a file of ours, not one a
# user names (or names only a directory whose files were checked by name and kind first).
DIRECT_READS_ALLOWED = {
    "model/modeldir.py": "fsyncs the files it has just written",
    "model/corpus.py": "corpus files, taken only if regular, streamed in bounded pieces",
    "model/rundir.py": "the run's own .train.pid and /proc/locks",
    "export/vocab.py": "GPT-2's published files, after gpt2_bpe_files checked their SHA-256",
    "export/hf_export.py": "the same GPT-2 files, copied into the export",
}
READ = re.compile(r"\.(read_text|read_bytes)\(|[^.\w]open\([^)]*[\"']r")


def test_every_read_of_a_user_file_goes_through_the_bounded_reader() -> None:
    """A source scan: a new `path.read_text()` in model/, export/ or minigpt_tui/ (the TUI
    aside, which another change covers) must use model/userfile.py or be listed above."""
    found = []
    for package in ("model", "export", "minigpt_tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("minigpt_tui/tui/") or rel in DIRECT_READS_ALLOWED:
                continue
            if rel == "model/userfile.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if READ.search(line) and "userfile." not in line:
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
