"""Data preparation (text -> token memmaps) and the training batch loader.

A prepared data directory holds train.bin and val.bin (flat uint16 token arrays, uint32 when
the vocabulary needs it) and meta.json (tokenizer spec, dtype, token counts, source checksum).
Preparation streams: a corpus of any size is read in chunks and never held in memory whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import corpus, modeldir, userfile
from model.corpus import DataError, ReadStats
from model.tokenizer import (
    BPE_FILE,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    WithTokenizer,
    bpe_vocab_size,
    safe_cut,
)

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
META_FILE = "meta.json"
DATA_FILES = (META_FILE, "train.bin", "val.bin", BPE_FILE)  # what a data directory holds
DOC_SEPARATOR = "\n\n"  # between documents for a character vocabulary (no end-of-text)
PIECE_CHARS = 1 << 16  # texts longer than this are cut into pieces to encode on all threads


# ---------------------------------------------------------------------------- sources


def source_files(
    source: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Path]:
    return corpus.find_files(source, include, exclude)


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


# ---------------------------------------------------------------------------- preparation


@dataclass
class PrepareResult:
    out: Path
    vocab_size: int
    train_tokens: int
    val_tokens: int
    dtype: str
    sha256: str
    stats: ReadStats
    notices: list[str]


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _split(
    files: Sequence[Path], field: str, split_at: float, stats: ReadStats
) -> Iterator[tuple[str, str, bool, float]]:
    """(split, text, new_doc, end) for the whole corpus: the part that ends by split_at (bytes
    on disk) is train, the rest val. The piece that straddles the point is cut where
    safe_cut allows before it (at the point itself when there is no such place)."""
    start = 0.0
    for piece in corpus.read_corpus(files, field, stats):
        text, end = piece.text, piece.end
        if end <= split_at:
            yield "train", text, piece.new_doc, end
        elif start >= split_at:
            yield "val", text, piece.new_doc, end
        else:
            at = round(len(text) * (split_at - start) / max(end - start, 1e-9))
            cut = safe_cut(text, at) or at
            if cut:
                yield "train", text[:cut], piece.new_doc, end
            yield "val", text[cut:], piece.new_doc and not cut, end
        start = end


def _check_usable(stats: ReadStats) -> None:
    if stats.documents == 0:
        bad = stats.summary()
        raise DataError(f"no usable text in the corpus: {bad}" if bad else "the corpus is empty")


def make_tokenizer(
    kind: str,
    files: Sequence[Path],
    field: str,
    split_at: float,
    bpe_dir: str | None = None,
) -> Tokenizer:
    """The tokenizer for a corpus: char and bpe:N learn theirs from it (bpe:N from the
    training split only), in one streaming pass."""
    if kind == "gpt2":
        return GPT2Tokenizer(bpe_dir)
    stats = ReadStats()
    if kind == "char":
        seen: set[str] = set()
        for _, text, _, _ in _split(files, field, split_at, stats):
            seen.update(text)
        _check_usable(stats)
        if stats.documents > 1:
            seen.update(DOC_SEPARATOR)
        return CharTokenizer("".join(sorted(seen)))
    if kind.startswith("bpe:"):
        n = bpe_vocab_size(kind)
        train_texts = (
            text for split, text, _, _ in _split(files, field, split_at, stats) if split == "train"
        )
        tokenizer = BPETokenizer.train(train_texts, n)
        _check_usable(stats)
        return tokenizer
    raise DataError(f"unknown tokenizer {kind!r}; choose char, gpt2 or bpe:N")


def prepare(
    files: list[Path],
    out: Path,
    tokenizer_kind: str = "char",
    val_fraction: float = 0.1,
    bpe_dir: str | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    source_name: str | None = None,
    field: str = "text",
) -> PrepareResult:
    """Tokenize a corpus into out/{train,val}.bin + meta.json. The last val_fraction of it
    (in bytes on disk) is val. Documents are separated by end-of-text (by a blank line for
    a character vocabulary). Every split of the text obeys `safe_cut`, so the result is the
    tokens of each whole document, whatever the chunking and the number of threads.

    progress(bytes_done, tokens_done) is called as chunks complete.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    total_bytes = corpus.corpus_bytes(files)
    if total_bytes == 0:
        raise DataError("the corpus is empty")
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out} already exists and is not empty; pass --force to replace it")
    if out.is_dir() and force:  # --force replaces prepared data, never a directory of other files
        others = sorted(p.name for p in out.iterdir() if p.name not in DATA_FILES)
        if others:
            raise DataError(
                f"{out} is not a data directory (it holds {', '.join(others[:3])}); "
                "--force replaces only prepared data"
            )

    split_at = total_bytes * (1 - val_fraction)
    tokenizer = make_tokenizer(tokenizer_kind, files, field, split_at, bpe_dir)
    notices = []
    if tokenizer_kind.startswith("bpe:") and tokenizer.vocab_size < bpe_vocab_size(tokenizer_kind):
        notices.append(
            f"the training split allows only {tokenizer.vocab_size:,} tokens, fewer than "
            f"{tokenizer_kind}: it has no more pairs to merge"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    # Between documents: end-of-text, or a blank line for a vocabulary without one (its
    # vocabulary then holds the line break: make_tokenizer adds it for several documents).
    separator = np.asarray([tokenizer.eot] if tokenizer.eot is not None else [], dtype)
    sha = hashlib.sha256()
    counts = {"train": 0, "val": 0}
    chars = {"train": 0, "val": 0}
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    stats = ReadStats()

    with modeldir.staged_dir(out, replace=force) as tmp, ThreadPoolExecutor(1) as encoder:
        sinks = {name: open(tmp / f"{name}.bin", "wb") for name in counts}  # noqa: SIM115
        try:
            # One batch is encoded in the background (on all threads) while the main thread
            # reads the next and writes the one before, so that the threads never wait.
            Job = tuple[list[tuple[str, str, bool]], Future[list[np.ndarray]], float]
            pending: Job | None = None

            def write(job: Job) -> None:
                nonlocal separator
                items, future, end = job
                for (name, text, new_doc), ids in zip(items, future.result(), strict=True):
                    if new_doc and (counts[name] or chars[name]):
                        if not len(separator):
                            separator = np.asarray(tokenizer.encode(DOC_SEPARATOR), dtype)
                        separator.tofile(sinks[name])
                        counts[name] += len(separator)
                    ids.astype(dtype, copy=False).tofile(sinks[name])
                    counts[name] += len(ids)
                    chars[name] += len(text)
                if progress:
                    progress(int(end), counts["train"] + counts["val"])

            def submit(items: list[tuple[str, str, bool]], end: float) -> None:
                nonlocal pending
                texts = [text for _, text, _ in items]
                job = (items, encoder.submit(encode_texts, tokenizer, texts, threads), end)
                if pending is not None:
                    write(pending)
                pending = job

            batch: list[tuple[str, str, bool]] = []
            size = 0
            for name, text, new_doc, end in _split(files, field, split_at, stats):
                sha.update(text.encode("utf-8"))
                batch.append((name, text, new_doc))
                size += len(text)
                if size >= corpus.CHUNK_CHARS:
                    submit(batch, end)
                    batch, size = [], 0
            submit(batch, total_bytes)
            assert pending is not None
            write(pending)
        finally:
            for f in sinks.values():
                f.close()
        _check_usable(stats)
        for name, content in tokenizer.files().items():
            (tmp / name).write_bytes(content)
        meta = {
            "tokenizer": tokenizer.spec(),
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "train_chars": chars["train"],
            "val_chars": chars["val"],
            "source": source_name or ", ".join(str(p) for p in files[:5]),
            "source_bytes": total_bytes,
            "field": field if set(stats.files) - {"text", "text.gz", "text.zst"} else None,
            **stats.to_dict(),
            "sha256": sha.hexdigest(),
        }
        modeldir.write_json(tmp / META_FILE, meta)
    return PrepareResult(
        out,
        tokenizer.vocab_size,
        counts["train"],
        counts["val"],
        dtype.name,
        sha.hexdigest(),
        stats,
        notices,
    )


def encode_texts(tokenizer: Tokenizer, texts: list[str], threads: int) -> list[np.ndarray]:
    """Each text's tokens (uint32), long texts cut into pieces (where safe_cut allows) so
    that the tokenizer's batch encoding keeps every thread busy."""
    if threads <= 1:
        return tokenizer.encode_batch(texts, 1)
    target = max(PIECE_CHARS, sum(map(len, texts)) // (threads * 4))
    pieces: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        parts = split_text(text, len(text) // target) if len(text) > 2 * target else [text]
        pieces += parts
        owner += [i] * len(parts)
    found: list[list[np.ndarray]] = [[] for _ in texts]
    for i, ids in zip(owner, tokenizer.encode_batch(pieces, threads), strict=True):
        found[i].append(ids)
    return [parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in found]


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
        meta = json.loads(userfile.read_text(meta_path, modeldir.MAX_CONFIG_BYTES))
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
