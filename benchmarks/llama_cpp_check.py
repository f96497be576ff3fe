"""Check `export gguf` against llama.cpp itself; not run in CI.

For each tokenizer kind (the bundled character-level model; a small GPT-2-BPE model; a model
with a byte-level BPE trained here with Hugging Face tokenizers) and each --type, llama.cpp
loads the GGUF file, tokenizes a passage of Tiny Shakespeare (compared with this project's
tokenizer), and greedy-decodes from a prompt (compared token by token with this project's
model, which takes the argmax of its own full forward pass at each step); the largest
difference between llama.cpp's top logit and ours along the way is reported too.

    pip install llama-cpp-python     # builds llama.cpp from source
    PYTHONPATH=. python benchmarks/llama_cpp_check.py

The GPT-2 and BPE models have random weights with a sharpened embedding (so that greedy
choices are not near-ties); the character model is the trained bundled one.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export import weights
from export.gguf_export import export_gguf, write_gguf
from export.vocab import from_hf_json
from minigpt_tui.models import resolve_model
from model import checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import CharTokenizer, GPT2Tokenizer

TYPES = ("f32", "f16", "q8_0")
PROMPT = "ROMEO:\n"


@dataclass
class Case:
    name: str
    type: str
    gguf: Path
    tokenize: Callable[[str], list[int]]
    model: GPT
    passage: str  # the text whose tokenization is compared


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


def build_cases(work: Path, train_text: str, passage: str) -> list[Case]:
    """Write every GGUF file under `work` and say how this project tokenizes for each."""
    cases = []
    bundled = resolve_model("shakespeare-char")
    char_model, info = checkpoint.load(bundled)
    char_model.eval()
    char_tok = info.tokenizer()
    for t in TYPES:
        path = export_gguf(bundled, work / f"char-{t}.gguf", type=t, force=True).path
        cases.append(Case("shakespeare-char", t, path, char_tok.encode, char_model, passage))

    # Characters of 2, 3 and 4 UTF-8 bytes, which need merges in llama.cpp's byte-level BPE.
    uni = passage.replace("the ", "thé ").replace("--", "—") + " 10€ ☃ 😀 ﬁn Ça\n"
    uni_tok = CharTokenizer.from_text([uni])
    uni_dir = work / "unicode-char-model"
    uni_model = random_model(uni_tok.vocab_size, seed=3)
    meta = modeldir.make_meta(uni_model.config, uni_tok, name="unicode-char-random")
    checkpoint.save(uni_dir, uni_model, meta, replace=True)
    for t in TYPES:
        path = export_gguf(uni_dir, work / f"unicode-{t}.gguf", type=t, force=True).path
        cases.append(Case("random, char (UTF-8)", t, path, uni_tok.encode, uni_model, uni))

    gpt2_dir = work / "gpt2-model"
    gpt2 = random_model(50257, seed=1)
    meta = modeldir.make_meta(gpt2.config, GPT2Tokenizer(), name="gpt2-random")
    checkpoint.save(gpt2_dir, gpt2, meta, replace=True)
    for t in TYPES:
        path = export_gguf(gpt2_dir, work / f"gpt2-{t}.gguf", type=t, force=True).path
        cases.append(Case("random, GPT-2 BPE", t, path, GPT2Tokenizer().encode, gpt2, passage))

    from tokenizers import Tokenizer

    bpe_json = train_bpe(train_text, 1024)
    hf = Tokenizer.from_str(bpe_json)

    def bpe_encode(text: str) -> list[int]:
        return list(hf.encode(text).ids)

    bpe = random_model(1024, seed=2)
    sd = {k: v.numpy() for k, v in checkpoint.state_for_saving(bpe).items()}
    vocab = from_hf_json(bpe_json)
    cfg, sd = weights.vocab_rows(bpe.config, sd, len(vocab.tokens))
    for t in TYPES:
        path = work / f"bpe-{t}.gguf"
        write_gguf(path, cfg, sd, vocab, t, "bpe-random")
        cases.append(Case("random, trained BPE 1024", t, path, bpe_encode, bpe, passage))
    return cases


def ours(case: Case, n: int) -> dict[str, Any]:
    prompt = case.tokenize(PROMPT)
    ids, top = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            logits, _ = case.model(torch.tensor([ids[-case.model.config.block_size :]]))
            top.append(float(logits[0, -1].max()))
            ids.append(int(logits[0, -1].argmax()))
    return {
        "text_ids": case.tokenize(case.passage),
        "prompt_ids": prompt,
        "greedy": ids[len(prompt) :],
        "top_logit": top,
    }


def llama_cpp_python(gguf_path: Path, text: str, n: int) -> dict[str, Any]:
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=0, n_threads=2, logits_all=True, verbose=False)
    prompt = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=False)
    llm.eval(prompt)
    greedy, top = [], []
    for _ in range(n):
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        greedy.append(int(row.argmax()))
        top.append(float(row.max()))
        llm.eval([greedy[-1]])
    return {
        "text_ids": llm.tokenize(text.encode("utf-8"), add_bos=False, special=False),
        "prompt_ids": prompt,
        "greedy": greedy,
        "top_logit": top,
    }


def compare(case: Case, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    same_text = a["text_ids"] == b["text_ids"]
    first = next(
        (i for i, (x, y) in enumerate(zip(a["text_ids"], b["text_ids"], strict=False)) if x != y),
        None if same_text else min(len(a["text_ids"]), len(b["text_ids"])),
    )
    pairs = list(zip(a["greedy"], b["greedy"], strict=True))
    agree = next((i for i, (x, y) in enumerate(pairs) if x != y), len(pairs))
    diffs = [
        abs(x - y) for x, y in zip(a["top_logit"][:agree], b["top_logit"][:agree], strict=True)
    ]
    return {
        "model": case.name,
        "type": case.type,
        "passage_tokens": len(a["text_ids"]),
        "tokenization_equal": same_text and a["prompt_ids"] == b["prompt_ids"],
        "first_tokenization_diff": first,
        "greedy_tokens": len(pairs),
        "greedy_equal_prefix": agree,
        "max_top_logit_diff": max(diffs) if diffs else None,
        "max_top_logit": max(abs(x) for x in a["top_logit"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--text", type=Path, default=Path("/work/shared/data/tinyshakespeare.txt"))
    ap.add_argument("--chars", type=int, default=20_000, help="passage length to tokenize")
    ap.add_argument("--tokens", type=int, default=100, help="greedy tokens per model")
    args = ap.parse_args()
    corpus = args.text.read_text(encoding="utf-8")
    passage = corpus[-args.chars :]  # the end of the corpus (the validation split)
    work = Path(tempfile.mkdtemp(prefix="llama-cpp-check-"))
    results = []
    for case in build_cases(work, corpus[: -args.chars], passage):
        theirs = llama_cpp_python(case.gguf, case.passage, args.tokens)
        results.append(compare(case, ours(case, args.tokens), theirs))
    versions = {
        "llama-cpp-python": __import__("llama_cpp").__version__,
        "gguf": importlib.metadata.version("gguf"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps({"versions": versions, "results": results}, indent=1))


if __name__ == "__main__":
    main()
