"""The chat demonstration: a chat model trained from scratch on CPU in at most 10 minutes,
measured by exact-match replies on held-out conversations through `generate --chat`, and the
same replies through its ONNX, GGUF (llama.cpp) and Hugging Face (transformers) exports.

    python benchmarks/chat_demo.py --work /tmp/chat-demo
    python benchmarks/chat_demo.py --work /tmp/chat-demo --skip-train   # re-measure a run

Steps (each a command a user would type, timed):
1. benchmarks/chat_task.py writes training and held-out conversations (replies depend on what
   the user said: names, words, numbers, the system turn; one kind spans two exchanges).
2. `data prepare train.jsonl --tokenizer char` (the chat tokens are reserved after the
   characters), then `train --preset cpu-10min --time-budget B` from scratch (B = 585 s by
   default, so that the whole command, start-up and final evaluation included, stays under
   600 s; the wall clock of the command is printed).
3. For every held-out conversation, its last assistant turn is the answer and everything before
   it the prompt (a JSON file given to `generate --messages`, greedy). Replies are taken
   from: `generate` on the trained checkpoint (PyTorch), `generate --backend onnx` on its
   `export onnx`, llama.cpp's `create_chat_completion` on its `export gguf` with the GGUF's own
   chat template (run in a separate Python that has llama-cpp-python: --llama-python), and
   transformers' `apply_chat_template` + greedy `generate` on its `export hf`.
4. Prints exact-match rates and how many replies each runtime shares with PyTorch's, as
   Markdown for benchmarks/RESULTS.md, and writes them to WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chat_task

MAX_TOKENS = 48
LLAMA_WORKER = r"""
import json, sys
from llama_cpp import Llama
gguf, convs, max_tokens = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
llm = Llama(model_path=gguf, n_ctx=0, n_threads=2, verbose=False)
out = []
for messages in convs:
    r = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=max_tokens)
    out.append(r["choices"][0]["message"]["content"])
json.dump(out, sys.stdout)
"""


def cli(*args: str, quiet: bool = False) -> str:
    cmd = [sys.executable, "-m", "minigpt_tui", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if res.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    if not quiet:
        print(res.stdout.strip()[-600:])
    return res.stdout


def split(record: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The prompt (every message before the last) and the answer (the last, an assistant's)."""
    messages = record["messages"]
    return messages[:-1], messages[-1]["content"]


def replies_by_cli(model: Path, prompts: list[list[dict[str, str]]], backend: str, work: Path):
    """Each prompt's greedy reply through `generate --messages`, two processes at a time."""
    work.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> str:
        path = work / f"{i}.json"
        path.write_text(json.dumps({"messages": prompts[i]}), encoding="utf-8")
        return cli(
            "generate", "--model", str(model), "--messages", str(path), "--temperature", "0",
            "--max-tokens", str(MAX_TOKENS), "--backend", backend, "--threads", "1", quiet=True,
        )  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        return [r.rstrip("\n") for r in pool.map(one, range(len(prompts)))]


def replies_by_llama(gguf: Path, prompts: list, python: str, work: Path) -> list[str]:
    convs = work / "llama_prompts.json"
    convs.write_text(json.dumps(prompts), encoding="utf-8")
    res = subprocess.run(
        [python, "-c", LLAMA_WORKER, str(gguf), str(convs), str(MAX_TOKENS)],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        sys.exit(f"llama.cpp failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


def replies_by_transformers(hf_dir: Path, prompts: list) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    out = []
    for messages in prompts:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        with torch.no_grad():
            gen = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS,
                do_sample=False, pad_token_id=tok.pad_token_id or 0,
            )  # fmt: skip
        out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def train(args: argparse.Namespace, work: Path) -> float:
    data, run = work / "data", work / "run"
    cli("data", "prepare", str(work / "train.jsonl"), "--tokenizer", "char", "--out", str(data),
        "--force")  # fmt: skip
    start = time.monotonic()
    cli("train", "--data", str(data), "--out", str(run), "--preset", "cpu-10min",
        "--time-budget", str(args.budget), "--force", "--no-samples")  # fmt: skip
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--train", type=int, default=20000, help="training conversations")
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--budget", type=float, default=585.0, help="train --time-budget seconds")
    ap.add_argument("--skip-train", action="store_true", help="measure WORK/run as it is")
    ap.add_argument("--llama-python", default="/work/llama-venv/bin/python")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    train_set = chat_task.conversations(args.train, 1)
    keys = frozenset(json.dumps(r, sort_keys=True) for r in train_set)
    heldout = chat_task.conversations(args.heldout, 1001, exclude=keys)
    chat_task.write(work / "train.jsonl", train_set)
    chat_task.write(work / "heldout.jsonl", heldout)
    train_seconds = None if args.skip_train else train(args, work)
    run = work / "run"
    model = (run / "latest").resolve()
    prompts, answers = zip(*(split(r) for r in heldout), strict=True)
    prompts, answers = list(prompts), list(answers)
    replies: dict[str, list[str]] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any) -> None:
        t = time.monotonic()
        replies[name] = fn()
        timings[name] = time.monotonic() - t

    timed("pytorch", lambda: replies_by_cli(model, prompts, "torch", work / "p-torch"))
    cli("export", "onnx", str(model), "--out", str(work / "onnx"), "--force")
    timed("onnx", lambda: replies_by_cli(work / "onnx", prompts, "onnx", work / "p-onnx"))
    cli("export", "hf", str(model), "--out", str(work / "hf"), "--force")
    timed("transformers", lambda: replies_by_transformers(work / "hf", prompts))
    gguf = work / "model.gguf"
    cli("export", "gguf", str(model), "--out", str(gguf), "--force")
    if Path(args.llama_python).exists():
        timed("llama.cpp", lambda: replies_by_llama(gguf, prompts, args.llama_python, work))
    report(args, train_seconds, answers, replies, timings, heldout, work)


def report(args, train_seconds, answers, replies, timings, heldout, work: Path) -> None:
    kinds = [chat_task.kind_of(r) for r in heldout]
    rows = []
    for name, got in replies.items():
        exact = sum(g == a for g, a in zip(got, answers, strict=True))
        same = sum(g == p for g, p in zip(got, replies["pytorch"], strict=True))
        rows.append((name, exact, same, timings[name]))
    by_kind: dict[str, list[int]] = {}
    for k, g, a in zip(kinds, replies["pytorch"], answers, strict=True):
        by_kind.setdefault(k, []).append(g == a)
    cpu = next(
        (line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines()
         if line.startswith("Model name")), platform.processor())  # fmt: skip
    n = len(answers)
    print(f"\nCPU: {cpu}; load before: {os.getloadavg()[0]:.2f}; held-out conversations: {n}")
    if train_seconds is not None:
        print(f"train (data prepare excluded), wall clock: {train_seconds:.1f} s")
    print("\n| runtime | exact match | same reply as PyTorch | seconds |\n|---|---:|---:|---:|")
    for name, exact, same, secs in rows:
        print(f"| {name} | {exact}/{n} ({exact / n:.1%}) | {same}/{n} | {secs:.0f} |")
    print("\n| kind | exact match (PyTorch) |\n|---|---:|")
    for k, hits in sorted(by_kind.items()):
        print(f"| {k} | {sum(hits)}/{len(hits)} |")
    misses = [(p, a, g) for p, a, g in zip(heldout, answers, replies["pytorch"], strict=True)
              if a != g][:5]  # fmt: skip
    for record, answer, got in misses:
        print(f"miss: {record['messages'][-2]['content']!r}: wanted {answer!r}, got {got!r}")
    (work / "results.json").write_text(json.dumps({
        "cpu": cpu, "train_seconds": train_seconds, "heldout": n,
        "rows": rows, "by_kind": {k: [sum(v), len(v)] for k, v in by_kind.items()},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
