"""Check `export gguf` against llama.cpp itself (through llama-cpp-python); not run in CI.

For each tokenizer kind (the bundled character-level model; a small GPT-2-BPE model; a model
with a byte-level BPE trained here with Hugging Face tokenizers) and each --type, llama.cpp
loads the GGUF file, tokenizes a passage of Tiny Shakespeare (compared with this project's
tokenizer), and greedy-decodes from a prompt (compared token by token with this project's
model, which picks the argmax of its own full forward pass at each step). It also reports the
largest difference between llama.cpp's logits and ours along the way.

    pip install llama-cpp-python     # builds llama.cpp from source
    PYTHONPATH=. python benchmarks/llama_cpp_check.py [--text data.txt] [--tokens 120]

The GPT-2 and BPE models have random weights with a sharpened embedding (so that greedy
choices are not near-ties); the character model is the trained bundled one.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import torch

from export import weights
from export.gguf_export import export_gguf, write_gguf
from export.vocab import from_hf_json, padded
from minigpt_tui.models import resolve_model
from model import checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import GPT2Tokenizer

TYPES = ("f32", "f16", "q8_0")


def our_greedy(model: GPT, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    ids, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            out, _ = model(torch.tensor([ids[-model.config.block_size :]]))
            logits.append(out[0, -1].numpy())
            ids.append(int(out[0, -1].argmax()))
    return ids[len(prompt) :], logits


def llama_greedy(
    llm: llama_cpp.Llama, prompt: list[int], n: int
) -> tuple[list[int], list[np.ndarray]]:
    llm.reset()
    llm.eval(prompt)
    ids, logits = [], []
    for _ in range(n):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        logits.append(row)
        ids.append(int(row.argmax()))
        llm.eval([ids[-1]])
    return ids, logits


def check(
    name: str,
    gguf_path: Path,
    tokenize: Any,
    model: GPT,
    text: str,
    prompt: str,
    n: int,
    qtype: str,
) -> dict[str, Any]:
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=model.config.block_size, n_threads=2, verbose=False)
    ours_text = tokenize(text)
    theirs_text = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(ours_text, theirs_text, strict=False)) if a != b),
        None if len(ours_text) == len(theirs_text) else min(len(ours_text), len(theirs_text)),
    )
    p = tokenize(prompt)
    n = min(n, model.config.block_size - len(p))
    ours, ours_logits = our_greedy(model, p, n)
    theirs, their_logits = llama_greedy(llm, p, n)
    agree = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), len(ours)
    )
    diffs = [
        float(np.abs(a - b).max())
        for a, b in zip(ours_logits[:agree], their_logits[:agree], strict=True)
    ]
    return {
        "model": name,
        "type": qtype,
        "text_tokens": len(ours_text),
        "tokenization_equal": first_diff is None,
        "first_tokenization_diff": first_diff,
        "greedy_tokens": n,
        "greedy_equal_prefix": agree,
        "greedy_equal": agree == n,
        "max_logit_diff": max(diffs) if diffs else None,
        "max_logit": float(np.abs(np.array(ours_logits)).max()),
    }


def train_bpe(text: str, vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return str(tok.to_str())


def random_model(vocab_size: int, seed: int) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=64)
    model = GPT(cfg).eval()
    with torch.no_grad():
        model.wte.weight.mul_(20.0)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=Path, default=Path("/work/shared/data/tinyshakespeare.txt"))
    ap.add_argument("--chars", type=int, default=20_000, help="passage length to tokenize")
    ap.add_argument("--tokens", type=int, default=120, help="greedy tokens per model")
    args = ap.parse_args()
    corpus = args.text.read_text(encoding="utf-8")
    text = corpus[-args.chars :]  # the end of the corpus (the validation split)
    tmp = Path(tempfile.mkdtemp(prefix="llama-cpp-check-"))
    results = []

    bundled = resolve_model("shakespeare-char")
    char_model, info = checkpoint.load(bundled)
    char_tok = info.tokenizer()
    for qtype in TYPES:
        path = export_gguf(bundled, tmp / f"char-{qtype}.gguf", type=qtype).path
        results.append(
            check(
                "shakespeare-char",
                path,
                char_tok.encode,
                char_model.eval(),
                text,
                "ROMEO:\n",
                args.tokens,
                qtype,
            )
        )

    gpt2_dir = tmp / "gpt2-model"
    gpt2 = random_model(50257, seed=1)
    checkpoint.save(gpt2_dir, gpt2, modeldir.make_meta(gpt2.config, GPT2Tokenizer(), name="g"))
    for qtype in TYPES:
        path = export_gguf(gpt2_dir, tmp / f"gpt2-{qtype}.gguf", type=qtype).path
        results.append(
            check(
                "random GPT-2 BPE",
                path,
                GPT2Tokenizer().encode,
                gpt2,
                text,
                "ROMEO:\n",
                args.tokens,
                qtype,
            )
        )

    bpe_json = train_bpe(corpus[: -args.chars], 1024)
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(bpe_json)
    bpe = random_model(1024, seed=2)
    sd = {k: v.numpy() for k, v in checkpoint.state_for_saving(bpe).items()}
    assert set(sd) == set(weights.expected_shapes(bpe.config))
    for qtype in TYPES:
        path = tmp / f"bpe-{qtype}.gguf"
        write_gguf(path, bpe.config, sd, padded(from_hf_json(bpe_json), 1024), qtype, "bpe")
        results.append(
            check(
                "random, trained byte-level BPE (1024)",
                path,
                lambda s: hf.encode(s).ids,
                bpe,
                text,
                "ROMEO:\n",
                args.tokens,
                qtype,
            )
        )

    versions = {
        "llama_cpp_python": llama_cpp.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps({"versions": versions, "results": results}, indent=1))


if __name__ == "__main__":
    main()
