"""The chat format: the one place that lays a conversation out as tokens.

A conversation is a list of messages (role, content): an optional system turn first, then user
and assistant turns alternating, starting with the user. With a chat tokenizer
(`tokenizer.chat`, see model/tokenizer.py) it becomes

    <|endoftext|><|system|>{system}<|end|><|user|>{u1}<|end|><|assistant|>{a1}<|end|>
    <|user|>{u2}<|end|><|assistant|>

(one line, nothing between the pieces). Content is taken as given (no trimming, no newline
added) and encoded on its own by the ordinary encoder, with the special ids put between: a
marker's text inside content is ordinary tokens. The prompt for a reply ends with
`<|assistant|>` (the generation prompt); a reply ends when the model emits `<|end|>`.

The API every runtime builds on (torch-free):

- `prompt_ids(tokenizer, messages)`: the ids to generate the next assistant reply from;
- `training_example(tokenizer, messages)`: (ids, mask) for training, mask 1 on the tokens
  trained (each assistant turn's content and its `<|end|>`);
- `fit(tokenizer, messages, budget)`: the conversation with its oldest exchanges dropped (never
  the system turn) so that its prompt fits a token budget;
- `parse_record(record)`: a conversation from a JSON record, `{"messages": [{"role",
  "content"}]}` or ShareGPT's `{"conversations": [{"from", "value"}]}`, validated;
- `JINJA_TEMPLATE`: the same layout as a Jinja chat template (Hugging Face's
  `tokenizer_config.json` `chat_template`, GGUF's `tokenizer.chat_template`), stored with every
  chat model as chat_template.jinja. Rendered with `bos_token="<|endoftext|>"` and tokenized
  with the special tokens split out, it gives exactly `prompt_ids` / `training_example`'s ids
  for every conversation `parse_record` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.tokenizer import CHAT_TEXTS, ChatTokens, Tokenizer, TokenizerError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}

# The Jinja source of the layout above. Every piece of template text is inside a tag with
# whitespace control on both sides, so that it renders the same with or without the
# trim_blocks/lstrip_blocks settings Hugging Face uses, and in llama.cpp's Jinja engine.
JINJA_TEMPLATE = """\
{{- bos_token -}}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {%- if not loop.first -%}
            {{- raise_exception('a system message must come first') -}}
        {%- endif -%}
        {{- '<|system|>' -}}
    {%- elif message['role'] == 'user' -%}
        {{- '<|user|>' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '<|assistant|>' -}}
    {%- else -%}
        {{- raise_exception('roles are system, user and assistant') -}}
    {%- endif -%}
    {{- message['content'] + '<|end|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>' -}}
{%- endif -%}
"""


class ChatFormatError(ValueError):
    """A conversation the chat format cannot hold. `reason` is a short name for counting bad
    records ("unknown role", "roles out of order", ...); str(error) says more."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


def messages_from(items: Iterable[Message | dict[str, Any]]) -> list[Message]:
    """Messages from Message objects or {"role", "content"} dicts (checked by `check`)."""
    found = []
    for item in items:
        if isinstance(item, Message):
            found.append(item)
        elif isinstance(item, dict):
            found.append(Message(item.get("role"), item.get("content")))  # type: ignore[arg-type]
        else:
            raise ChatFormatError("not a conversation", "a message is not an object")
    return found


# ---------------------------------------------------------------------------- validation


def check(messages: Sequence[Message], *, prompt: bool = False) -> None:
    """Raise ChatFormatError unless `messages` is a conversation the format holds.

    Both kinds: known roles, string content that is not empty (and is text: no lone
    surrogate), an optional system turn only first, then user and assistant alternating,
    starting with the user.
    A training conversation (prompt=False) needs an assistant turn and must not hold a
    marker's text (`<|end|>`...) in its content: Jinja runtimes (transformers, llama.cpp) would
    read it as the special token, so the template would no longer give our ids.
    A prompt (prompt=True) ends with a user turn (the reply comes next); a marker's text typed
    in it is allowed and stays ordinary tokens.
    """
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise ChatFormatError("unknown role", f"message {i + 1} has role {m.role!r:.40}")
        if not isinstance(m.content, str):
            raise ChatFormatError("content not a string", f"message {i + 1}")
        if not m.content:
            raise ChatFormatError("empty content", f"message {i + 1} ({m.role})")
        if not m.content.isascii():
            try:
                m.content.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape
                raise ChatFormatError(
                    "not text", f"message {i + 1} holds a lone surrogate"
                ) from None
        if not prompt and any(marker in m.content for marker in CHAT_TEXTS):
            marker = next(marker for marker in CHAT_TEXTS if marker in m.content)
            raise ChatFormatError("marker in content", f"message {i + 1} holds {marker}")
    turns = list(messages[1:] if messages and messages[0].role == "system" else messages)
    for i, m in enumerate(turns):
        if m.role == "system":
            raise ChatFormatError("system not first", "a system turn may only open the chat")
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            raise ChatFormatError(
                "roles out of order", f"turn {i + 1} is {m.role}, expected {expected}"
            )
    if prompt:
        if not turns or turns[-1].role != "user":
            raise ChatFormatError("roles out of order", "a prompt ends with a user turn")
    elif not any(m.role == "assistant" for m in turns):
        raise ChatFormatError("no assistant turn")


def is_chat_record(record: Any) -> bool:
    """Whether a JSON record is a conversation (has `messages` or `conversations`)."""
    return isinstance(record, dict) and ("messages" in record or "conversations" in record)


def parse_record(record: Any) -> list[Message]:
    """The conversation of one JSON record, checked as training data (see `check`).

    Shapes: `{"messages": [{"role": "system"|"user"|"assistant", "content": str}]}` (chat APIs,
    Hugging Face chat datasets) and ShareGPT's `{"conversations": [{"from":
    "system"|"human"|"gpt", "value": str}]}`. Other keys are ignored.
    """
    if not is_chat_record(record):
        raise ChatFormatError("not a conversation", "no 'messages' or 'conversations' list")
    sharegpt = record.get("messages") is None and "conversations" in record
    items = record["conversations"] if sharegpt else record["messages"]
    if not isinstance(items, list) or not all(isinstance(m, dict) for m in items):
        raise ChatFormatError("not a conversation", "the messages are not a list of objects")
    if sharegpt:
        found = []
        for m in items:
            role = m.get("from")
            role = SHAREGPT_ROLES.get(role, role) if isinstance(role, str) else role
            found.append(Message(role, m.get("value")))
    else:
        found = messages_from(items)
    check(found)
    return found


# ---------------------------------------------------------------------------- tokens


def chat_tokens(tokenizer: Tokenizer) -> ChatTokens:
    """The tokenizer's chat tokens, or a TokenizerError for one that cannot chat."""
    if tokenizer.chat is None:
        raise TokenizerError(
            f"the {tokenizer.kind} tokenizer has no chat tokens (<|user|>, <|assistant|>, "
            "<|end|>); prepare chat data to make a chat tokenizer"
        )
    return tokenizer.chat


def assemble(
    tokens: ChatTokens,
    messages: Sequence[Message],
    contents: Sequence[Sequence[int] | np.ndarray],
    add_generation_prompt: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) of a conversation whose contents are already encoded (one id sequence per
    message), as uint32 and uint8 arrays; mask 1 on each assistant turn's content and its
    <|end|>. The layout itself, shared by every function below and by `data prepare`."""
    ids: list[np.ndarray] = [np.asarray([tokens.bos], np.uint32)]
    mask: list[np.ndarray] = [np.zeros(1, np.uint8)]
    for m, content in zip(messages, contents, strict=True):
        trained = m.role == "assistant"
        body = np.asarray(content, np.uint32)
        ids += [
            np.asarray([tokens.role(m.role)], np.uint32),
            body,
            np.asarray([tokens.end], np.uint32),
        ]
        mask += [np.zeros(1, np.uint8), np.full(len(body) + 1, trained, np.uint8)]
    if add_generation_prompt:
        ids.append(np.asarray([tokens.assistant], np.uint32))
        mask.append(np.zeros(1, np.uint8))
    return np.concatenate(ids), np.concatenate(mask)


def training_example(
    tokenizer: Tokenizer, messages: Sequence[Message | dict[str, Any]]
) -> tuple[list[int], list[int]]:
    """The ids of a conversation for training and its per-token mask (1 = trained: every
    assistant turn's content tokens and its <|end|>; 0: <|endoftext|>, the role markers, the
    system and user turns). The mask is of the tokens themselves: the loss at position t
    predicts ids[t + 1] and counts when mask[t + 1] is 1."""
    found = messages_from(messages)
    check(found)
    ids, mask = assemble(
        chat_tokens(tokenizer), found, [tokenizer.encode(m.content) for m in found]
    )
    return ids.tolist(), mask.tolist()


def prompt_ids(
    tokenizer: Tokenizer,
    messages: Sequence[Message | dict[str, Any]],
    add_generation_prompt: bool = True,
    encode: Callable[[str], list[int]] | None = None,
) -> list[int]:
    """The ids to generate the next assistant reply from: the conversation (ending with a
    user turn) and, with add_generation_prompt, `<|assistant|>`. Generate until
    `tokenizer.chat.end`. A marker's text typed by the user is encoded as ordinary text.
    Raises ChatFormatError for a conversation out of order, TokenizerError for a tokenizer
    without chat tokens (or, for a character vocabulary, characters it lacks: pass
    encode=lambda text: encode_lenient(tokenizer, text)[0] to drop them instead)."""
    found = messages_from(messages)
    check(found, prompt=True)
    contents = [(encode or tokenizer.encode)(m.content) for m in found]
    return assemble(chat_tokens(tokenizer), found, contents, add_generation_prompt)[0].tolist()


@dataclass
class Fitted:
    """A conversation cut down to a token budget by `fit`."""

    messages: list[Message]  # what is kept: the system turn (if any) and the latest turns
    ids: list[int]  # their prompt ids
    dropped: int  # messages dropped from the start (whole user/assistant exchanges)
    fits: bool  # False when even the system turn and the last user turn exceed the budget


def fit(
    tokenizer: Tokenizer,
    messages: Sequence[Message | dict[str, Any]],
    budget: int,
    add_generation_prompt: bool = True,
    encode: Callable[[str], list[int]] | None = None,
) -> Fitted:
    """The prompt of a conversation (as `prompt_ids`, `encode` too) within `budget` tokens:
    the oldest user/assistant exchanges are dropped, two messages at a time, never the system
    turn and never the last user turn. When even those two are over the budget they are kept
    whole and `fits` is False. Each message is encoded once."""
    found = messages_from(messages)
    check(found, prompt=add_generation_prompt)
    tokens = chat_tokens(tokenizer)
    contents = [(encode or tokenizer.encode)(m.content) for m in found]
    size = [len(c) + 2 for c in contents]  # the role marker, the content, <|end|>
    first = 1 if found and found[0].role == "system" else 0
    head = 1 + (size[0] if first else 0) + int(add_generation_prompt)  # <|endoftext|>, system
    start = first
    while start + 2 <= len(found) - 1 and head + sum(size[start:]) > budget:
        start += 2
    kept = found[:first] + found[start:]
    ids = assemble(tokens, kept, contents[:first] + contents[start:], add_generation_prompt)[0]
    return Fitted(kept, ids.tolist(), start - first, len(ids) <= budget)
