"""Which tokenizer suits a small model? Whole-split validation bits per character on Tiny
Shakespeare for char, gpt2 and bpe:N, each trained for the same wall-clock time, back to back.

Bits per character (total nats over the split / ln 2 / characters of the split) is the only
loss comparable across tokenizers; every tokenizer sees the same train/val text.

    python benchmarks/tokenizer_bpc.py --corpus /path/to/tinyshakespeare.txt --budget 90

Each run uses the cpu-fast preset (128 wide, 4 layers, 4 heads, block 64) in float32 (on a
CPU without AMX, bfloat16 is slower) with the given --time-budget, one OpenMP thread (the
runs share a loaded machine); the result table is printed as Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "minigpt_tui", *args]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "COLUMNS": "200",
    }
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return " ".join((res.stdout + res.stderr).split())  # the console may wrap lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=90.0, help="training seconds per tokenizer")
    ap.add_argument("--tokenizers", default="char,gpt2,bpe:512,bpe:1024,bpe:4096")
    ap.add_argument("--preset", default="cpu-fast")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.tokenizers.split(","):
            data = Path(tmp) / kind.replace(":", "-")
            run = Path(tmp) / f"run-{kind.replace(':', '-')}"
            cli("data", "prepare", str(args.corpus), "--out", str(data), "--tokenizer", kind)
            t0 = time.perf_counter()
            out = cli(
                "train", "-d", str(data), "-o", str(run), "--preset", args.preset,
                "--time-budget", str(args.budget), "--dtype", args.dtype,
                "--no-samples", "--no-final-eval",
            )  # fmt: skip
            secs = time.perf_counter() - t0
            iters = re.findall(r"finished at iteration (\d+)", out)
            ev = cli("eval", str(run), "-d", str(data))
            loss = re.search(r"val loss ([\d.]+) nats", ev)
            bpc = re.search(r"([\d.]+) bits per character", ev)
            assert loss and bpc, ev
            rows.append((kind, iters[-1] if iters else "?", float(loss[1]), float(bpc[1]), secs))
            print(f"{kind}: {rows[-1]}", file=sys.stderr, flush=True)
    print("| tokenizer | steps in budget | val loss (nats/token) | val bits/char |")
    print("|---|---:|---:|---:|")
    for kind, iters, loss, bpc, _ in rows:
        print(f"| {kind} | {iters} | {loss:.4f} | {bpc:.4f} |")


if __name__ == "__main__":
    main()
