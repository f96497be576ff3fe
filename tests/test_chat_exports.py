"""A chat model's exports carry its chat format: `export hf` (transformers' apply_chat_template
gives our prompt ids, its generate stops where ours does), `export gguf` (the template, the
end-of-turn id and the special tokens as llama.cpp reads them) and `export onnx` (the template
and chat tokenizer travel; the onnxruntime engine decodes the same reply up to <|end|>), for
each tokenizer kind, and for GPT-2's vocabulary grown to 50,261 and padded to 50,304."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from minigpt_tui.generation import load_backend
from model import chat, modeldir
from model.chat import ChatFormatError
from model.tokenizer import (
    CHAT_TEXTS,
    TEMPLATE_FILE,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
)
from tests.helpers import cli, make_chat_model
from tests.test_chat import random_conversation
from tests.test_export_formats import read_gguf

# The greedy reply each model is made to give (make_chat_model): distinct tokens each.
REPLY = {"char": "Ça vb?", "gpt2": " Hello there! Ça", "bpe": "Ünïcode 🎭"}
MODELS = ["char", "gpt2", "gpt2-padded", "bpe"]  # gpt2: 50,261 rows; padded: 50,304
FIXED = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hello\n\n"}],
    [
        {"role": "system", "content": "\nYou answer in French.  "},
        {"role": "user", "content": " Ça va? 日本語"},
        {"role": "assistant", "content": "Oui 🎭\n"},
        {"role": "user", "content": "\t'quoted' {{ x }}"},
    ],
]


def conversations(n: int = 40) -> list[list[dict[str, str]]]:
    """Prompts (ending with a user turn): the fixed ones and random ones with a system turn or
    not, several exchanges, Unicode, leading and trailing spaces, newlines and tabs. Content
    holding a marker's text is left out: every Jinja runtime reads it as the special token."""
    rng = random.Random(7)
    found = list(FIXED)
    while len(found) < n:
        messages = random_conversation(rng)
        try:
            chat.parse_record({"messages": messages})
        except ChatFormatError:
            continue
        found.append(messages[: rng.choice([-1, -1, -3])] if len(messages) > 3 else messages[:-1])
    return found


CONVERSATIONS = conversations()


def all_text() -> str:
    return "".join(m["content"] for c in CONVERSATIONS for m in c) + "".join(REPLY.values())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chat-exports")


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    text = all_text()
    return {
        "char": CharTokenizer.from_text([text], chat=True),
        "gpt2": GPT2Tokenizer(chat=True),
        "bpe": BPETokenizer.train([text] * 5, 300, chat=True),
    }


@pytest.fixture(scope="module")
def models(root: Path, tokenizers: dict[str, Tokenizer]) -> dict[str, Path]:
    found = {}
    for name in MODELS:
        kind = name.split("-")[0]
        pad = 50304 - 50261 if name == "gpt2-padded" else 0
        found[name] = make_chat_model(root / name, tokenizers[kind], REPLY[kind], vocab_pad=pad)
    return found


def our_reply(model: Path, messages: list[dict[str, str]], backend: str) -> list[int]:
    """Greedy decoding through this project's engine (a backend) until <|end|>."""
    b = load_backend(model, backend)
    tok = b.info.tokenizer()
    assert tok.chat is not None
    logits, reply = b.prefill(chat.prompt_ids(tok, messages)), []
    while len(reply) < 20:
        reply.append(int(np.argmax(logits[: tok.vocab_size])))  # padding rows are never a token
        if reply[-1] == tok.chat.end:
            break
        logits = b.decode(reply[-1])
    return reply


def expected_reply(name: str, tokenizers: dict[str, Tokenizer]) -> list[int]:
    tok = tokenizers[name.split("-")[0]]
    assert tok.chat is not None
    return [*tok.encode(REPLY[name.split("-")[0]]), tok.chat.end]


# --- Hugging Face ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dirs(root: Path, models: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for name, model in models.items():
        found[name] = root / f"hf-{name}"
        assert cli("export", "hf", model, "--out", found[name]) == 0
    return found


@pytest.mark.parametrize("name", MODELS)
def test_hf_tokenizer_files_carry_the_special_tokens_and_template(
    name: str, models: dict[str, Path], hf_dirs: dict[str, Path]
) -> None:
    info, out = modeldir.read(models[name]), hf_dirs[name]
    tok = info.tokenizer()
    assert tok.chat is not None
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == info.chat_template == chat.JINJA_TEMPLATE
    assert (out / TEMPLATE_FILE).read_text(encoding="utf-8") == info.chat_template
    assert (config["bos_token"], config["eos_token"]) == ("<|endoftext|>", "<|end|>")
    assert config["pad_token"] == "<|endoftext|>"
    added = {int(i): t["content"] for i, t in config["added_tokens_decoder"].items()}
    assert added == {i: text for text, i in tok.chat.by_text().items()}
    assert all(t["special"] for t in config["added_tokens_decoder"].values())
    if (out / "tokenizer.json").is_file():  # char, bpe: the same tokens, special, in the file
        found = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
        assert {t["id"]: t["content"] for t in found if t["special"]} == added
    generation = json.loads((out / "generation_config.json").read_text(encoding="utf-8"))
    assert generation["eos_token_id"] == [tok.chat.end, tok.chat.bos]
    hf_config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert hf_config["vocab_size"] == tok.vocab_size  # padding rows dropped
    assert load_file(str(out / "model.safetensors"))["lm_head.weight"].shape[0] == tok.vocab_size


@pytest.mark.parametrize("name", MODELS)
def test_hf_apply_chat_template_gives_our_prompt_ids(
    name: str, models: dict[str, Path], hf_dirs: dict[str, Path]
) -> None:
    import transformers

    ours = modeldir.read(models[name]).tokenizer()
    hf = transformers.AutoTokenizer.from_pretrained(hf_dirs[name])
    for messages in CONVERSATIONS:
        found = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        found = found["input_ids"] if hasattr(found, "keys") else found
        assert list(found) == chat.prompt_ids(ours, messages), messages
        text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert hf(text, add_special_tokens=False)["input_ids"] == list(found)
    # A training conversation (ending with the assistant) gives training_example's ids.
    whole = [*FIXED[2], {"role": "assistant", "content": " Fin.\n"}]
    found = hf.apply_chat_template(whole, tokenize=True)
    found = found["input_ids"] if hasattr(found, "keys") else found
    assert list(found) == chat.training_example(ours, whole)[0]


@pytest.mark.parametrize("name", MODELS)
def test_hf_generate_stops_where_ours_does(
    name: str,
    models: dict[str, Path],
    hf_dirs: dict[str, Path],
    tokenizers: dict[str, Tokenizer],
) -> None:
    import torch
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(hf_dirs[name])
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dirs[name]).eval()
    expected = expected_reply(name, tokenizers)
    for messages in CONVERSATIONS[:4]:
        ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)
        theirs = out[0, len(ids) :].tolist()
        assert theirs == our_reply(models[name], messages, "torch") == expected


@pytest.mark.parametrize("name", ["gpt2-padded", "bpe"])
def test_export_hf_of_a_chat_model_converts_back(
    root: Path, name: str, models: dict[str, Path], hf_dirs: dict[str, Path]
) -> None:
    back = root / f"back-{name}"
    assert cli("convert", "hf", hf_dirs[name], "--out", back) == 0
    a, b = modeldir.read(models[name]), modeldir.read(back)
    assert b.is_chat and b.tokenizer_spec == a.tokenizer_spec
    assert b.chat_template == a.chat_template
    rows = a.tokenizer().vocab_size
    assert b.config.vocab_size == rows  # the padding rows are not brought back
    wa, wb = load_file(str(a.weights_path)), load_file(str(b.weights_path))
    assert np.array_equal(wa["lm_head.weight"][:rows], wb["lm_head.weight"])


# --- GGUF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_gguf_carries_the_template_and_end_of_turn(
    root: Path, name: str, models: dict[str, Path], capsys: Any
) -> None:
    out = root / f"{name}.gguf"
    qtype = "q8_0" if name == "char" else "f32"  # quantising GPT-2's vocabulary takes seconds
    assert cli("export", "gguf", models[name], "--out", out, "--type", qtype) == 0
    assert "note: a chat model" in capsys.readouterr().err
    meta, tensors = read_gguf(out)
    info = modeldir.read(models[name])
    tok = info.tokenizer()
    assert tok.chat is not None
    K = gguf.Keys.Tokenizer
    assert meta[K.CHAT_TEMPLATE] == info.chat_template == chat.JINJA_TEMPLATE
    assert meta[K.EOT_ID] == tok.chat.end
    assert meta[K.BOS_ID] == meta[K.EOS_ID] == tok.chat.bos
    assert meta[K.ADD_BOS] is False  # the template writes <|endoftext|> itself
    tokens, types = meta[K.LIST], meta[K.TOKEN_TYPE]
    assert len(tokens) == len(types) == tok.vocab_size  # unpadded: the tokenizer's own size
    for text, i in tok.chat.by_text().items():
        assert tokens[i] == text and types[i] == gguf.TokenType.CONTROL
    assert sum(t == gguf.TokenType.CONTROL for t in types) == len(CHAT_TEXTS)
    assert tensors["token_embd.weight"].shape[-1] == tok.vocab_size  # gguf: (n_embd, n_vocab)
    assert tensors["output.weight"].shape[-1] == tok.vocab_size


# --- ONNX -----------------------------------------------------------------------------------


ONNX_CASES = [("char", "none"), ("gpt2", "int8"), ("gpt2-padded", "none"), ("bpe", "none")]


@pytest.mark.parametrize(("name", "quantize"), ONNX_CASES)
def test_onnx_export_keeps_the_chat_format_and_stops_at_end_of_turn(
    root: Path,
    name: str,
    quantize: str,
    models: dict[str, Path],
    tokenizers: dict[str, Tokenizer],
    capsys: Any,
) -> None:
    out = root / f"onnx-{name}"
    assert cli("export", "onnx", models[name], "--out", out, "--quantize", quantize) == 0
    a, b = modeldir.read(models[name]), modeldir.read(out)
    assert b.has_onnx and b.is_chat and b.tokenizer_spec == a.tokenizer_spec
    assert b.chat_template == a.chat_template
    assert b.tokenizer().chat == a.tokenizer().chat
    expected = expected_reply(name, tokenizers)
    for messages in CONVERSATIONS[:3]:
        assert our_reply(out, messages, "onnx") == our_reply(models[name], messages, "torch")
        assert our_reply(out, messages, "onnx") == expected
    # The generation loop (`generate --chat`) ends the reply at <|end|> on either backend.
    for model, backend in ((out, "onnx"), (models[name], "torch")):
        capsys.readouterr()
        args = ("--chat", "  Hello\n\n", "--system", "Be brief.", "-t", "0", "--backend", backend)
        assert cli("generate", "--model", model, *args) == 0
        assert capsys.readouterr().out == REPLY[name.split("-")[0]]


def test_the_engines_reply_is_the_one_the_model_was_made_to_give(
    models: dict[str, Path], tokenizers: dict[str, Tokenizer]
) -> None:
    """The test models themselves: each greedy reply is REPLY, then <|end|>, for any prompt."""
    for name, model in models.items():
        for messages in CONVERSATIONS[:5]:
            reply: list[Any] = our_reply(model, messages, "torch")
            assert reply == expected_reply(name, tokenizers), name
