"""What ONNX export costs in quality: whole-split validation loss, torch vs each --quantize.

    python benchmarks/onnx_quality.py MODEL_DIR DATA_DIR            # exports into a temp dir
    python benchmarks/onnx_quality.py MODEL_DIR DATA_DIR --max-tokens 20000   # a prefix only

Every predicted token of the split counts once, in the same windows for all: torch uses
model.evaluate.split_loss (consecutive block_size windows); the ONNX models run each window
through the KV-cache graph one position at a time, one stream per window, decoded together
(OrtStreams.decode_batch), exactly as generation uses them. Prints each loss and its change
from torch; exits 1 when int8 raises the loss by more than --bound nats (default 0.005).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.ort_backend import OrtModel  # noqa: E402
from model import modeldir  # noqa: E402
from model.data import load_dataset  # noqa: E402


def onnx_split_loss(model: OrtModel, tokens: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats), in model.evaluate.split_loss's windows."""
    block = model.config.block_size
    n = len(tokens) - 1
    starts = list(range(0, n, block))
    groups = [s for s in starts if s + block <= n]
    batches = [groups[i : i + batch_size] for i in range(0, len(groups), batch_size)]
    batches += [[s] for s in starts if s + block > n]  # the shorter last window
    total, count = 0.0, 0
    for batch in batches:
        length = min(block, n - batch[0])
        rows = np.stack([tokens[s : s + length + 1].astype(np.int64) for s in batch])
        streams = model.streams(len(batch))  # one stream per window, all at position 0
        for t in range(length):
            logits = streams.decode_batch(rows[:, t].tolist()).astype(np.float64)  # (B, V)
            top = logits.max(-1, keepdims=True)
            logz = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
            total += float((logz - logits[np.arange(len(batch)), rows[:, t + 1]]).sum())
            count += len(batch)
    return total / max(count, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="model directory with model.safetensors")
    ap.add_argument("data", help="prepared data directory (minigpt-tui data prepare)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-tokens", type=int, default=None, help="use only a prefix")
    ap.add_argument("--bound", type=float, default=0.005, help="allowed int8 increase, nats")
    ap.add_argument(
        "--quantize",
        default="none,int8,int8:float32,none:int8,int4,int4-mlp",
        help="exports to measure: --quantize mode, or mode:kv-cache (its default: int8 with "
        "quantised weights, float32 without)",
    )
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch

    from export.onnx_export import export_onnx
    from model import checkpoint
    from model.evaluate import split_loss

    info = modeldir.read(args.model)
    data = load_dataset(args.data)
    if data.tokenizer_spec != info.tokenizer_spec:
        sys.exit(f"{args.data} was tokenized differently from {info.path}'s tokenizer")
    tokens = np.asarray(data.split(args.split))
    if args.max_tokens:
        tokens = tokens[: args.max_tokens + 1]
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, float] = {}
    t0 = time.perf_counter()
    model, _ = checkpoint.load(info.path)
    results["torch"] = split_loss(model, tokens, info.config.block_size)
    print(f"torch      {results['torch']:.5f}  ({time.perf_counter() - t0:.0f}s)")
    modes = args.quantize.split(",")
    with tempfile.TemporaryDirectory(prefix="onnx-quality-") as tmp:
        for quantize in modes:
            t0 = time.perf_counter()
            out = Path(tmp) / quantize.replace(":", "-")
            weights, _, kv_cache = quantize.partition(":")
            export_onnx(info.path, out, quantize=weights, kv_cache=kv_cache or "auto")
            model = OrtModel.load(modeldir.read(out), threads=args.threads)
            results[quantize] = onnx_split_loss(model, tokens)
            print(f"{quantize:10} {results[quantize]:.5f}  ({time.perf_counter() - t0:.0f}s)")
    print(f"{len(tokens) - 1:,} {args.split} tokens of {args.data}, model {info.path}")
    for quantize in modes:
        print(f"onnx {quantize} - torch: {results[quantize] - results['torch']:+.6f} nats")
    over = [m for m in modes if m.startswith("int8") and results[m] - results["torch"] > args.bound]
    if over:
        print(f"FAIL: {', '.join(over)} raise the loss by more than the bound ({args.bound})")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
