"""A model's tokenizer as llama.cpp's GPT-2 tokenizer stores it: byte-level BPE tokens + merges.

GGUF's "gpt2" tokenizer model is GPT-2's byte-level BPE: text is split by GPT-2's pattern,
each piece's UTF-8 bytes are written as printable characters (`byte_to_unicode`), and merges
join neighbouring symbols by rank. All three tokenizer kinds of this project fit it exactly:

    gpt2   GPT-2's own encoder.json and vocab.bpe (the files the project already loads offline)
    bpe    a trained byte-level BPE, read from its Hugging Face tokenizer.json (`from_hf_json`)
    char   one token per character, written as that character's bytes; ASCII characters need
           no merges, and a character of k UTF-8 bytes gets the k-1 merges that join its bytes
           (a merge's right side is always a continuation byte, so no merge ever joins bytes of
           two different characters, and every known character becomes exactly its own token;
           an all-ASCII vocabulary needs no merge at all, and gets one that can never fire)

A chat tokenizer's special tokens (`<|endoftext|>`, `<|system|>`, `<|user|>`, `<|assistant|>`,
`<|end|>`; model/chat.py) are written as their text with type CONTROL, at their ids (gpt2:
50257..50260 after GPT-2's 50,257 tokens; char: after the characters; bpe: already in its
tokenizer.json), so llama.cpp splits them out of a rendered chat template and never out of
ordinary text; `<|end|>` is the end-of-turn token. The vocabulary is the tokenizer's own size:
rows a model was padded with beyond it are dropped by the exporters (`weights.vocab_rows`).

Torch-free: needs only the `gguf` package (for its token type constants).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from gguf import TokenType

from model.tokenizer import (
    CharTokenizer,
    ChatTokens,
    HasHFJson,
    Tokenizer,
    TokenizerError,
    gpt2_bpe_files,
)

NORMAL, CONTROL, USER_DEFINED = (
    int(TokenType.NORMAL),
    int(TokenType.CONTROL),
    int(TokenType.USER_DEFINED),
)
# llama.cpp's gpt2 tokenizer model ends generation at this token when the file names none.
LLAMA_CPP_DEFAULT_EOS = 11
GPT2_PRE = "gpt-2"  # llama.cpp's name for GPT-2's pre-tokenizer pattern
EOT_TEXT = "<|endoftext|>"
INERT_MERGE = "\u2581 \u2581"  # U+2581 is outside GPT-2's byte alphabet (see byte_to_unicode)


class VocabError(TokenizerError):
    """A tokenizer that llama.cpp's GPT-2 tokenizer cannot reproduce."""


@dataclass
class BPEVocab:
    tokens: list[str]  # token id -> its text in byte-level form
    types: list[int]  # token id -> NORMAL, CONTROL or USER_DEFINED
    merges: list[str]  # "left right", by rank
    eot: int | None = None  # end-of-text token, if the vocabulary has one
    end: int | None = None  # a chat vocabulary's end-of-turn token (<|end|>)
    pre: str = GPT2_PRE
    notes: list[str] = field(default_factory=list)  # what a user should know about the export


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_level(text: str) -> str:
    """`text`'s UTF-8 bytes written as GPT-2's byte-level characters."""
    table = byte_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def bpe_vocab(tokenizer: Tokenizer) -> BPEVocab:
    """The vocabulary of `tokenizer`: exactly its `vocab_size` tokens, a chat tokenizer's
    special tokens included."""
    if isinstance(tokenizer, CharTokenizer):
        vocab = char_vocab(tokenizer.chars)
    elif tokenizer.kind == "gpt2":
        vocab = gpt2_vocab()
    elif isinstance(tokenizer, HasHFJson):  # a trained BPE ("bpe" kind)
        vocab = from_hf_json(tokenizer.hf_json())
    else:
        raise VocabError(f"tokenizer kind {tokenizer.kind!r} cannot be exported")
    if tokenizer.chat is not None:
        with_chat_tokens(vocab, tokenizer.chat)
    if len(vocab.tokens) != tokenizer.vocab_size:
        raise VocabError(
            f"the {tokenizer.kind} tokenizer has {tokenizer.vocab_size} tokens but its "
            f"vocabulary for llama.cpp {len(vocab.tokens)}"
        )
    if vocab.eot is None and len(vocab.tokens) > LLAMA_CPP_DEFAULT_EOS:
        token = tokenizer.decode([LLAMA_CPP_DEFAULT_EOS])
        vocab.notes.append(
            f"the tokenizer has no end-of-text token, and llama.cpp then ends generation at "
            f"token {LLAMA_CPP_DEFAULT_EOS} ({token!r}): pass --ignore-eos to llama-completion "
            "(llama-cli in older llama.cpp)"
        )
    return vocab


def char_vocab(chars: str) -> BPEVocab:
    tokens = [byte_level(ch) for ch in chars]
    merges: dict[str, None] = {}  # ordered set
    for token in tokens:
        for i in range(2, len(token) + 1):  # join byte 1+2, then (1+2)+3, ...
            merges.setdefault(f"{token[: i - 1]} {token[i - 1]}")
    # GGUF cannot store an empty array, and llama.cpp needs the merges key: an ASCII vocabulary
    # gets one merge of two characters that never occur in byte-level text, so it never fires.
    return BPEVocab(tokens, [NORMAL] * len(tokens), list(merges) or [INERT_MERGE], None)


def gpt2_vocab() -> BPEVocab:
    encoder_path, merges_path = gpt2_bpe_files()
    encoder: dict[str, int] = json.loads(encoder_path.read_text(encoding="utf-8"))
    tokens = _by_id(encoder)
    types = [CONTROL if t == EOT_TEXT else NORMAL for t in tokens]
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    merges = [m for m in lines if m and not m.startswith("#version")]
    return BPEVocab(tokens, types, merges, encoder.get(EOT_TEXT))


def from_hf_json(text: str) -> BPEVocab:
    """A byte-level BPE from its Hugging Face `tokenizer.json`; anything llama.cpp's GPT-2
    tokenizer would split or normalise differently is refused."""
    try:
        spec = json.loads(text)
        model = spec["model"]
        vocab: dict[str, int] = dict(model["vocab"])
        raw_merges: list[Any] = list(model["merges"])
    except (ValueError, KeyError, TypeError) as e:
        raise VocabError(f"not a Hugging Face BPE tokenizer.json: {e}") from None
    if model.get("type") != "BPE":
        raise VocabError(f"tokenizer model {model.get('type')!r} is not BPE")
    if spec.get("normalizer") is not None:
        raise VocabError("a tokenizer with a normalizer cannot be written for llama.cpp")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise VocabError(f"a BPE with {key} cannot be written for llama.cpp")
    if model.get("byte_fallback"):
        raise VocabError("a BPE with byte_fallback is not a byte-level BPE")
    if not _is_gpt2_byte_level(spec.get("pre_tokenizer")):
        raise VocabError(
            "its pre-tokenizer is not GPT-2's byte-level split, which is the one llama.cpp's "
            "gpt2 tokenizer applies"
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw_merges]
    special: dict[int, bool] = {}
    for added in spec.get("added_tokens") or []:
        vocab[added["content"]] = int(added["id"])
        special[int(added["id"])] = bool(added.get("special"))
    tokens = _by_id(vocab)
    types = [
        (CONTROL if special[i] else USER_DEFINED) if i in special else NORMAL
        for i in range(len(tokens))
    ]
    return BPEVocab(tokens, types, merges, vocab.get(EOT_TEXT))


def _is_gpt2_byte_level(pre: Any) -> bool:
    """ByteLevel with GPT-2's own split and no added prefix space."""
    return (
        isinstance(pre, dict)
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True) is True
        and not pre.get("add_prefix_space", False)
    )


def _by_id(vocab: dict[str, int]) -> list[str]:
    """Token texts in id order; the ids must be 0..n-1 with no gaps."""
    tokens = [""] * len(vocab)
    for text, i in vocab.items():
        if not 0 <= i < len(vocab) or tokens[i]:
            raise VocabError(f"token ids are not 0..{len(vocab) - 1} (id {i} for {text!r})")
        tokens[i] = text
    return tokens


def with_chat_tokens(vocab: BPEVocab, chat: ChatTokens) -> BPEVocab:
    """Mark a chat tokenizer's special tokens CONTROL, adding those after the vocabulary (gpt2's
    turn markers, a character vocabulary's five) at their ids; <|end|> ends a turn."""
    for text, i in sorted(chat.by_text().items(), key=lambda item: item[1]):
        if i == len(vocab.tokens):
            vocab.tokens.append(text)
            vocab.types.append(CONTROL)
        elif i > len(vocab.tokens) or vocab.tokens[i] != text:
            raise VocabError(f"chat token {text} is not token {i} of the vocabulary")
        vocab.types[i] = CONTROL
    vocab.eot, vocab.end = chat.bos, chat.end
    return vocab
