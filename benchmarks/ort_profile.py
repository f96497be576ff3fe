"""Where onnxruntime's time goes in a prefill and in decode steps, by operator (issue 25).

    python benchmarks/ort_profile.py MODEL_DIR [--prompt-tokens 256] [--steps 64] [--threads 1]
        [--streams 1]

Runs the model directory's model.onnx through this project's stream (export/ort_backend.py)
with onnxruntime's profiler on: one prefill of --prompt-tokens random ids, then --steps decode
steps (of --streams streams decoded together, each prefilled alone). Prints, for the prefill
and for the decode steps apart, each operator type's share of the kernel time and its
microseconds per call. Shares hold on a busy machine, where absolute times do not; e.g. the
MatMulNBits share of a prefill against a decode step shows whether its many-row path is the
slow part. The share counts each operator's calls at its median call, so one slow call of a
kind (the head's MatMulNBits among the layers') is undercounted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export import ort_backend  # noqa: E402
from model import modeldir  # noqa: E402


def profiled_session(path: Path, threads: int, prefix: str) -> ort_backend.OrtModel:
    """An OrtModel whose session writes a profile (the options of make_session, plus that)."""
    import onnxruntime as ort

    original = ort.SessionOptions

    def with_profiling() -> ort.SessionOptions:
        so = original()
        so.enable_profiling = True
        so.profile_file_prefix = prefix
        return so

    ort.SessionOptions = with_profiling  # type: ignore[misc]
    try:
        return ort_backend.OrtModel.load(modeldir.read(path), threads)
    finally:
        ort.SessionOptions = original  # type: ignore[misc]


def shares(events: list[dict[str, object]]) -> list[tuple[str, float, int, float]]:
    """(op type, share of kernel time, calls, median microseconds a call), largest first.

    Each op's time is its calls times its median call: on a busy machine a kernel that the
    scheduler interrupts looks many times longer (the profiler's clock is the wall clock),
    and the median leaves those calls out where a sum would not."""
    durations: dict[str, list[int]] = collections.defaultdict(list)
    for e in events:
        args = e.get("args")
        kernel = str(e.get("name", "")).endswith("_kernel_time")
        if kernel and e.get("cat") == "Node" and isinstance(args, dict) and "op_name" in args:
            durations[str(args["op_name"])].append(int(e["dur"]))  # type: ignore[call-overload]
    total = {op: len(d) * statistics.median(d) for op, d in durations.items()}
    whole = sum(total.values()) or 1.0
    rows = [
        (op, t / whole, len(durations[op]), statistics.median(durations[op]))
        for op, t in total.items()
    ]
    return sorted(rows, key=lambda r: -r[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--streams", type=int, default=1, help="streams per decode step")
    args = ap.parse_args()
    vocab = modeldir.read(args.model).config.vocab_size
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = profiled_session(args.model, args.threads, os.path.join(tmp, "ort"))
        n = args.streams
        streams = model.streams(n)
        streams.prefill(0, rng.integers(0, vocab, 8).tolist())  # warm-up, left out below
        for i in range(n):
            streams.prefill(i, rng.integers(0, vocab, args.prompt_tokens).tolist())
        for _ in range(args.steps):
            streams.decode_batch(rng.integers(0, vocab, n).tolist())
        profile = model.session.end_profiling()
        events = json.loads(Path(profile).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    # Runs in order: warm-up, prefills, then the decode steps; split the node events by time.
    bounds = [(int(r["ts"]), int(r["ts"]) + int(r["dur"])) for r in runs]
    groups = {"prefill": bounds[1:2], "decode": bounds[1 + n :]}
    print(f"{args.model}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    for phase, spans in groups.items():
        inside = [e for e in events if any(a <= int(e.get("ts", -1)) <= b for a, b in spans)]
        wall = sum(b - a for a, b in spans) / max(1, len(spans))
        what = f"{args.prompt_tokens} tokens" if phase == "prefill" else f"{args.steps} steps"
        what += f" of {n} streams" if phase == "decode" and n > 1 else ""
        print(f"{phase} ({what}; {wall / 1e3:.2f} ms a run by the profiler's clock):")
        for op, share, calls, per_call in shares(inside):
            print(f"  {op:<28} {share:6.1%}  {calls:>6} calls  {per_call:9.1f} us a call")


if __name__ == "__main__":
    main()
