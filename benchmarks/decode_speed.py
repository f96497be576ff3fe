"""Decode speed: time to first token and tokens/s of the generation engine's backends.

Measures (a) a given model directory (default: the bundled model, skipped when it is not
installed) and (b) a GPT-2-124M-shaped model with random weights (vocab 50257, block 1024,
768/12/12, GPT-2 tokenizer) built in a temporary directory. Every run goes through the one
generation loop (minigpt_tui.generation.Generation) at temperature 0, so the backends do the same
work and greedy runs of different backends should print the same tokens.

Backends: torch (KV cache), recompute (torch, no cache: the whole window every step), onnx and
onnx-int8 (onnxruntime; the 124M model is exported with export.onnx_export.export_onnx when
that exists, and skipped otherwise).

    python benchmarks/decode_speed.py                     # bundled model + 124M, all backends
    python benchmarks/decode_speed.py --quick             # a few tokens: a smoke test
    python benchmarks/decode_speed.py --model runs/x --skip-124m --backends torch,onnx
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minigpt_tui.generation import Generation, load_backend  # noqa: E402
from minigpt_tui.models import DEFAULT_MODEL, bundled_models, resolve_model  # noqa: E402
from minigpt_tui.sampling import SamplingSettings  # noqa: E402
from model import modeldir  # noqa: E402
from model.backend import Backend, EngineError  # noqa: E402
from model.tokenizer import Tokenizer  # noqa: E402

ALL_BACKENDS = ("torch", "recompute", "onnx", "onnx-int8")


@dataclass
class Row:
    model: str
    backend: str
    threads: str
    prompt: int
    new: int
    ttft_ms: float
    tokens_per_s: float
    slides: int
    note: str = ""


class NoEndOfText:
    """The model's tokenizer without an end-of-text token, so every run makes all its tokens."""

    def __init__(self, inner: Tokenizer) -> None:
        self._inner = inner
        self.kind = inner.kind

    @property
    def vocab_size(self) -> int:
        return self._inner.vocab_size

    @property
    def eot(self) -> int | None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def generate(backend: Backend, prompt: list[int], new_tokens: int) -> Generation:
    tokenizer = NoEndOfText(backend.info.tokenizer())
    settings = SamplingSettings(temperature=0.0, max_new_tokens=new_tokens)
    gen = Generation(backend, tokenizer, prompt, settings)
    for _ in gen:
        pass
    return gen


def measure(
    label: str,
    name: str,
    backend: Backend,
    prompt: list[int],
    new_tokens: int,
    threads: int | None,
    reference: list[int] | None,
) -> tuple[Row, list[int]]:
    generate(backend, prompt[: min(8, len(prompt))], 2)  # warm up (allocations, kernels)
    gen = generate(backend, prompt, new_tokens)
    st = gen.stats
    note = ""
    if reference is not None:
        same = gen.generated == reference[: len(gen.generated)]
        note = "same tokens as torch" if same else "tokens differ from torch"
    row = Row(
        label,
        name,
        str(threads or "default"),
        st.prompt_tokens,
        st.new_tokens,
        st.time_to_first_token * 1000,
        st.tokens_per_second,
        st.slides,
        note,
    )
    return row, gen.generated


def load(model_dir: Path, name: str, threads: int | None, device: str) -> Backend:
    if name == "recompute":
        from model.torch_backend import TorchRecomputeBackend

        return TorchRecomputeBackend(modeldir.read(model_dir), device=device, threads=threads)
    if name == "torch":
        return load_backend(model_dir, backend="torch", device=device, threads=threads)
    return load_backend(model_dir, backend="onnx", threads=threads)


def onnx_dir(model_dir: Path, name: str, work: Path) -> tuple[Path | None, str]:
    """The model directory to load for an ONNX backend, exporting it when we can."""
    quantize = "int8" if name == "onnx-int8" else "none"
    if quantize == "none" and modeldir.read(model_dir).has_onnx:
        return model_dir, ""
    try:
        exporter = importlib.import_module("export.onnx_export")
    except ImportError as e:
        return None, f"skipped: no ONNX exporter ({e})"
    if not hasattr(exporter, "export_onnx"):
        return None, "skipped: export.onnx_export has no export_onnx"
    out = work / f"{model_dir.name}-{name}"
    if not out.exists():
        t0 = time.perf_counter()
        exporter.export_onnx(model_dir, out, quantize=quantize)
        print(f"  exported {name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return out, ""


def bench_model(
    label: str,
    model_dir: Path,
    backends: Sequence[str],
    prompt_tokens: int,
    new_tokens: int,
    threads: int | None,
    device: str,
    work: Path,
    recompute_tokens: int | None,
) -> list[Row]:
    info = modeldir.read(model_dir)
    block = info.config.block_size
    rng = np.random.default_rng(0)
    vocab = info.tokenizer().vocab_size
    prompt = [int(t) for t in rng.integers(0, vocab, size=min(prompt_tokens, block))]
    rows: list[Row] = []
    reference: list[int] | None = None
    for name in backends:
        n = new_tokens
        if name == "recompute" and recompute_tokens is not None:
            n = min(n, recompute_tokens)
        path = model_dir
        if name.startswith("onnx"):
            exported, why = onnx_dir(model_dir, name, work)
            if exported is None:
                rows.append(Row(label, name, "-", len(prompt), 0, 0.0, 0.0, 0, why))
                continue
            path = exported
        print(f"  {label}: {name}, {len(prompt)}-token prompt, {n} new tokens", file=sys.stderr)
        try:
            backend = load(path, name, threads, device)
        except (EngineError, ValueError) as e:
            rows.append(Row(label, name, "-", len(prompt), 0, 0.0, 0.0, 0, f"skipped: {e}"))
            continue
        row, tokens = measure(
            label, name, backend, prompt, n, threads, reference if name != "torch" else None
        )
        if name == "torch":
            reference = tokens
        rows.append(row)
        del backend
    return rows


def build_gpt2_shape(work: Path) -> Path:
    import torch

    from model import checkpoint
    from model.config import GPTConfig
    from model.gpt import GPT
    from model.tokenizer import GPT2Tokenizer

    path = work / "gpt2-124m-random"
    if path.exists():
        return path
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    t0 = time.perf_counter()
    model = GPT(cfg)
    checkpoint.save(path, model, modeldir.make_meta(cfg, GPT2Tokenizer(), name="gpt2-124m-random"))
    print(
        f"  built {cfg.num_params() / 1e6:.0f}M-parameter random model in "
        f"{time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    return path


def table(rows: list[Row]) -> str:
    lines = [
        "| model | backend | threads | prompt tokens | new tokens | time to first token (ms) "
        "| decode tokens/s | window slides | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.new == 0:
            lines.append(f"| {r.model} | {r.backend} | - | {r.prompt} | - | - | - | - | {r.note} |")
            continue
        lines.append(
            f"| {r.model} | {r.backend} | {r.threads} | {r.prompt} | {r.new} | {r.ttft_ms:.1f} "
            f"| {r.tokens_per_s:.1f} | {r.slides} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model directory (default: the bundled model, if installed)")
    ap.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        help=f"comma-separated, from {', '.join(ALL_BACKENDS)}",
    )
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument(
        "--recompute-tokens",
        type=int,
        default=16,
        help="new tokens for the slow recompute backend on the 124M model",
    )
    ap.add_argument("--threads", type=int, default=None, help="threads (default: the backend's)")
    ap.add_argument("--device", default="cpu", help="torch device for torch/recompute")
    ap.add_argument("--skip-model", action="store_true", help="skip (a), the model directory")
    ap.add_argument("--skip-124m", action="store_true", help="skip (b), the 124M random model")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the built 124M model (and its exports) here between runs",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="8 new tokens (2 for recompute on 124M): a smoke test, not a measurement",
    )
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(ALL_BACKENDS))
    if unknown:
        ap.error(f"unknown backends {unknown}; choose from {', '.join(ALL_BACKENDS)}")
    new_tokens = 8 if args.quick else args.new_tokens
    recompute_tokens = 2 if args.quick else args.recompute_tokens

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="decode-speed-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_model:
            if args.model is None and DEFAULT_MODEL not in bundled_models():
                print(
                    f"(a) skipped: bundled model {DEFAULT_MODEL!r} is not installed",
                    file=sys.stderr,
                )
            else:
                path = modeldir.resolve(resolve_model(args.model))
                label = modeldir.read(path).name
                rows += bench_model(
                    label,
                    path,
                    backends,
                    args.prompt_tokens,
                    new_tokens,
                    args.threads,
                    args.device,
                    work,
                    None,
                )
        if not args.skip_124m:
            path = build_gpt2_shape(work)
            rows += bench_model(
                "gpt2-124M (random)",
                path,
                backends,
                args.prompt_tokens,
                new_tokens,
                args.threads,
                args.device,
                work,
                recompute_tokens,
            )

    import torch

    print(
        f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads available, python {platform.python_version()}, torch {torch.__version__}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
