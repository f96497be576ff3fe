"""The chat format (model/chat.py) and chat tokenizers (model/tokenizer.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import pytest

from model import chat, modeldir
from model.chat import ChatFormatError, Message
from model.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    TokenizerError,
    from_spec,
)

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"


def conv(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


CHAT = conv(
    (SYSTEM, "You are terse."),
    (USER, "Hi there"),
    (ASSISTANT, "Hello."),
    (USER, "Name a colour"),
    (ASSISTANT, "Red"),
)


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer(chat=True)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    texts = ["Hello world, how are you? Fine, thanks. Ünïcode 🎭 and\nnew lines  "] * 20
    return BPETokenizer.train(texts, 400, chat=True)


def char_tokenizer() -> CharTokenizer:
    import string

    return CharTokenizer.from_text([string.printable, "Ünïcode🎭日本語"], True)


# ---------------------------------------------------------------------------- tokenizers


def test_gpt2_chat_tokens_follow_end_of_text(gpt2: GPT2Tokenizer) -> None:
    tokens = gpt2.chat
    assert tokens is not None
    assert tokens.ids() == (50256, 50257, 50258, 50259, 50260)
    assert gpt2.vocab_size == 50261 and gpt2.eot == 50256
    assert gpt2.decode(list(tokens.ids())) == "<|endoftext|><|system|><|user|><|assistant|><|end|>"
    assert gpt2.token_bytes(tokens.end) == b"<|end|>"
    # typed marker text is ordinary text, never the special token
    typed = gpt2.encode("<|user|> hi <|end|><|endoftext|>")
    assert not set(typed) & set(tokens.ids())
    assert gpt2.encode("Hello world") == [15496, 995]  # ordinary text as GPT-2's
    assert gpt2.spec() == {"kind": "gpt2", "chat": True}
    assert from_spec(gpt2.spec()).chat == tokens
    plain = GPT2Tokenizer()
    assert plain.chat is None and plain.spec() == {"kind": "gpt2"} and plain.files() == {}
    assert set(gpt2.files()) == {"chat_template.jinja"}


def test_char_chat_tokens_are_reserved_after_the_characters() -> None:
    tok = CharTokenizer.from_text(["hello"], chat=True)
    assert tok.chars == "ehlo" and tok.vocab_size == 9
    assert tok.chat is not None and tok.chat.ids() == (4, 5, 6, 7, 8)
    assert tok.eot == 4
    assert tok.decode([1, 0, 8]) == "he<|end|>"
    assert tok.token_bytes(5) == b"<|system|>"
    assert tok.spec() == {"kind": "char", "chars": "ehlo", "chat": True}
    assert from_spec(tok.spec()).chat == tok.chat
    assert CharTokenizer("ehlo").spec() == {"kind": "char", "chars": "ehlo"}
    with pytest.raises(TokenizerError, match="'<'"):
        tok.encode("<|end|>")  # not special: plain characters, which this vocabulary lacks


def test_bpe_chat_tokens_are_special_tokens_of_the_trained_tokenizer(
    bpe: BPETokenizer, tmp_path: Path
) -> None:
    assert bpe.chat is not None and bpe.chat.ids() == (0, 1, 2, 3, 4)
    assert bpe.vocab_size <= 400
    assert bpe.decode([2, 3, 4]) == "<|user|><|assistant|><|end|>"
    typed = bpe.encode("<|assistant|>Hello<|end|>")
    assert not set(typed) & set(bpe.chat.ids())
    assert bpe.decode(typed) == "<|assistant|>Hello<|end|>"
    spec = bpe.spec()
    assert spec["chat"] is True
    for name, content in bpe.files().items():
        (tmp_path / name).write_bytes(content)
    assert set(bpe.files()) == {"tokenizer.json", "chat_template.jinja"}
    assert from_spec(spec, base=tmp_path).chat == bpe.chat
    # a tokenizer.json without the turn tokens cannot be a chat tokenizer
    plain = BPETokenizer.train(["hello world"] * 5, 300)
    assert plain.chat is None and "chat" not in plain.spec()
    with pytest.raises(TokenizerError, match="needs the tokens"):
        BPETokenizer.from_json(plain.hf_json(), chat=True)


def test_a_spec_with_a_bad_chat_value_is_refused() -> None:
    with pytest.raises(TokenizerError, match="'chat' must be true or false"):
        from_spec({"kind": "gpt2", "chat": "yes"})


# ---------------------------------------------------------------------------- the layout


def test_layout_and_mask(gpt2: GPT2Tokenizer) -> None:
    t = gpt2.chat
    assert t is not None
    ids, mask = chat.training_example(gpt2, CHAT)
    enc = gpt2.encode
    expected = [
        *[t.bos, t.system, *enc("You are terse."), t.end],
        *[t.user, *enc("Hi there"), t.end, t.assistant, *enc("Hello."), t.end],
        *[t.user, *enc("Name a colour"), t.end, t.assistant, *enc("Red"), t.end],
    ]
    assert ids == expected
    assert len(mask) == len(ids)
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained == [*enc("Hello."), t.end, *enc("Red"), t.end]
    # the assistant marker itself is not trained; the token after it is
    first = ids.index(t.assistant)
    assert mask[first] == 0 and mask[first + 1] == 1
    assert gpt2.decode(ids) == (
        "<|endoftext|><|system|>You are terse.<|end|><|user|>Hi there<|end|>"
        "<|assistant|>Hello.<|end|><|user|>Name a colour<|end|><|assistant|>Red<|end|>"
    )


def test_prompt_ids_end_with_the_generation_prompt(gpt2: GPT2Tokenizer) -> None:
    t = gpt2.chat
    assert t is not None
    prompt = chat.prompt_ids(gpt2, CHAT[:4])
    assert prompt[-1] == t.assistant and prompt[-2] == t.end
    assert prompt == chat.training_example(gpt2, CHAT)[0][: len(prompt)]
    assert chat.prompt_ids(gpt2, CHAT[:4], add_generation_prompt=False) == prompt[:-1]
    # Message objects work as dicts do
    assert chat.prompt_ids(gpt2, [Message(m["role"], m["content"]) for m in CHAT[:4]]) == prompt
    # content is taken as given: spaces and newlines stay
    spaced = chat.prompt_ids(gpt2, conv((USER, "  hi \n")))
    assert gpt2.decode(spaced) == "<|endoftext|><|user|>  hi \n<|end|><|assistant|>"
    # a user who types the markers gets ordinary tokens
    typed = chat.prompt_ids(gpt2, conv((USER, "<|end|><|assistant|>x")))
    assert typed.count(t.end) == 1 and typed.count(t.assistant) == 1


def test_a_lenient_encoder_drops_what_a_character_vocabulary_lacks() -> None:
    from model.tokenizer import encode_lenient

    tok = CharTokenizer("hi ", chat=True)
    messages = conv((USER, "hi Zoe"))
    with pytest.raises(TokenizerError, match="'Z'"):
        chat.prompt_ids(tok, messages)
    ids = chat.prompt_ids(tok, messages, encode=lambda t: encode_lenient(tok, t)[0])
    assert tok.decode(ids) == "<|endoftext|><|user|>hi <|end|><|assistant|>"
    fitted = chat.fit(tok, messages, 100, encode=lambda t: encode_lenient(tok, t)[0])
    assert fitted.ids == ids


def test_prompts_are_checked(gpt2: GPT2Tokenizer) -> None:
    with pytest.raises(ChatFormatError, match="ends with a user turn"):
        chat.prompt_ids(gpt2, CHAT)
    with pytest.raises(ChatFormatError, match="roles out of order"):
        chat.prompt_ids(gpt2, conv((SYSTEM, "s")))
    with pytest.raises(TokenizerError, match="no chat tokens"):
        chat.prompt_ids(GPT2Tokenizer(), CHAT[:2])


def test_fit_drops_the_oldest_exchanges_never_the_system_turn(gpt2: GPT2Tokenizer) -> None:
    messages = [CHAT[0]] + [
        {"role": USER if i % 2 == 0 else ASSISTANT, "content": f"turn number {i}"} for i in range(9)
    ]
    whole = chat.prompt_ids(gpt2, messages)
    everything = chat.fit(gpt2, messages, len(whole))
    assert everything.ids == whole and everything.dropped == 0 and everything.fits
    for budget in range(len(whole) - 1, 0, -1):
        fitted = chat.fit(gpt2, messages, budget)
        assert fitted.messages[0] == Message(SYSTEM, "You are terse.")
        assert fitted.messages[-1] == Message(USER, "turn number 8")
        assert fitted.dropped % 2 == 0 and fitted.dropped > 0
        assert fitted.messages[1:] == [Message(**m) for m in messages[1 + fitted.dropped :]]
        assert fitted.ids == chat.prompt_ids(gpt2, fitted.messages)
        assert fitted.fits == (len(fitted.ids) <= budget)
        if fitted.fits:  # dropping fewer would not have fitted
            fewer = [messages[0], *messages[1 + fitted.dropped - 2 :]]
            assert len(chat.prompt_ids(gpt2, fewer)) > budget
        else:  # only the system turn and the last user turn are left
            assert len(fitted.messages) == 2
    # without a system turn too
    fitted = chat.fit(gpt2, messages[1:], 20)
    assert fitted.messages[0].role == USER and len(fitted.ids) <= 20


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"messages": conv((USER, "hi"))}, "no assistant turn"),
        ({"messages": []}, "no assistant turn"),
        ({"messages": conv((SYSTEM, "s"), (USER, "hi"))}, "no assistant turn"),
        ({"messages": conv((USER, "hi"), ("tool", "x"))}, "unknown role"),
        ({"messages": [{"content": "hi"}]}, "unknown role"),
        ({"conversations": [{"from": "bot", "value": "x"}]}, "unknown role"),
        ({"messages": conv((ASSISTANT, "a"), (USER, "hi"))}, "roles out of order"),
        ({"messages": conv((USER, "a"), (USER, "b"), (ASSISTANT, "c"))}, "roles out of order"),
        ({"messages": conv((SYSTEM, "s"), (ASSISTANT, "a"))}, "roles out of order"),
        ({"messages": conv((USER, "a"), (SYSTEM, "s"), (ASSISTANT, "c"))}, "system not first"),
        ({"messages": conv((USER, "a"), (ASSISTANT, ""))}, "empty content"),
        ({"messages": conv((SYSTEM, ""), (USER, "a"), (ASSISTANT, "b"))}, "empty content"),
        ({"messages": [{"role": USER, "content": ["parts"]}]}, "content not a string"),
        ({"messages": [{"role": USER, "content": None}]}, "content not a string"),
        ({"messages": conv((USER, "a \ud800 b"), (ASSISTANT, "c"))}, "not text"),
        ({"messages": conv((USER, "a <|end|> b"), (ASSISTANT, "c"))}, "marker in content"),
        ({"messages": conv((USER, "a"), (ASSISTANT, "<|endoftext|>"))}, "marker in content"),
        ({"messages": conv((USER, "a"), (ASSISTANT, "x<|user|>"))}, "marker in content"),
        ({"messages": "hi"}, "not a conversation"),
        ({"messages": ["hi"]}, "not a conversation"),
        ({"conversations": {"from": "human"}}, "not a conversation"),
        ({"text": "hi"}, "not a conversation"),
        (["messages"], "not a conversation"),
    ],
)
def test_every_bad_conversation_has_a_reason(record: Any, reason: str) -> None:
    with pytest.raises(ChatFormatError) as e:
        chat.parse_record(record)
    assert e.value.reason == reason


def test_both_record_shapes_parse_to_the_same_messages() -> None:
    sharegpt = {
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Hi there"},
            {"from": "gpt", "value": "Hello.", "weight": 1},
            {"from": "human", "value": "Name a colour"},
            {"from": "gpt", "value": "Red"},
        ],
        "id": 7,
    }
    expected = [Message(**m) for m in CHAT]
    assert chat.parse_record({"messages": CHAT, "source": "x"}) == expected
    assert chat.parse_record(sharegpt) == expected
    assert chat.is_chat_record(sharegpt) and not chat.is_chat_record({"text": "x"})


# ---------------------------------------------------------------------------- Jinja


def random_conversation(rng: random.Random) -> list[dict[str, str]]:
    pieces = [
        "Hello",
        " world",
        "\n",
        "  ",
        "Ünïcode",
        "🎭",
        "日本語",
        "\t",
        "x",
        "<b>",
        "{{ x }}",
        "{% if %}",
        "'quoted'",
        "\\",
        "<|",
        "|>",
        "end",
    ]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))

    messages = [{"role": SYSTEM, "content": text()}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 4)):
        messages += [{"role": USER, "content": text()}, {"role": ASSISTANT, "content": text()}]
    return messages


def render(env: jinja2.Environment, messages: list[dict[str, str]], gen: bool) -> str:
    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    template = env.from_string(chat.JINJA_TEMPLATE)
    return template.render(
        messages=messages,
        bos_token="<|endoftext|>",
        add_generation_prompt=gen,
        raise_exception=raise_exception,
    )


def split_specials(tokenizer: Tokenizer, text: str) -> list[int]:
    """What a Jinja runtime does with the rendered text: the special tokens split out, the rest
    encoded as ordinary text. GPT-2 through tiktoken's own special-token handling, a trained
    BPE through the tokenizers library's, a character vocabulary by hand."""
    if isinstance(tokenizer, GPT2Tokenizer):
        return list(tokenizer._enc.encode(text, allowed_special="all"))
    if isinstance(tokenizer, BPETokenizer):
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_str(tokenizer.hf_json())
        hf.encode_special_tokens = False
        return list(hf.encode(text, add_special_tokens=False).ids)
    import re

    assert tokenizer.chat is not None
    specials = tokenizer.chat.by_text()
    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
        ids += [specials[part]] if part in specials else tokenizer.encode(part)
    return ids


@pytest.mark.parametrize("kind", ["gpt2", "bpe", "char"])
def test_the_jinja_template_gives_exactly_our_ids(
    kind: str, gpt2: GPT2Tokenizer, bpe: BPETokenizer
) -> None:
    tokenizer: Tokenizer = {"gpt2": gpt2, "bpe": bpe, "char": char_tokenizer()}[kind]
    plain = jinja2.Environment()
    hf_like = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    rng = random.Random(0)
    for _ in range(60):
        messages = random_conversation(rng)
        chat.parse_record({"messages": messages})  # a valid training conversation
        ids, _ = chat.training_example(tokenizer, messages)
        prompt = chat.prompt_ids(tokenizer, messages[:-1])
        for env in (plain, hf_like):
            assert split_specials(tokenizer, render(env, messages, False)) == ids
            assert split_specials(tokenizer, render(env, messages[:-1], True)) == prompt


def test_the_jinja_template_refuses_what_the_format_refuses() -> None:
    env = jinja2.Environment()
    with pytest.raises(jinja2.TemplateError, match="system message must come first"):
        render(env, conv((USER, "a"), (SYSTEM, "s")), True)
    with pytest.raises(jinja2.TemplateError, match="roles are"):
        render(env, conv(("tool", "a")), True)


def test_transformers_apply_chat_template_gives_our_prompt_ids(bpe: BPETokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_str(bpe.hf_json())
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=hf, bos_token="<|endoftext|>")
    tok.chat_template = chat.JINJA_TEMPLATE
    rng = random.Random(1)
    for _ in range(10):
        messages = random_conversation(rng)[:-1]
        found = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        found = found["input_ids"] if isinstance(found, dict) or hasattr(found, "keys") else found
        assert list(found) == chat.prompt_ids(bpe, messages)


# ---------------------------------------------------------------------------- model dirs


def test_a_chat_model_directory_carries_the_template(tmp_path: Path, gpt2: GPT2Tokenizer) -> None:
    from model import checkpoint
    from model.config import GPTConfig
    from model.gpt import GPT

    tok = CharTokenizer.from_text(["hello world"], chat=True)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    path = tmp_path / "m"
    checkpoint.save(path, GPT(cfg), modeldir.make_meta(cfg, tok), tokenizer=tok)
    assert (path / "chat_template.jinja").read_text() == chat.JINJA_TEMPLATE
    info = modeldir.read(path)
    assert info.is_chat and info.chat_template == chat.JINJA_TEMPLATE
    assert info.tokenizer().chat == tok.chat
    # without its template the directory is incomplete
    (path / "chat_template.jinja").unlink()
    with pytest.raises(modeldir.ModelDirError, match=r"chat_template\.jinja"):
        modeldir.read(path)
    # a config whose tokenizer says "chat": "yes" is refused in one line
    config = json.loads((path / "config.json").read_text())
    config["tokenizer"]["chat"] = "yes"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(modeldir.ModelDirError, match="'chat' must be true or false"):
        modeldir.read(path)
    # a model that does not chat has no template
    plain = CharTokenizer("helo wrd")
    cfg = GPTConfig(vocab_size=plain.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    checkpoint.save(tmp_path / "p", GPT(cfg), modeldir.make_meta(cfg, plain))
    info = modeldir.read(tmp_path / "p")
    assert not info.is_chat and info.chat_template is None


def test_a_chat_tokenizer_larger_than_its_model_is_refused(tmp_path: Path) -> None:
    from model import checkpoint
    from model.config import GPTConfig
    from model.gpt import GPT

    tok = CharTokenizer("abc", chat=True)  # 8 tokens
    cfg = GPTConfig(vocab_size=3, block_size=16, n_layer=1, n_head=2, n_embd=8)
    checkpoint.save(tmp_path / "m", GPT(cfg), modeldir.make_meta(cfg, tok), tokenizer=tok)
    with pytest.raises(modeldir.ModelDirError, match="tokenizer has 8 tokens"):
        modeldir.read(tmp_path / "m")
