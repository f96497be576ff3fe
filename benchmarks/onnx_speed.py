"""ONNX engine speed: decode tokens/s, time to first token, and CLI cold start.

    python benchmarks/onnx_speed.py MODEL_DIR [MODEL_DIR ...] [--backends torch,onnx]
        [--prompt-tokens 64] [--new-tokens 180] [--repeats 7] [--threads N] [--cold-start]

Each model directory is loaded with every backend it supports (load_backend), then the
backends take turns, `--repeats` rounds, so load from other processes on a shared machine hits
them alike; the best round is reported. Decoding runs through the one generation loop
(minigpt_tui.generation.Generation) at temperature 0, with the sampler, as `generate` does.
`--cold-start` also times `minigpt-tui generate -m DIR --max-tokens 1` as a fresh process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minigpt_tui.generation import Generation, load_backend  # noqa: E402
from minigpt_tui.sampling import SamplingSettings  # noqa: E402
from model import modeldir  # noqa: E402
from model.backend import Backend, EngineError  # noqa: E402


def one_round(
    backend: Backend, prompt: list[int], new: int, temperature: float = 0.0
) -> tuple[float, float, float]:
    """Time to first token, decode tokens/s, and decode tokens per CPU-second of the process
    (one thread: what a token costs when the process has a core, on a machine busy with
    other work)."""
    tok = backend.info.tokenizer()
    settings = SamplingSettings(temperature=temperature, max_new_tokens=new, seed=0)
    gen = Generation(backend, tok, prompt, settings)
    cpu = time.process_time()
    for i, _ in enumerate(gen):
        if i == 0:
            cpu = time.process_time()
    n = gen.stats.new_tokens - 1
    rate = n / max(time.process_time() - cpu, 1e-9)
    return gen.stats.time_to_first_token, gen.stats.tokens_per_second, rate


def cold_start(model: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "minigpt_tui",
                "generate",
                "-m",
                str(model),
                "--max-tokens",
                "1",
                "x",
            ],
            check=True,
            capture_output=True,
        )
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=180)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cold-start", action="store_true")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    args = ap.parse_args()

    runs: list[tuple[str, Backend, list[int]]] = []
    for path in args.models:
        info = modeldir.read(path)
        vocab = info.tokenizer().vocab_size
        prompt = [i % vocab for i in range(min(args.prompt_tokens, info.config.block_size))]
        for name in args.backends.split(","):
            try:
                backend = load_backend(path, backend=name, threads=args.threads)
            except EngineError:
                continue  # e.g. torch on an ONNX-only directory
            quant = info.meta.get("onnx", {}).get("quantize", "none") if name == "onnx" else ""
            label = f"{path.name} | {name}{'-' + quant if quant not in ('', 'none') else ''}"
            runs.append((label, backend, prompt))
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(args.repeats):
        for label, backend, prompt in runs:
            ttft, tps, cpu = one_round(backend, prompt, args.new_tokens, args.temperature)
            old = best.get(label, (float("inf"), 0.0, 0.0))
            best[label] = (min(old[0], ttft), max(old[1], tps), max(old[2], cpu))
    print(
        f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new, best of {args.repeats}, "
        f"threads {args.threads or 'default'}, temperature {args.temperature}"
    )
    print(
        "| model | backend | time to first token (ms) | decode tokens/s "
        "| decode tokens per CPU-second |"
    )
    print("|---|---|---:|---:|---:|")
    for label, (ttft, tps, cpu) in best.items():
        print(f"| {label} | {ttft * 1000:.1f} | {tps:,.0f} | {cpu:,.0f} |")
    if args.cold_start:
        for path in args.models:
            print(
                f"cold start `minigpt-tui generate -m {path.name} --max-tokens 1`: "
                f"{cold_start(path, args.repeats):.2f} s (best of {args.repeats})"
            )


if __name__ == "__main__":
    main()
