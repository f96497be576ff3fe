"""Corpora as they ship: text, JSON Lines and Parquet, plain / .gz / .zst, directory trees,
bad records counted, and the one rule for cutting text."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import corpus
from model.corpus import DataError, ReadStats, find_files, read_corpus
from model.data import load_dataset, prepare
from model.tokenizer import GPT2Tokenizer
from tests.helpers import cli, expect_one_line_error

DOCS = [f"Document {i}: to be, or not to be.\nThat is question {i}.\n" for i in range(40)]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, texts: list[str | None], column: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: pa.array(texts, pa.string()), "id": list(range(len(texts)))})
    pq.write_table(table, path, row_group_size=7)  # several row groups
    return path


def documents(files: list[Path], field: str = "text") -> list[str]:
    """The documents a corpus reads as, pieces of one document joined."""
    docs: list[str] = []
    for piece in read_corpus(files, field, ReadStats()):
        if piece.new_doc:
            docs.append(piece.text)
        else:
            docs[-1] += piece.text
    return docs


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "c.ndjson"])
def test_jsonl_plain_and_compressed(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, [{"text": d, "id": i} for i, d in enumerate(DOCS)])
    assert documents([path]) == DOCS


def test_jsonl_field_option(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"content": d} for d in DOCS])
    assert documents([path], "content") == DOCS


@pytest.mark.parametrize("compress", ["", ".gz", ".zst"])
def test_text_plain_and_compressed_in_many_chunks(
    tmp_path: Path, compress: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "".join(DOCS) * 5
    raw = text.encode()
    if compress == ".gz":
        raw = gzip.compress(raw)
    elif compress == ".zst":
        import zstandard

        raw = zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / f"c.txt{compress}"
    path.write_bytes(raw)
    monkeypatch.setattr(corpus, "CHUNK_CHARS", 100)
    pieces = list(read_corpus([path], "text", ReadStats()))
    assert len(pieces) > 10 and "".join(p.text for p in pieces) == text
    assert [p.new_doc for p in pieces] == [True] + [False] * (len(pieces) - 1)
    ends = [p.end for p in pieces]
    assert ends == sorted(ends) and ends[-1] == path.stat().st_size


@pytest.mark.parametrize("name", ["c.parquet", "c.parquet.gz"])
def test_parquet_column_by_row_group(tmp_path: Path, name: str) -> None:
    path = write_parquet(tmp_path / "c.parquet", [*DOCS, None])
    if name.endswith(".gz"):
        (tmp_path / name).write_bytes(gzip.compress(path.read_bytes()))
        path = tmp_path / name
    stats = ReadStats()
    assert [p.text for p in read_corpus([path], "text", stats)] == DOCS
    assert stats.records == 41 and stats.bad == {"not a string": 1}
    with pytest.raises(DataError, match=r"no column 'body'.*--field"):
        list(read_corpus([path], "body", ReadStats()))
    with pytest.raises(DataError, match="column 'id' holds int64, not text"):
        list(read_corpus([path], "id", ReadStats()))


def test_missing_optional_libraries_name_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq_file = write_parquet(tmp_path / "c.parquet", DOCS)
    zst_file = write_jsonl(tmp_path / "c.jsonl.zst", [{"text": d} for d in DOCS])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(DataError, match=r"needs pyarrow: pip install 'minigpt-tui\[data\]'"):
        list(read_corpus([pq_file], "text", ReadStats()))
    with pytest.raises(DataError, match=r"needs zstandard: pip install 'minigpt-tui\[data\]'"):
        list(read_corpus([zst_file], "text", ReadStats()))


def test_directory_recursive_with_globs_skipping_hidden(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "x.txt").write_text("x\n")
    (root / "a" / "y.md").write_text("y\n")
    write_jsonl(root / "a" / "b" / "z.jsonl.gz", [{"text": "z"}])
    write_parquet(root / "a" / "w.parquet", ["w"])
    (root / "a" / "b" / "notes.log").write_text("log\n")
    (root / ".git" / "HEAD.txt").write_text("ref\n")
    (root / ".hidden.txt").write_text("h\n")
    rel = lambda files: [p.relative_to(root).as_posix() for p in files]  # noqa: E731
    assert rel(find_files(root)) == ["x.txt", "a/w.parquet", "a/y.md", "a/b/z.jsonl.gz"]
    assert rel(find_files(root, include=["*.log", "*.md"])) == ["a/y.md", "a/b/notes.log"]
    assert rel(find_files(root, exclude=["a/b/*", "*.parquet"])) == ["x.txt", "a/y.md"]
    with pytest.raises(DataError, match=r"no files matching \*.csv"):
        find_files(root, include=["*.csv"])


def test_gpt2_documents_are_separated_by_end_of_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS[:3]])
    prepare([path], tmp_path / "d", "gpt2", val_fraction=0)
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).tolist()
    tok = GPT2Tokenizer()
    a, b, c = (tok.encode(d) for d in DOCS[:3])
    assert train == [*a, 50256, *b, 50256, *c]


def test_char_documents_are_separated_by_a_blank_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", [{"text": "ab"}, {"text": "cd"}])
    write_parquet(src / "b.parquet", ["ef"])
    res = prepare(find_files(src), tmp_path / "d", "char", val_fraction=0)
    tok = load_dataset_tokenizer(tmp_path / "d")
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).tolist()
    assert tok.decode(train) == "ab\n\ncd\n\nef"
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["files"] == {"jsonl": 1, "parquet": 1} and meta["documents"] == 3
    assert meta["field"] == "text" and res.stats.summary() is None


def load_dataset_tokenizer(path: Path) -> Any:
    from model.tokenizer import from_spec

    return from_spec(json.loads((path / "meta.json").read_text())["tokenizer"], base=path)


def test_bad_records_are_counted_and_reported(tmp_path: Path, capsys: Any) -> None:
    records: list[Any] = [{"text": d} for d in DOCS]
    records[3] = "{not json"
    records[5] = {"body": "no text field"}
    records[7] = {"text": 42}
    records[9] = {"text": None}
    records[11] = ["a", "list"]
    path = write_jsonl(tmp_path / "c.jsonl", records)
    stats = ReadStats()
    docs = [p.text for p in read_corpus([path], "text", stats)]
    assert len(docs) == 35 and stats.records == 40
    assert stats.bad == {"not JSON": 1, "no 'text'": 2, "not a string": 2}
    assert stats.summary() == "5 bad records of 40 (no 'text' 2, not a string 2, not JSON 1)"
    capsys.readouterr()
    assert cli("data", "prepare", path, "--out", tmp_path / "d", "--tokenizer", "gpt2") == 0
    err = capsys.readouterr().err
    assert "warning: 5 bad records of 40 (no 'text' 2, not a string 2, not JSON 1)" in err
    meta = load_dataset(tmp_path / "d").meta
    assert meta["bad_records"] == {"not JSON": 1, "no 'text'": 2, "not a string": 2}
    assert meta["records"] == 40 and meta["documents"] == 35


def test_a_corpus_of_only_bad_records_is_refused(tmp_path: Path, capsys: Any) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", ["nope", {"text": 1}, {"other": "x"}])
    for kind in ("gpt2", "char", "bpe:300"):
        line = expect_one_line_error(
            capsys, "data", "prepare", path, "--out", tmp_path / "d", "--tokenizer", kind
        )
        assert line == (
            "error: no usable text in the corpus: 3 bad records of 3 "
            "(not JSON 1, not a string 1, no 'text' 1)"
        )
        assert not (tmp_path / "d").exists()


def test_a_too_long_record_is_bad_and_the_next_one_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "MAX_RECORD_BYTES", 50)
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "x" * 200}, {"text": "short"}])
    stats = ReadStats()
    assert [p.text for p in read_corpus([path], "text", stats)] == ["short"]
    assert stats.bad == {"too long": 1} and stats.records == 2


@pytest.mark.parametrize("text", ["ab" * 500, "日本語" * 300], ids=["ascii", "multibyte"])
def test_a_corpus_without_line_breaks_still_gets_both_splits(text: str, tmp_path: Path) -> None:
    from model.data import load_dataset, prepare

    src = tmp_path / "one-line.txt"
    src.write_text(text, encoding="utf-8")
    res = prepare([src], tmp_path / "d", "char", val_fraction=0.1)
    assert res.train_tokens > 0.8 * len(text) and res.val_tokens > 0
    ds = load_dataset(tmp_path / "d")
    tok = ds.tokenizer()
    assert tok.decode(ds.train.tolist()) + tok.decode(ds.val.tolist()) == text


def test_train_and_val_of_a_jsonl_corpus_hold_whole_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS])
    res = prepare([path], tmp_path / "d", "gpt2", val_fraction=0.25)
    ds = load_dataset(tmp_path / "d")
    tok = ds.tokenizer()
    train_docs = tok.decode(list(ds.train)).split("<|endoftext|>")
    val_docs = tok.decode(list(ds.val)).split("<|endoftext|>")
    assert train_docs + val_docs == DOCS or (
        [*train_docs[:-1], train_docs[-1] + val_docs[0], *val_docs[1:]] == DOCS
    )
    assert 0.15 < res.val_tokens / (res.train_tokens + res.val_tokens) < 0.35
    assert ds.meta["train_chars"] + ds.meta["val_chars"] == sum(map(len, DOCS))


@pytest.mark.parametrize("name", ["c.txt.gz", "c.txt.zst", "c.jsonl.gz", "c.jsonl.zst"])
def test_a_truncated_compressed_file_is_one_error_naming_it(
    tmp_path: Path, name: str, capsys: Any
) -> None:
    """A cut .gz used to end as `aborted` (exit 130, as if Ctrl+C); a cut .zst was accepted
    with the part before the cut."""
    if name.startswith("c.txt"):
        whole = tmp_path / ("whole" + name[1:])
        write_jsonl(whole, ["".join(DOCS) * 20])  # text: the same compressors
    else:
        whole = write_jsonl(tmp_path / ("whole" + name[1:]), [{"text": d} for d in DOCS * 20])
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 3])
    line = expect_one_line_error(capsys, "data", "prepare", cut, "--out", tmp_path / "d")
    assert str(cut) in line and "truncated" in line, line
    assert not (tmp_path / "d").exists()


def test_a_lone_surrogate_in_json_lines_is_a_bad_record(tmp_path: Path, capsys: Any) -> None:
    """'\\ud800' is valid JSON but no text: it used to end data prepare in a traceback."""
    records: list[Any] = [{"text": d} for d in DOCS]
    records[2] = '{"text": "half a pair \\ud800 here"}'
    path = write_jsonl(tmp_path / "c.jsonl", records)
    stats = ReadStats()
    assert len([p.text for p in read_corpus([path], "text", stats)]) == 39
    assert stats.bad == {"not UTF-8 text": 1}
    capsys.readouterr()
    for kind in ("char", "gpt2"):
        out = tmp_path / kind
        assert cli("data", "prepare", path, "--out", out, "--tokenizer", kind) == 0
        assert "1 bad records of 40 (not UTF-8 text 1)" in capsys.readouterr().err


def test_prepared_data_models_and_runs_are_never_read_as_corpus(tmp_path: Path) -> None:
    """`data prepare DIR --out DIR/data --force` used to read its own earlier output (and any
    model or run directory under DIR) as documents."""
    from tests.helpers import make_model

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("".join(DOCS))
    assert cli("data", "prepare", root, "--out", root / "data") == 0
    first = load_dataset(root / "data").meta
    model = make_model(root)  # a model directory inside the corpus
    (root / "run" / "step-000001").mkdir(parents=True)
    (root / "run" / "metrics.jsonl").write_text('{"text": "not a document"}\n')
    (root / "run" / "notes.txt").write_text("a run's file, not a document\n")
    assert model.parent == root
    assert [p.name for p in find_files(root)] == ["a.txt"]
    assert cli("data", "prepare", root, "--out", root / "data", "--force") == 0
    again = load_dataset(root / "data").meta
    assert again["documents"] == first["documents"] == 1
    assert again["train_tokens"] == first["train_tokens"]


def test_a_lone_surrogate_in_a_conversation_record_is_a_bad_record(
    tmp_path: Path, capsys: Any
) -> None:
    """The same decoding serves conversation records: '\\ud800' in a message used to end
    `data prepare --tokenizer gpt2` in a UnicodeEncodeError traceback."""
    talk = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok \ud83d\ude00"}]
    records: list[Any] = [{"messages": talk} for _ in range(20)]
    records.append(
        '{"messages": [{"role": "user", "content": "bad \\ud800"}, '
        '{"role": "assistant", "content": "ok"}]}'
    )
    path = write_jsonl(tmp_path / "c.jsonl", records)
    capsys.readouterr()
    assert cli("data", "prepare", path, "--out", tmp_path / "d", "--tokenizer", "gpt2") == 0
    assert "(not UTF-8 text 1)" in capsys.readouterr().err
