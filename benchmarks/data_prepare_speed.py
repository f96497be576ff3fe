"""Data preparation speed: `data prepare --tokenizer gpt2` against tiktoken's own
`encode_ordinary_batch` on the same text, in the same run, in tokens per second per core.

The corpus is real text, not copies of one file: the Python sources and docs of the standard
library and of the installed packages (site-packages), in a stable order, concatenated up to
--mb megabytes into one corpus.txt. tiktoken encodes the same files (its batch over them, on
all cores); `data prepare` reads, tokenizes and writes corpus.txt (train.bin, val.bin).
Runs alternate (tiktoken, prepare, tiktoken, ...) so that load on a shared machine hits
both alike; the best of --repeats is reported.

    python benchmarks/data_prepare_speed.py --mb 55 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

SUFFIXES = {".py", ".pyi", ".txt", ".md", ".rst"}


def real_text(limit: int) -> list[str]:
    """Source and doc files of the stdlib and site-packages, up to `limit` UTF-8 bytes."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    texts, size, seen = [], 0, set()
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in SUFFIXES or not path.is_file() or path in seen:
                continue
            seen.add(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            texts.append(text)
            size += len(text.encode("utf-8"))
            if size >= limit:
                return texts
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=55.0, help="corpus size in MB")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from model.data import prepare
    from model.tokenizer import GPT2Tokenizer

    cores = len(os.sched_getaffinity(0))
    texts = real_text(int(args.mb * 1e6))
    corpus = "".join(texts)
    size = len(corpus.encode("utf-8"))
    print(f"corpus: {len(texts):,} files, {size / 1e6:.1f} MB; {cores} cores", file=sys.stderr)
    enc = GPT2Tokenizer()._enc  # tiktoken's Encoding for GPT-2 (offline files)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "corpus.txt"
        src.write_text(corpus, encoding="utf-8")
        del corpus
        best_tk = best_prep = best_lib = float("inf")
        tk_tokens = prep_tokens = lib_tokens = 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tk_tokens = sum(map(len, enc.encode_ordinary_batch(texts, num_threads=cores)))
            best_tk = min(best_tk, time.perf_counter() - t0)

            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "minigpt_tui", "data", "prepare", str(src)]
            cmd += ["--out", str(Path(tmp) / "out"), "--tokenizer", "gpt2", "--force"]
            subprocess.run(cmd, check=True, capture_output=True)
            best_prep = min(best_prep, time.perf_counter() - t0)
            out = Path(tmp) / "out"
            prep_tokens = sum((out / f).stat().st_size // 2 for f in ("train.bin", "val.bin"))

            t0 = time.perf_counter()  # the same, in this process: no start-up, no progress bar
            res = prepare([src], Path(tmp) / "lib", "gpt2", force=True)
            best_lib = min(best_lib, time.perf_counter() - t0)
            lib_tokens = res.train_tokens + res.val_tokens

    tk = tk_tokens / best_tk / cores
    prep = prep_tokens / best_prep / cores
    lib = lib_tokens / best_lib / cores
    print("| what | tokens | best seconds | tokens/s per core | vs tiktoken |")
    print("|---|---:|---:|---:|---:|")
    print(f"| tiktoken encode_ordinary_batch | {tk_tokens:,} | {best_tk:.2f} | {tk:,.0f} | 100% |")
    print(
        f"| `minigpt-tui data prepare` (CLI) | {prep_tokens:,} | {best_prep:.2f} | {prep:,.0f} "
        f"| {prep / tk:.1%} |"
    )
    print(
        f"| `model.data.prepare()` (in process) | {lib_tokens:,} | {best_lib:.2f} | {lib:,.0f} "
        f"| {lib / tk:.1%} |"
    )


if __name__ == "__main__":
    main()
