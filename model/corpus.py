"""Reading corpora as they ship: text, JSON Lines and Parquet files, each plain or compressed
(.gz, .zst), one file or a directory tree of them.

A corpus is read as a stream of documents in pieces of about CHUNK_CHARS characters, so that
memory stays bounded whatever its size: text files block by block (cut only where
`safe_cut` allows), JSON Lines record by record, Parquet row group by row group. Each piece
says how far through the corpus it ends, measured in bytes on disk, which is how `data
prepare` draws the train/val boundary and its progress bar. Records that cannot be used are
counted by kind, never dropped silently.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import gzip
import io
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import modeldir
from model.events import METRICS_FILE
from model.tokenizer import safe_cut

CHUNK_CHARS = 4 * 1024 * 1024
LOOKBACK_CHARS = 1 << 20  # a text chunk's cut is looked for in its last 1M characters
MAX_UNCUT_CHARS = 64 << 20  # text with no safe cut in this many characters is refused
MAX_RECORD_BYTES = 64 << 20  # a longer JSON line is a bad record ("too long")
PARQUET_BATCH_ROWS = 1024

TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst", ".csv", ".tsv", ".json", ".py", ""}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
COMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd"}
EXTRA_HINT = "pip install 'minigpt-tui[data]'"


class DataError(ValueError):
    """A corpus or data directory that cannot be used."""


# ---------------------------------------------------------------------------- finding files


def file_format(path: Path) -> tuple[str, str | None]:
    """(text | jsonl | parquet, gzip | zstd | None) from a file's suffixes."""
    name = path.name.lower()
    compression = None
    for suffix, kind in COMPRESSED_SUFFIXES.items():
        if name.endswith(suffix):
            compression, name = kind, name[: -len(suffix)]
    inner = Path(name).suffix
    if inner in JSONL_SUFFIXES:
        return "jsonl", compression
    if inner in PARQUET_SUFFIXES:
        return "parquet", compression
    return "text", compression


def _known(path: Path) -> bool:
    name = path.name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return Path(name).suffix in TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    """A glob with a / matches the path relative to the corpus root, one without the name."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel if "/" in p else name, p) for p in patterns)


def find_files(
    source: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Path]:
    """The corpus files under source, in a stable order.

    A file is taken as it is. In a directory, every file with a known suffix (or, with
    --include, every file an include glob matches) and no --exclude match, recursively,
    skipping hidden files and directories (.git, .venv, ...).
    """
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(f"corpus not found: {source}")
    if (what := made_here(source)) is not None:
        raise DataError(f"{source} is {what}, not a corpus")
    found = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and made_here(Path(root) / d) is None
        )
        for name in sorted(names):
            path = Path(root) / name
            rel = path.relative_to(source).as_posix()
            if name.startswith(".") or not path.is_file():
                continue
            if (_matches(rel, include) if include else _known(path)) and not _matches(rel, exclude):
                found.append(path)
    if not found:
        what = f"matching {', '.join(include)}" if include else "of a known format"
        raise DataError(f"no files {what} in {source}")
    return found


def made_here(path: Path) -> str | None:
    """What this tool made `path` into (prepared data, a model, a training run), in words, or
    None. Such directories are never read as corpus: `data prepare DIR --out DIR/data` would
    otherwise read its own earlier output, and a model's config.json, as documents."""
    if (path / "meta.json").is_file() and (path / "train.bin").exists():  # model/data.py's
        return "a prepared data directory"
    if (path / modeldir.CONFIG_FILE).is_file() and any(
        (path / name).exists() for name in (modeldir.WEIGHTS_FILE, modeldir.ONNX_FILE)
    ):
        return "a model directory"
    if (path / modeldir.LATEST).is_symlink() or (
        (path / METRICS_FILE).is_file() and any(path.glob("step-[0-9]*"))
    ):
        return "a training run directory"
    return None


# ---------------------------------------------------------------------------- reading


@dataclass
class Piece:
    text: str
    new_doc: bool  # a new document starts with this piece
    end: float  # how far through the corpus (bytes on disk) this piece ends


@dataclass
class ReadStats:
    """What one pass over a corpus found."""

    files: Counter[str] = field(default_factory=Counter)  # format -> files
    documents: int = 0
    records: int = 0  # JSON Lines and Parquet rows, good and bad
    bad: Counter[str] = field(default_factory=Counter)  # kind -> records

    def summary(self) -> str | None:
        """'N bad records of M (k1 n1, k2 n2)', or None when there were none."""
        if not self.bad:
            return None
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in self.bad.most_common())
        return f"{sum(self.bad.values()):,} bad records of {self.records:,} ({kinds})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "documents": self.documents,
            "records": self.records,
            "bad_records": dict(self.bad),
        }


def corpus_bytes(files: Sequence[Path]) -> int:
    try:
        return sum(p.stat().st_size for p in files)
    except OSError as e:
        raise DataError(f"cannot read the corpus: {e.strerror or e}: {e.filename}") from None


def read_corpus(files: Sequence[Path], field: str, stats: ReadStats) -> Iterator[Piece]:
    """Every document of every file, in pieces, counting what it finds into stats."""
    offset = 0
    for path in files:
        fmt, compression = file_format(path)
        size = path.stat().st_size
        stats.files[fmt + {"gzip": ".gz", "zstd": ".zst", None: ""}[compression]] += 1
        reader = {"text": _read_text, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt]
        for text, new_doc, fraction in reader(path, compression, field, stats):
            stats.documents += new_doc
            yield Piece(text, new_doc, offset + size * fraction)
        offset += size


def _open(path: Path, compression: str | None) -> io.BufferedIOBase:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"reading {path.name} needs zstandard: {EXTRA_HINT}") from None
        return io.BufferedReader(_ZstdFrames(path, zstandard), buffer_size=1 << 20)
    return open(path, "rb")


class _ZstdFrames(io.RawIOBase):
    """The frames of a .zst file, decompressed one after another; EOFError when the file
    ends inside a frame (zstandard's own stream reader ends there silently, so a cut file
    would pass for a shorter corpus)."""

    def __init__(self, path: Path, zstandard: Any) -> None:
        self._raw = open(path, "rb")  # noqa: SIM115 (closed in close)
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._frame = self._new()
        self._started = False  # the current frame has received input
        self._out = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            block = self._raw.read(1 << 20)
            if not block:
                if self._started and not self._frame.eof:
                    raise EOFError("the compressed data ends inside a zstd frame")
                return 0
            while block:
                if self._frame.eof:  # the next frame starts in what the last one left
                    self._frame, self._started = self._new(), False
                self._started = True
                self._out += self._frame.decompress(block)
                block = self._frame.unused_data if self._frame.eof else b""
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _damaged(path: Path, e: BaseException) -> DataError:
    """The one line for a corrupt or cut compressed file (gzip and zstd raise EOFError or
    their own errors, which are OSError or ValueError subclasses)."""
    return DataError(f"cannot read {path}: it is truncated or damaged ({e})")


def _plain_size(path: Path, compression: str | None) -> int:
    """Decompressed bytes: one pass over a compressed file (fast next to tokenizing it)."""
    if compression is None:
        return path.stat().st_size
    n = 0
    try:
        with _open(path, compression) as f:
            while block := f.read(CHUNK_CHARS):
                n += len(block)
    except (OSError, EOFError, _zstd_error()) as e:
        raise _damaged(path, e) from None
    return n


def _zstd_error() -> type[BaseException]:
    """zstandard's error type where the library is installed (else one never raised)."""
    try:
        import zstandard
    except ImportError:
        return EOFError
    return zstandard.ZstdError


def _read_text(
    path: Path, compression: str | None, field: str, stats: ReadStats
) -> Iterator[tuple[str, bool, float]]:
    """One document per file, in chunks cut where safe_cut allows."""
    total = max(_plain_size(path, compression), 1)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    done, first, rest = 0, True, ""
    try:
        with _open(path, compression) as f:
            while True:
                block = f.read(CHUNK_CHARS)
                text = rest + utf8.decode(block, final=not block)
                if not block:
                    if text:
                        yield text, first, 1.0
                    return
                cut = safe_cut(text, len(text), len(text) - LOOKBACK_CHARS)
                if cut == 0:
                    if len(text) > MAX_UNCUT_CHARS:
                        raise DataError(
                            f"{path} has {len(text) >> 20} MB of text with no place to cut "
                            "it (a lone space or line break); is it text?"
                        )
                    rest = text
                    continue
                rest = text[cut:]
                done += len(text[:cut].encode("utf-8"))
                yield text[:cut], first, min(done / total, 1.0)
                first = False
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError, _zstd_error()) as e:  # a corrupt or truncated .gz / .zst
        raise _damaged(path, e) from None


def _read_jsonl(
    path: Path, compression: str | None, field: str, stats: ReadStats
) -> Iterator[tuple[str, bool, float]]:
    """One document per line: the string at `field` of each JSON object."""
    for record, fraction in _jsonl_records(path, compression, stats):
        text = _field_text(record, field, stats)
        if text:
            yield text, True, fraction


class NotText(ValueError):
    """A JSON record holding half a surrogate pair ("\\ud800"): valid JSON, but no text."""


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _json_record(line: bytes) -> Any:
    """One JSON Lines record; ValueError for bad JSON, NotText for a lone surrogate (which
    would end tokenizing in a UnicodeEncodeError). Escaped pairs are checked only where the
    line holds one, so plain records cost nothing more."""
    record = json.loads(line)
    if _SURROGATE_ESCAPE.search(line):
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise NotText("a lone surrogate") from None
    return record


def _field_text(record: Any, field: str, stats: ReadStats) -> str | None:
    if isinstance(record, dict) and field not in record and set(CHAT_FIELDS) & set(record):
        raise DataError(
            f"chat and plain records mixed in one corpus: record {stats.records:,} is a "
            "conversation, and the corpus is read as plain text (its first record is plain, "
            "or --format text)"
        )
    if not isinstance(record, dict) or field not in record:
        stats.bad[f"no '{field}'"] += 1
        return None
    value = record[field]
    if not isinstance(value, str):
        stats.bad["not a string"] += 1
        return None
    return value


def _read_parquet(
    path: Path, compression: str | None, field: str, stats: ReadStats
) -> Iterator[tuple[str, bool, float]]:
    """One document per row: the string column `field`, read row group by row group."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path.name} needs pyarrow: {EXTRA_HINT}") from None
    with _seekable(path, compression) as source:
        try:
            pf = pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path} as Parquet: {e}") from None
        schema = pf.schema_arrow
        if field not in schema.names:
            raise DataError(
                f"{path} has no column {field!r} (it has {', '.join(schema.names[:8])}); "
                "choose one with --field"
            )
        kind = schema.field(field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"{path}: column {field!r} holds {kind}, not text")
        rows = max(pf.metadata.num_rows, 1)
        done = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[field]):
                values = batch.column(0).to_pylist()
                for value in values:
                    done += 1
                    stats.records += 1
                    if value is None:
                        stats.bad["not a string"] += 1
                    elif value:
                        yield value, True, done / rows
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path}: {e}") from None


@contextlib.contextmanager
def _seekable(path: Path, compression: str | None) -> Iterator[Any]:
    """Parquet needs to seek: a compressed file is decompressed to a temporary file first."""
    if compression is None:
        yield str(path)
        return
    with tempfile.TemporaryFile() as tmp:
        try:
            with _open(path, compression) as f:
                shutil.copyfileobj(f, tmp, 1 << 20)
        except (OSError, EOFError, _zstd_error()) as e:
            raise _damaged(path, e) from None
        tmp.seek(0)
        yield tmp


# ---------------------------------------------------------------------------- records
# Conversation corpora (see model/chat.py) are read as whole records, not as text at a field.

CHAT_FIELDS = ("messages", "conversations")  # a record holding one of these is a conversation


def looks_like_chat(files: Sequence[Path]) -> bool:
    """Whether the corpus is conversations, from its first JSON Lines or Parquet file: the
    first JSON object of its first lines, or the Parquet columns, has `messages` or
    `conversations`. Reads only the start of one file."""
    for path in files:
        fmt, compression = file_format(path)
        if fmt == "parquet":
            return any(name in CHAT_FIELDS for name in _parquet_columns(path, compression))
        if fmt == "jsonl":
            try:
                with _open(path, compression) as f:
                    for _ in range(100):
                        line = f.readline(MAX_RECORD_BYTES + 1)
                        if not line:
                            break
                        with contextlib.suppress(ValueError, RecursionError):
                            record = _json_record(line)
                            if isinstance(record, dict):
                                return any(name in record for name in CHAT_FIELDS)
            except (OSError, EOFError, _zstd_error()) as e:
                raise _damaged(path, e) from None
            return False
    return False


def _parquet_columns(path: Path, compression: str | None) -> list[str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path.name} needs pyarrow: {EXTRA_HINT}") from None
    with _seekable(path, compression) as source:
        try:
            return list(pq.ParquetFile(source).schema_arrow.names)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path} as Parquet: {e}") from None


def read_records(files: Sequence[Path], stats: ReadStats) -> Iterator[tuple[Any, float]]:
    """Every record of every JSON Lines and Parquet file (a JSON value; a Parquet row as a
    dict of its columns), with how far through the corpus (bytes on disk) it ends. Lines that
    are not JSON or are too long are counted in stats and skipped."""
    offset = 0
    for path in files:
        fmt, compression = file_format(path)
        if fmt == "text":
            raise DataError(f"{path} is a text file; records come as JSON Lines or Parquet")
        size = path.stat().st_size
        stats.files[fmt + {"gzip": ".gz", "zstd": ".zst", None: ""}[compression]] += 1
        for record, fraction in _RECORD_READERS[fmt](path, compression, stats):
            yield record, offset + size * fraction
        offset += size


def _jsonl_records(
    path: Path, compression: str | None, stats: ReadStats
) -> Iterator[tuple[Any, float]]:
    """One JSON value per non-blank line (stats.records counts them, stats.bad the bad)."""
    total = max(_plain_size(path, compression), 1)
    done = 0
    try:
        with _open(path, compression) as f:
            while line := f.readline(MAX_RECORD_BYTES + 1):
                done += len(line)
                if len(line) > MAX_RECORD_BYTES:
                    while line and not line.endswith(b"\n"):  # skip the rest of the record
                        line = f.readline(MAX_RECORD_BYTES)
                        done += len(line)
                    stats.records += 1
                    stats.bad["too long"] += 1
                    continue
                if not line.strip():
                    continue
                stats.records += 1
                try:
                    record = _json_record(line)
                except NotText:
                    stats.bad["not UTF-8 text"] += 1
                    continue
                except (ValueError, RecursionError):  # bad JSON or bad UTF-8
                    stats.bad["not JSON"] += 1
                    continue
                yield record, done / total
    except (OSError, EOFError, _zstd_error()) as e:  # a corrupt or truncated .gz / .zst
        raise _damaged(path, e) from None


def _parquet_records(
    path: Path, compression: str | None, stats: ReadStats
) -> Iterator[tuple[Any, float]]:
    """One dict per row: the chat columns (messages, conversations) when the file has one,
    else every column; row group by row group."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path.name} needs pyarrow: {EXTRA_HINT}") from None
    with _seekable(path, compression) as source:
        try:
            pf = pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path} as Parquet: {e}") from None
        names = pf.schema_arrow.names
        columns = [n for n in CHAT_FIELDS if n in names] or None
        rows = max(pf.metadata.num_rows, 1)
        done = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                for row in batch.to_pylist():
                    done += 1
                    stats.records += 1
                    yield row, done / rows
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read {path}: {e}") from None


_RECORD_READERS = {"jsonl": _jsonl_records, "parquet": _parquet_records}
