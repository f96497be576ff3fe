"""How long the one sampler takes a token at a GPT-2-sized vocabulary (issue 25).

    python benchmarks/sampler_speed.py [--vocab 50257] [--calls 400] [--untuned]

Times Sampler.choose (minigpt_tui/sampling.py) on random float32 logits (standard normal x 3)
for the settings a user steers: greedy, the default temperature, top-k, top-p, both, and a
repetition penalty over a 300-token context. Prints the median and fastest call of each in
microseconds; run it in two checkouts to compare them. The allocator is tuned first as
load_backend does (model/backend.py tune_allocator) unless --untuned.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minigpt_tui.sampling import Sampler, SamplingSettings
from model.backend import tune_allocator

CASES = {
    "greedy": {"temperature": 0.0},
    "temperature 0.8": {"temperature": 0.8},
    "top-k 50": {"temperature": 0.8, "top_k": 50},
    "top-p 0.9": {"temperature": 0.8, "top_p": 0.9},
    "top-k 200 + top-p 0.95": {"temperature": 0.8, "top_k": 200, "top_p": 0.95},
    "repetition penalty 1.2": {"temperature": 1.0, "repetition_penalty": 1.2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--untuned", action="store_true", help="leave glibc's malloc as it is")
    args = ap.parse_args()
    if not args.untuned:
        tune_allocator()
    rng = np.random.default_rng(0)
    logits = [(rng.standard_normal(args.vocab) * 3).astype(np.float32) for _ in range(8)]
    context = list(range(300))
    tuned = "untuned" if args.untuned else "tuned"
    print(f"vocabulary {args.vocab:,}, {args.calls} calls each, allocator {tuned} (microseconds)")
    print("| settings | median | fastest |\n|---|---:|---:|")
    for name, fields in CASES.items():
        sampler = Sampler(SamplingSettings(seed=0, **fields))  # type: ignore[arg-type]
        for x in logits * 5:  # warm up
            sampler.choose(x, context)
        times = []
        for i in range(args.calls):
            t0 = time.perf_counter()
            sampler.choose(logits[i % len(logits)], context)
            times.append(time.perf_counter() - t0)
        print(f"| {name} | {statistics.median(times) * 1e6:.0f} | {min(times) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
