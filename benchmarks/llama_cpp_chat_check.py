"""Check a chat model's `export gguf` against llama.cpp's chat completion; not run in CI.

For chat models of each tokenizer kind (a character vocabulary, GPT-2's grown to 50,261 and
one padded to 50,304 for training, a byte-level BPE trained here), in f32 and q8_0:

- prompt ids: llama-cpp-python renders the GGUF's own `tokenizer.chat_template` with its
  Jinja2ChatFormatter and tokenizes the result with special tokens split out (what its
  `create_chat_completion` does); compared with `model.chat.prompt_ids` over many
  conversations (a system turn or not, several exchanges, Unicode, leading and trailing spaces,
  newlines and tabs), and the prompt token count that `create_chat_completion` reports;
- the reply: a model made to answer every conversation with a fixed reply and `<|end|>`
  (tests/helpers.py `make_chat_model`): `create_chat_completion(temperature=0)` must return
  that text with finish_reason "stop", ending where this project's engine ends;
- greedy decoding of a random chat model (weights scaled so that attention weighs as much as
  the embeddings, so that the reply depends on the conversation, and logits of about 100, so
  that greedy choices are not near-ties): llama.cpp's argmax token by token from the same
  prompt against this project's, until either reaches an end token (`<|end|>`,
  `<|endoftext|>`) or --tokens.

    /work/llama-venv/bin/pip install -q -c constraints.txt -e '.[train]'   # llama-cpp-python there
    PYTHONPATH=. /work/llama-venv/bin/python benchmarks/llama_cpp_chat_check.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.gguf_export import export_gguf
from model import chat, checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import BPETokenizer, CharTokenizer, GPT2Tokenizer, Tokenizer
from tests.helpers import make_chat_model

TYPES = ("f32", "q8_0")
REPLY = {"char": "Ça vb?", "gpt2": " Hello there! Ça", "bpe": "Ünïcode 🎭"}
PIECES = ["Hello", " world", "\n", "  ", "Ünïcode", "🎭", "日本語", "\t", "x", "{{ x }}", "'q'"]


def conversations(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Prompts ending with a user turn, built from PIECES (no marker's text in them)."""
    rng = random.Random(seed)

    def text() -> str:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))

    found = []
    for _ in range(n):
        messages = [{"role": "system", "content": text()}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": text()})
            messages.append({"role": "assistant", "content": text()})
        found.append(messages[:-1])  # the prompt for the last reply
    return found


def tokenizers(convs: list[list[dict[str, str]]]) -> dict[str, Tokenizer]:
    text = "".join(m["content"] for c in convs for m in c) + "".join(REPLY.values())
    return {
        "char": CharTokenizer.from_text([text], chat=True),
        "gpt2": GPT2Tokenizer(chat=True),
        "bpe": BPETokenizer.train([text] * 5, 300, chat=True),
    }


def random_chat_model(path: Path, tokenizer: Tokenizer, pad: int, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=tokenizer.vocab_size + pad, block_size=256, n_layer=2, n_head=2, n_embd=64
    )
    model = GPT(cfg).eval()
    with torch.no_grad():  # the blocks weigh as much as the embeddings; logits about 100
        model.wte.weight.mul_(5.0)
        model.wpe.weight.mul_(5.0)
        for block in model.h:
            block.attn.c_proj.weight.mul_(10.0)
            block.mlp.c_proj.weight.mul_(10.0)
        model.ln_f.weight.mul_(20.0)
    meta = modeldir.make_meta(cfg, tokenizer, name=path.name)
    checkpoint.save(path, model, meta, replace=True, tokenizer=tokenizer)
    return path


def llama_prompt(llm: Any, messages: list[dict[str, str]]) -> list[int]:
    """The ids llama-cpp-python's chat completion feeds the model for `messages`: the GGUF's
    template through its Jinja2ChatFormatter, set up as Llama() sets it up, then tokenized
    as its chat handler tokenizes (special tokens split out)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    text = llm._model.token_get_text  # the same bos/eos texts Llama() passes
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
    )
    result = formatter(messages=messages)
    return list(llm.tokenize(result.prompt.encode("utf-8"), add_bos=False, special=True))


def our_greedy(model: GPT, tokenizer: Tokenizer, ids: list[int], n: int) -> list[int]:
    assert tokenizer.chat is not None
    stops = {tokenizer.chat.end, tokenizer.chat.bos}
    out: list[int] = []
    with torch.no_grad():
        while len(out) < n and not (out and out[-1] in stops):
            logits, _ = model(torch.tensor([[*ids, *out]]))
            out.append(int(logits[0, -1, : tokenizer.vocab_size].argmax()))
    return out


def llama_greedy(llm: Any, ids: list[int], n: int) -> list[int]:
    import llama_cpp

    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    while len(out) < n and not (out and llama_cpp.llama_vocab_is_eog(llm._model.vocab, out[-1])):
        out.append(int(np.asarray(llm.scores[llm.n_tokens - 1]).argmax()))
        llm.eval([out[-1]])
    return out


def check_model(
    name: str, gguf_path: Path, model_dir: Path, convs: list[list[dict[str, str]]], n: int
) -> dict[str, Any]:
    import llama_cpp

    info = modeldir.read(model_dir)
    tok = info.tokenizer()
    assert tok.chat is not None
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    ours = [chat.prompt_ids(tok, m) for m in convs]
    theirs = [llama_prompt(llm, m) for m in convs]
    report: dict[str, Any] = {
        "model": name,
        "chat_format": llm.chat_format,
        "n_vocab": llm.n_vocab(),
        "conversations": len(convs),
        "prompt_ids_equal": sum(a == b for a, b in zip(ours, theirs, strict=True)),
        "end_of_generation": [  # the chat tokens llama.cpp ends a reply at
            text
            for text, i in tok.chat.by_text().items()
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, i)
        ],
    }
    if name.startswith("reply"):
        kind = name.split()[-1].split("-")[0]
        replies, counts = [], []
        for messages, ids in zip(convs[:5], ours, strict=False):
            done = llm.create_chat_completion(messages, temperature=0, max_tokens=n)
            choice = done["choices"][0]
            replies.append((choice["message"]["content"], choice["finish_reason"]))
            counts.append(done["usage"]["prompt_tokens"] == len(ids))
        report["replies_equal"] = sum(r == (REPLY[kind], "stop") for r in replies)
        report["reply"] = replies[0]
        report["prompt_tokens_equal"] = sum(counts)
    else:
        model, _ = checkpoint.load(model_dir)
        model.eval()
        pairs = [(our_greedy(model, tok, ids, n), llama_greedy(llm, ids, n)) for ids in ours[:8]]
        report["greedy_equal"] = sum(a == b for a, b in pairs)
        report["greedy_tokens_equal"] = sum(
            next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
            for a, b in pairs
        )
        report["greedy_tokens"] = sum(len(a) for a, _ in pairs)
        report["greedy_compared"] = len(pairs)
        report["distinct_replies"] = len({tuple(a) for a, _ in pairs})  # they follow the prompt
        report["ended_at_end_token"] = sum(a[-1] in (tok.chat.end, tok.chat.bos) for a, _ in pairs)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--conversations", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=24, help="greedy tokens at most per reply")
    args = ap.parse_args()
    convs = conversations(args.conversations)
    toks = tokenizers(convs)
    work = Path(tempfile.mkdtemp(prefix="llama-cpp-chat-check-"))
    results = []
    for name in ("char", "gpt2", "gpt2-padded", "bpe"):
        kind = name.split("-")[0]
        pad = 50304 - 50261 if name == "gpt2-padded" else 0
        made = {
            f"reply {name}": make_chat_model(work / f"reply-{name}", toks[kind], REPLY[kind], pad),
            f"random {name}": random_chat_model(work / f"random-{name}", toks[kind], pad, seed=1),
        }
        for label, model_dir in made.items():
            for t in TYPES:
                out = work / f"{model_dir.name}-{t}.gguf"
                export_gguf(model_dir, out, type=t, force=True)
                report = check_model(label, out, model_dir, convs, args.tokens)
                results.append({"type": t, **report})
                print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    versions = {
        "llama-cpp-python": __import__("llama_cpp").__version__,
        "gguf": importlib.metadata.version("gguf"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps({"versions": versions}))


if __name__ == "__main__":
    main()
