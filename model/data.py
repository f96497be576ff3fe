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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from model import chat, corpus, modeldir, userfile
from model.chat import ChatFormatError, Message
from model.corpus import DataError, ReadStats
from model.tokenizer import (
    BPE_FILE,
    BPE_MIN_CHAT_VOCAB,
    TEMPLATE_FILE,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    WithTokenizer,
    bpe_vocab_size,
    chat_version,
    safe_cut,
)

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
META_FILE = "meta.json"
MASK_FILES = {"train": "train.mask.bin", "val": "val.mask.bin"}  # conversations only
# What a data directory holds.
DATA_FILES = (META_FILE, "train.bin", "val.bin", *MASK_FILES.values(), BPE_FILE, TEMPLATE_FILE)
DOC_SEPARATOR = "\n\n"  # between documents for a character vocabulary (no end-of-text)
PIECE_CHARS = 1 << 16  # texts longer than this are cut into pieces to encode on all threads
T = TypeVar("T")


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
    format: str = "text"  # or "chat"
    trained_tokens: dict[str, int] | None = None  # chat: tokens with mask 1, per split


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


def _conversations(
    files: Sequence[Path],
    field: str,
    split_at: float,
    stats: ReadStats,
    vocabulary: CharTokenizer | None = None,
) -> Iterator[tuple[str, list[Message], float]]:
    """(split, messages, end) for every usable conversation; a conversation is never cut: it
    is train when it ends by split_at (the first one always is), else val. Bad records are
    counted in stats.bad by reason (model/chat.py's ChatFormatError.reason; with a given
    character vocabulary, "unknown character" for text it lacks)."""
    first = True
    for record, end in corpus.read_records(files, stats):
        try:
            messages = chat.parse_record(record)
            if vocabulary is not None and any(
                vocabulary.unknown_chars(m.content) for m in messages
            ):
                raise ChatFormatError("unknown character")
        except ChatFormatError as e:
            if isinstance(record, dict) and field in record and not chat.is_chat_record(record):
                raise DataError(
                    f"chat and plain records mixed in one corpus: record {stats.records:,} is "
                    f"plain text ({field!r}, no 'messages' or 'conversations') among "
                    "conversations"
                ) from None
            stats.bad[e.reason] += 1
            continue
        stats.documents += 1
        yield ("train" if end <= split_at or first else "val"), messages, end
        first = False


def _check_usable(stats: ReadStats, what: str = "text") -> None:
    if stats.documents == 0:
        bad = stats.summary()
        raise DataError(f"no usable {what} in the corpus: {bad}" if bad else "the corpus is empty")


def data_format(files: Sequence[Path], forced: str | None = None) -> str:
    """ "chat" or "text": forced by --format, else "chat" when the first record of the first
    JSON Lines or Parquet file is a conversation. A conversation corpus cannot hold text
    files (their text is not in turns)."""
    if forced not in (None, "text", "chat"):
        raise DataError(f"--format must be text or chat, got {forced!r}")
    fmt = forced or ("chat" if corpus.looks_like_chat(files) else "text")
    if fmt == "chat":
        text_files = [f for f in files if corpus.file_format(f)[0] == "text"]
        if text_files:
            raise DataError(
                f"chat and plain records mixed in one corpus: {text_files[0]} is a text file; "
                "conversations come as JSON Lines or Parquet records"
            )
    return fmt


def _corpus_texts(
    files: Sequence[Path], field: str, split_at: float, stats: ReadStats, fmt: str, split: str
) -> Iterator[str]:
    """The texts of one split (or of both, split="") to learn a vocabulary from: the
    documents, or each message of the conversations."""
    if fmt == "chat":
        for name, messages, _ in _conversations(files, field, split_at, stats):
            if split in ("", name):
                yield from (m.content for m in messages)
    else:
        for name, text, _, _ in _split(files, field, split_at, stats):
            if split in ("", name):
                yield text


def make_tokenizer(
    kind: str | Tokenizer,
    files: Sequence[Path],
    field: str,
    split_at: float,
    bpe_dir: str | None = None,
    fmt: str = "text",
) -> Tokenizer:
    """The tokenizer for a corpus: char and bpe:N learn theirs from it (bpe:N from the
    training split only), in one streaming pass; a Tokenizer (a model's, to fine-tune it) is
    taken as it is. For conversations (fmt="chat") it is a chat tokenizer, with the chat
    format's special tokens (a given tokenizer's chat version: model/tokenizer.py)."""
    is_chat = fmt == "chat"
    if not isinstance(kind, str):
        return chat_version(kind) if is_chat else kind
    if kind == "gpt2":
        return GPT2Tokenizer(bpe_dir, chat=is_chat)
    stats = ReadStats()
    what = "conversation" if is_chat else "text"
    if kind == "char":
        seen: set[str] = set()
        for text in _corpus_texts(files, field, split_at, stats, fmt, ""):
            seen.update(text)
        _check_usable(stats, what)
        if stats.documents > 1 and not is_chat:
            seen.update(DOC_SEPARATOR)
        return CharTokenizer("".join(sorted(seen)), chat=is_chat)
    if kind.startswith("bpe:"):
        n = bpe_vocab_size(kind)
        if is_chat and n < BPE_MIN_CHAT_VOCAB:
            raise DataError(
                f"a chat tokenizer needs bpe:N of at least {BPE_MIN_CHAT_VOCAB} (256 bytes, "
                f"<|endoftext|> and 4 turn tokens), got {n}"
            )
        texts = _corpus_texts(files, field, split_at, stats, fmt, "train")
        tokenizer = BPETokenizer.train(texts, n, chat=is_chat)
        _check_usable(stats, what)
        return tokenizer
    raise DataError(f"unknown tokenizer {kind!r}; choose char, gpt2 or bpe:N")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out} already exists and is not empty; pass --force to replace it")
    if out.is_dir() and force:  # --force replaces prepared data, never a directory of other files
        others = sorted(p.name for p in out.iterdir() if p.name not in DATA_FILES)
        if others:
            raise DataError(
                f"{out} is not a data directory (it holds {', '.join(others[:3])}); "
                "--force replaces only prepared data"
            )


def prepare(
    files: list[Path],
    out: Path,
    tokenizer_kind: str | Tokenizer = "char",
    val_fraction: float = 0.1,
    bpe_dir: str | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    source_name: str | None = None,
    field: str = "text",
    fmt: str | None = None,
) -> PrepareResult:
    """Tokenize a corpus into out/{train,val}.bin + meta.json. The last val_fraction of it
    (in bytes on disk) is val. tokenizer_kind: char, gpt2, bpe:N, or a Tokenizer (a model's).

    Plain text (fmt "text"): documents are separated by end-of-text (by a blank line for a
    character vocabulary). Every split of the text obeys `safe_cut`, so the result is the
    tokens of each whole document, whatever the chunking and the number of threads.
    Conversations (fmt "chat"; detected from the records when fmt is None): each is its ids
    in the chat format (model/chat.py, starting with <|endoftext|>), never cut between the
    splits, and out/{train,val}.mask.bin hold a uint8 per token, 1 where it is trained.

    progress(bytes_done, tokens_done) is called as chunks complete.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    total_bytes = corpus.corpus_bytes(files)
    if total_bytes == 0:
        raise DataError("the corpus is empty")
    _check_out(out, force)
    fmt = data_format(files, fmt)
    split_at = total_bytes * (1 - val_fraction)
    tokenizer = make_tokenizer(tokenizer_kind, files, field, split_at, bpe_dir, fmt)
    notices = []
    kind = tokenizer_kind if isinstance(tokenizer_kind, str) else ""
    if kind.startswith("bpe:") and tokenizer.vocab_size < bpe_vocab_size(kind):
        notices.append(
            f"the training split allows only {tokenizer.vocab_size:,} tokens, fewer than "
            f"{kind}: it has no more pairs to merge"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    stats = ReadStats()
    with modeldir.staged_dir(out, replace=force) as tmp:
        with _Splits(tmp, dtype, masked=fmt == "chat") as splits:
            if fmt == "chat":
                vocabulary = tokenizer if isinstance(tokenizer, CharTokenizer) else None
                conversations = _conversations(files, field, split_at, stats, vocabulary)
                chunks = _chat_chunks(conversations)
                _write_chat(splits, tokenizer, chunks, progress)
                _check_usable(stats, "conversation")
                if val_fraction > 0 and not splits.counts["val"]:
                    raise DataError(
                        "no conversation falls in the validation split (a corpus needs at least "
                        "two usable conversations, or --val-fraction 0)"
                    )
            else:
                _write_text(splits, tokenizer, _split(files, field, split_at, stats), progress)
                _check_usable(stats)
        if progress:
            progress(total_bytes, splits.counts["train"] + splits.counts["val"])
        modeldir.write_tokenizer_files(tmp, tokenizer)
        source = source_name or ", ".join(str(p) for p in files[:5])
        meta = _meta(tokenizer, splits, stats, fmt, source, total_bytes, field)
        modeldir.write_json(tmp / META_FILE, meta)
    return PrepareResult(
        out=out,
        vocab_size=tokenizer.vocab_size,
        train_tokens=splits.counts["train"],
        val_tokens=splits.counts["val"],
        dtype=dtype.name,
        sha256=meta["sha256"],
        stats=stats,
        notices=notices,
        format=fmt,
        trained_tokens=splits.trained if fmt == "chat" else None,
    )


def _meta(
    tokenizer: Tokenizer,
    splits: _Splits,
    stats: ReadStats,
    fmt: str,
    source: str,
    source_bytes: int,
    field: str,
) -> dict[str, Any]:
    """meta.json of a data directory."""
    return {
        "tokenizer": tokenizer.spec(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": splits.dtype.name,
        "format": fmt,
        "train_tokens": splits.counts["train"],
        "val_tokens": splits.counts["val"],
        "train_chars": splits.chars["train"],
        "val_chars": splits.chars["val"],
        **({"trained_tokens": splits.trained} if fmt == "chat" else {}),
        "source": source,
        "source_bytes": source_bytes,
        "field": field if fmt == "text" and set(stats.files) - TEXT_FORMATS else None,
        **stats.to_dict(),
        "sha256": splits.sha.hexdigest(),
    }


TEXT_FORMATS = {"text", "text.gz", "text.zst"}


class _Splits:
    """The output files of both splits, the tokens and (for conversations) their mask, with
    what was written: tokens, characters, trained tokens and the SHA-256 of the text."""

    def __init__(self, directory: Path, dtype: np.dtype[Any], masked: bool) -> None:
        names = ("train", "val")
        self.dtype = dtype
        self.counts = dict.fromkeys(names, 0)
        self.chars = dict.fromkeys(names, 0)
        self.trained = dict.fromkeys(names, 0)
        self.sha = hashlib.sha256()
        self.tokens = {n: open(directory / f"{n}.bin", "wb") for n in names}  # noqa: SIM115
        self.masks = {
            n: open(directory / f"{n}.mask.bin", "wb")  # noqa: SIM115
            for n in (names if masked else ())
        }

    def write(self, name: str, ids: np.ndarray, mask: np.ndarray | None = None) -> None:
        ids.astype(self.dtype, copy=False).tofile(self.tokens[name])
        self.counts[name] += len(ids)
        if mask is not None:
            mask.astype(np.uint8, copy=False).tofile(self.masks[name])
            self.trained[name] += int(mask.sum())

    def __enter__(self) -> _Splits:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in [*self.tokens.values(), *self.masks.values()]:
            f.close()


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _encoded(
    tokenizer: Tokenizer, chunks: Iterable[tuple[T, list[str], float]]
) -> Iterator[tuple[T, list[np.ndarray], float]]:
    """Each chunk with its texts' ids. One chunk is encoded in the background (on all
    threads) while the caller writes the one before and the next is read, so that the
    threads never wait."""
    threads = _threads()
    with ThreadPoolExecutor(1) as encoder:
        pending: tuple[T, Future[list[np.ndarray]], float] | None = None
        for item, texts, end in chunks:
            job = (item, encoder.submit(encode_texts, tokenizer, texts, threads), end)
            if pending is not None:
                yield pending[0], pending[1].result(), pending[2]
            pending = job
        if pending is not None:
            yield pending[0], pending[1].result(), pending[2]


def _write_text(
    splits: _Splits,
    tokenizer: Tokenizer,
    pieces: Iterable[tuple[str, str, bool, float]],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Plain text: documents separated by end-of-text, or a blank line for a vocabulary
    without one (its vocabulary then holds the line break: make_tokenizer adds it for
    several documents)."""
    dtype = splits.dtype
    separator = np.asarray([tokenizer.eot] if tokenizer.eot is not None else [], dtype)

    def chunks() -> Iterator[tuple[list[tuple[str, str, bool]], list[str], float]]:
        batch: list[tuple[str, str, bool]] = []
        size, end = 0, 0.0
        for name, text, new_doc, end in pieces:
            splits.sha.update(text.encode("utf-8"))
            batch.append((name, text, new_doc))
            size += len(text)
            if size >= corpus.CHUNK_CHARS:
                yield batch, [text for _, text, _ in batch], end
                batch, size = [], 0
        yield batch, [text for _, text, _ in batch], end

    for items, found, end in _encoded(tokenizer, chunks()):
        for (name, text, new_doc), ids in zip(items, found, strict=True):
            if new_doc and (splits.counts[name] or splits.chars[name]):
                if not len(separator):
                    separator = np.asarray(tokenizer.encode(DOC_SEPARATOR), dtype)
                splits.write(name, separator)
            splits.write(name, ids)
            splits.chars[name] += len(text)
        if progress:
            progress(int(end), splits.counts["train"] + splits.counts["val"])


Conversation = tuple[str, list[Message]]  # (split, messages)


def _chat_chunks(
    conversations: Iterable[tuple[str, list[Message], float]],
) -> Iterator[tuple[list[Conversation], list[str], float]]:
    """Conversations in chunks of about CHUNK_CHARS characters, with their messages' texts."""
    batch: list[Conversation] = []
    texts: list[str] = []
    size, end = 0, 0.0
    for name, messages, end in conversations:
        batch.append((name, messages))
        texts += [m.content for m in messages]
        size += sum(len(m.content) for m in messages)
        if size >= corpus.CHUNK_CHARS:
            yield batch, texts, end
            batch, texts, size = [], [], 0
    if batch:
        yield batch, texts, end


def _write_chat(
    splits: _Splits,
    tokenizer: Tokenizer,
    chunks: Iterable[tuple[list[Conversation], list[str], float]],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Conversations: each one's ids in the chat format and its mask (model/chat.py)."""
    tokens = chat.chat_tokens(tokenizer)
    for items, found, end in _encoded(tokenizer, chunks):
        at = 0
        for name, messages in items:
            contents = found[at : at + len(messages)]
            at += len(messages)
            ids, mask = chat.assemble(tokens, messages, contents)
            splits.write(name, ids, mask)
            splits.chars[name] += sum(len(m.content) for m in messages)
            splits.sha.update(json.dumps([[m.role, m.content] for m in messages]).encode())
        if progress:
            progress(int(end), splits.counts["train"] + splits.counts["val"])


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
    # Conversations only: per token, 1 where it is trained (uint8 memmaps, as long as the splits)
    train_mask: np.ndarray | None = None
    val_mask: np.ndarray | None = None
    # What readers derive from the splits once (model/batches.py: where conversations lie)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def format(self) -> str:
        """ "text" (documents) or "chat" (conversations in the chat format, with masks)."""
        return str(self.meta.get("format", "text"))

    @property
    def is_chat(self) -> bool:
        return self.format == "chat"

    def split(self, name: str) -> np.ndarray:
        return self.train if name == "train" else self.val

    def mask(self, name: str) -> np.ndarray | None:
        """The split's mask (1 = a token trained on), or None for plain text."""
        return self.train_mask if name == "train" else self.val_mask

    def require_windows(self, block_size: int) -> None:
        """Both splits must hold at least one training window of block_size + 1 tokens (plain
        text; a row of conversations is padded, so chat data needs only its conversations)."""
        if self.is_chat:
            return
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
    fmt = meta.get("format", "text")
    if fmt not in ("text", "chat"):
        raise DataError(f"{meta_path}: unknown data format {fmt!r}")
    arrays, masks = {}, {}
    for name in ("train", "val"):
        f = p / f"{name}.bin"
        if not f.is_file() or f.stat().st_size == 0:
            raise DataError(f"{f} is missing or empty")
        if f.stat().st_size % dtype.itemsize:
            raise DataError(f"{f} is truncated (size not a multiple of {dtype.itemsize})")
        arrays[name] = np.memmap(f, dtype=dtype, mode="r")
        _check_token_range(arrays[name], int(meta["vocab_size"]), f)
        if fmt == "chat":
            masks[name] = _load_mask(p / MASK_FILES[name], len(arrays[name]))
    dataset = Dataset(p, meta, arrays["train"], arrays["val"], masks.get("train"), masks.get("val"))
    if block_size is not None:
        dataset.require_windows(block_size)
    return dataset


def _load_mask(path: Path, tokens: int) -> np.ndarray:
    """A split's mask: one uint8 per token, 0 or 1."""
    if not path.is_file() or path.stat().st_size != tokens:
        raise DataError(f"{path} is missing or does not match its {tokens:,} tokens")
    mask = np.memmap(path, dtype=np.uint8, mode="r")
    if tokens and int(mask.max()) > 1:
        raise DataError(f"{path} holds values other than 0 and 1; prepare the data again")
    return mask
