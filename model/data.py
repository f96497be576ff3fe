"""Data preparation (text -> token memmaps) and the training batch loader.

A prepared data directory holds train.bin and val.bin (flat uint16 token arrays, uint32 when
the vocabulary needs it) and meta.json (tokenizer spec, dtype, token counts, source checksum).
Preparation streams: a corpus of any size is read in chunks and never held in memory whole.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import modeldir
from model.tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, WithTokenizer, safe_cut

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
CHUNK_BYTES = 4 * 1024 * 1024
LOOKBACK_CHARS = 1 << 20  # a chunk's cut is looked for in its last 1M characters
MAX_UNCUT_CHARS = 64 << 20  # text with no safe cut in this many characters is refused
META_FILE = "meta.json"
TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".py", ""}


class DataError(ValueError):
    """A corpus or data directory that cannot be used."""


# ---------------------------------------------------------------------------- sources


def source_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"no text files in {source}")
        return files
    raise DataError(f"corpus not found: {source}")


def fetch_shakespeare(cache_dir: Path, from_file: Path | None = None) -> Path:
    """Tiny Shakespeare: a local copy if given, else downloaded once from its public source."""
    if from_file is not None:
        if not from_file.is_file():
            raise DataError(f"file not found: {from_file}")
        return from_file
    target = cache_dir / "tinyshakespeare.txt"
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as r:
            data = r.read()
    except OSError as e:
        raise DataError(
            f"cannot download Tiny Shakespeare ({e}); pass --from-file PATH to use a local copy"
        ) from None
    if hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
        raise DataError("downloaded Tiny Shakespeare does not match its known checksum")
    modeldir.atomic_write_bytes(target, data)
    return target


def _read_chunks(files: list[Path]) -> Iterator[tuple[str, int]]:
    """(text, UTF-8 bytes) chunks of about CHUNK_BYTES, cut only where `safe_cut` allows, so
    that the chunks of a corpus tokenize exactly as the whole would."""
    for path in files:
        utf8 = codecs.getincrementaldecoder("utf-8")()
        with open(path, "rb") as f:
            rest = ""
            while True:
                block = f.read(CHUNK_BYTES)
                try:
                    text = rest + utf8.decode(block, final=not block)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path} is not UTF-8 text ({e.reason})") from None
                if not block:
                    if text:
                        yield text, len(text.encode("utf-8"))
                    break
                cut = safe_cut(text, len(text), len(text) - LOOKBACK_CHARS)
                if cut == 0:
                    if len(text) > MAX_UNCUT_CHARS:
                        raise DataError(
                            f"{path} has {len(text) // 2**20} MB of text with no place to cut "
                            "it (a lone space or line break); is it text?"
                        )
                    rest = text
                    continue
                rest = text[cut:]
                yield text[:cut], len(text[:cut].encode("utf-8"))


# ---------------------------------------------------------------------------- preparation


@dataclass
class PrepareResult:
    out: Path
    vocab_size: int
    train_tokens: int
    val_tokens: int
    dtype: str
    sha256: str


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def prepare(
    files: list[Path],
    out: Path,
    tokenizer_kind: str = "char",
    val_fraction: float = 0.1,
    bpe_dir: str | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    source_name: str | None = None,
) -> PrepareResult:
    """Tokenize files into out/{train,val}.bin + meta.json. The last val_fraction is val.

    progress(bytes_done, tokens_done) is called as chunks complete.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    total_bytes = sum(p.stat().st_size for p in files)
    if total_bytes == 0:
        raise DataError("the corpus is empty")
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out} already exists and is not empty; pass --force to replace it")

    tokenizer: Tokenizer
    if tokenizer_kind == "char":
        tokenizer = CharTokenizer.from_text(text for text, _ in _read_chunks(files))
    elif tokenizer_kind == "gpt2":
        tokenizer = GPT2Tokenizer(bpe_dir)
    else:
        raise DataError(f"unknown tokenizer {tokenizer_kind!r}; choose char or gpt2")
    dtype = token_dtype(tokenizer.vocab_size)
    split_at = int(total_bytes * (1 - val_fraction))
    sha = hashlib.sha256()
    counts = {"train": 0, "val": 0}
    threads = os.cpu_count() or 1

    with modeldir.staged_dir(out, replace=force) as tmp:
        sinks = {name: open(tmp / f"{name}.bin", "wb") for name in counts}  # noqa: SIM115
        try:
            done = 0
            for text, n_bytes in _read_chunks(files):
                raw = text.encode("utf-8")
                sha.update(raw)
                # A chunk that straddles the split point is cut where safe_cut allows before
                # the point (at the point itself when there is no such place).
                parts: list[tuple[str, str]]
                if done < split_at < done + n_bytes:
                    at = len(raw[: split_at - done].decode("utf-8", errors="ignore"))
                    cut = safe_cut(text, at) or at
                    parts = [("train", text[:cut]), ("val", text[cut:])]
                else:
                    parts = [("train" if done < split_at else "val", text)]
                for name, part in parts:
                    if not part:
                        continue
                    ids = _encode(tokenizer, part, threads)
                    np.asarray(ids, dtype=dtype).tofile(sinks[name])
                    counts[name] += len(ids)
                done += n_bytes
                if progress:
                    progress(done, counts["train"] + counts["val"])
        finally:
            for f in sinks.values():
                f.close()
        meta = {
            "tokenizer": tokenizer.spec(),
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "source": source_name or ", ".join(str(p) for p in files[:5]),
            "source_bytes": total_bytes,
            "sha256": sha.hexdigest(),
        }
        modeldir.write_json(tmp / META_FILE, meta)
    return PrepareResult(
        out, tokenizer.vocab_size, counts["train"], counts["val"], dtype.name, sha.hexdigest()
    )


def _encode(tokenizer: Tokenizer, text: str, threads: int) -> list[int]:
    if isinstance(tokenizer, GPT2Tokenizer) and threads > 1 and len(text) > 100_000:
        # Several pieces per thread (tiktoken releases the GIL), cut where safe_cut allows.
        pieces = split_text(text, threads * 4)
        return [t for ids in tokenizer.encode_batch(pieces, threads) for t in ids]
    return tokenizer.encode(text)


def split_text(text: str, n: int) -> list[str]:
    """text in about n pieces of similar length, each cut where safe_cut allows."""
    pieces, start = [], 0
    for k in range(1, n):
        cut = safe_cut(text, k * len(text) // n, start + 1)
        if cut > start:
            pieces.append(text[start:cut])
            start = cut
    pieces.append(text[start:])
    return pieces


# ---------------------------------------------------------------------------- loading


@dataclass
class Dataset(WithTokenizer):
    path: Path
    meta: dict[str, Any]
    train: np.ndarray  # memmaps, opened once
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def split(self, name: str) -> np.ndarray:
        return self.train if name == "train" else self.val

    def require_windows(self, block_size: int) -> None:
        """Both splits must hold at least one training window of block_size + 1 tokens."""
        for name in ("train", "val"):
            n = len(self.split(name))
            if n < block_size + 1:
                raise DataError(
                    f"the {name} split has {n} tokens, fewer than block_size+1 "
                    f"({block_size + 1}); use more text or a smaller --block-size"
                )


def _check_token_range(tokens: np.ndarray, vocab_size: int, path: Path) -> None:
    """Refuse ids the vocabulary lacks: on CPU they end training in an IndexError, on a GPU in
    a device-side assert. One pass over the file in chunks (tens of ms per GB once cached)."""
    chunk = 1 << 26
    for i in range(0, len(tokens), chunk):
        top = int(tokens[i : i + chunk].max())
        if top >= vocab_size:
            raise DataError(
                f"{path} holds token id {top}, outside its vocabulary of {vocab_size}; "
                "prepare the data again"
            )


def load_dataset(path: str | os.PathLike[str], block_size: int | None = None) -> Dataset:
    p = Path(path)
    if not p.is_dir():
        raise DataError(
            f"data directory not found: {p} (create it with 'minigpt-tui data prepare')"
        )
    meta_path = p / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{p} has no {META_FILE}; is it a prepared data directory?")
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        meta["tokenizer"]["kind"]
        int(meta["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise DataError(f"cannot read {meta_path}: {e}") from None
    if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise DataError(f"{meta_path}: unsupported token dtype {dtype}")
    arrays = {}
    for name in ("train", "val"):
        f = p / f"{name}.bin"
        if not f.is_file() or f.stat().st_size == 0:
            raise DataError(f"{f} is missing or empty")
        if f.stat().st_size % dtype.itemsize:
            raise DataError(f"{f} is truncated (size not a multiple of {dtype.itemsize})")
        arrays[name] = np.memmap(f, dtype=dtype, mode="r")
        _check_token_range(arrays[name], int(meta["vocab_size"]), f)
    dataset = Dataset(p, meta, arrays["train"], arrays["val"])
    if block_size is not None:
        dataset.require_windows(block_size)
    return dataset
