"""One prepared check of the CUDA paths on a GPU machine, measured against nanoGPT.

    python benchmarks/gpu_check.py --data DATA --nanogpt NANOGPT_COPY [--out DIR]
    python benchmarks/gpu_check.py --data DATA --nanogpt NANOGPT_COPY --dry-run   # CPU, tiny

DATA is Tiny Shakespeare in GPT-2 BPE (`minigpt-tui data prepare tinyshakespeare.txt --tokenizer
gpt2 --out DATA`); NANOGPT_COPY a scratch copy of karpathy/nanoGPT (its data/openwebtext is
filled from DATA here). In order, each step in its own process, within `--budget` seconds:

1. tests: `pytest -m gpu tests/test_gpu.py` (CUDA against CPU, mixed precision, fused AdamW,
   --compile, bit-exact resume, CUDA checkpoint -> CPU -> ONNX);
2. matmul: a large bf16 matrix product (the chip's reachable peak, beside the datasheet's);
3. ours: the `gpt2` preset through `model.train.train` (the code of `minigpt-tui train`): block
   1024, micro-batch 12, bf16, compile; `--warmup` steps, `--iters` timed ones, then a few
   under the profiler; tokens/s, MFU, peak memory, first step (compilation);
4. nanogpt: nanoGPT's own train.py, config/train_gpt2.py with the same shape (bias, vocab 50257
   through a meta.pkl), batch, accumulation, steps and logging; timed from its log lines;
5. decode: a random-weight GPT-2 124M through the torch backend, batch 1, 256-token prompt,
   128 new greedy tokens: the growing KV cache, the static cache run eagerly, and the static
   cache replayed as a CUDA graph (the backend's default on CUDA), plus a profile of decode steps;
then, while the budget lasts: ours with the vocabulary padded to 50304 (as nanoGPT pads), the
same with inductor's coordinate-descent tuning, and the largest micro-batch that fits
(extrapolated from peak memory, then tried) for ours and nanoGPT. `--only decode,ours,...`
runs only the steps named (tests, matmul, decode, ours, nanogpt, padded, tuned, largest-ours,
largest-nanogpt); `--tests-k` narrows the GPU tests.

Writes gpu_check.json and gpu_check.md to --out (default $OUT, else benchmarks/out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASHEET_BF16 = 989e12  # H100/H200 SXM dense bf16 (datasheet); the matmul step measures too
LOG = 10  # log interval (steps) of both trainers: the timing points


# ------------------------------------------------------------------------- children


def child_env(device: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_child(
    cmd: list[str], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a command, echo its output, timestamp each line; parse a final `RESULT {json}`."""
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    timed_out = False
    try:
        for line in proc.stdout:
            now = time.perf_counter() - t0
            lines.append((now, line.rstrip("\n")))
            print(f"    | {line}", end="", flush=True)
            if now > timeout:
                timed_out = True
                proc.kill()
                break
        proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    result: dict[str, Any] = {}
    for _, line in lines:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    return {
        "rc": proc.returncode,
        "timed_out": timed_out,
        "seconds": round(time.perf_counter() - t0, 1),
        "lines": lines,
        "result": result,
        "oom": any("OutOfMemory" in line or "out of memory" in line for _, line in lines),
    }


def emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def child_matmul(args: argparse.Namespace) -> None:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if args.device == "cpu":
        n, reps = 512, 3
        a = torch.randn(n, n, dtype=torch.bfloat16)
        b = torch.randn(n, n, dtype=torch.bfloat16)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = (time.perf_counter() - t0) / reps
        info["device_name"] = "cpu"
    else:
        n, reps = 8192, 20
        props = torch.cuda.get_device_properties(0)
        info.update(
            device_name=props.name,
            memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
        )
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)  # random, never zeros
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        seconds = sorted(times)[len(times) // 2]  # median
    info.update(matmul_n=n, matmul_tflops=round(2 * n**3 / seconds / 1e12, 1))
    emit(info)


KERNEL_KINDS = {  # matched in order against kernel names
    "triton (fused elementwise, norms, loss)": r"^triton_",
    "matmul": r"gemm|cutlass(?!.*attention)|xmma|nvjet|cublas|gemv|aten::(add)?mm|aten::bmm",
    "attention": r"flash|fmha|attention|sdpa",
    "optimizer": r"adam|multi_tensor",
    "copies": r"memcpy|memset|copy|cat",
}


def kernel_profile(prof: Any, steps: int, top: int = 12) -> dict[str, Any]:
    """Time per step by kernel from a torch.profiler run, grouped by kind.

    Counts device kernels only (the CPU ops that launch them would count the same time
    twice); on a CPU-only run, the CPU ops' own time instead.
    """
    rows, cpu_rows = [], []
    for e in prof.key_averages():
        if str(getattr(e, "device_type", "")).endswith("CUDA"):
            rows.append((e.key, float(e.self_device_time_total), int(e.count)))
        elif not e.key.startswith("ProfilerStep"):
            cpu_rows.append((e.key, float(e.self_cpu_time_total), int(e.count)))
    use = rows or cpu_rows
    total = sum(r[1] for r in use) or 1.0
    by_kind: dict[str, float] = {}
    for name, us, _ in use:
        kind = next((k for k, pat in KERNEL_KINDS.items() if re.search(pat, name, re.I)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + us
    use.sort(key=lambda r: -r[1])
    return {
        "source": "device kernels" if rows else "cpu ops",
        "steps": steps,
        "time_ms_per_step": round(total / 1000 / steps, 3),
        "launches_per_step": round(sum(r[2] for r in use) / steps, 1),
        "by_kind_percent": {k: round(100 * v / total, 1) for k, v in sorted(by_kind.items())},
        "top": [
            {"name": n[:160], "ms_per_step": round(us / 1000 / steps, 3), "calls": c}
            for n, us, c in use[:top]
        ],
    }


def child_ours(args: argparse.Namespace) -> None:
    """The gpt2 preset through model.train.train, the code path of `minigpt-tui train`."""
    import torch

    from model.config import resolve_preset
    from model.startup import RunOptions
    from model.train import train

    sys.setrecursionlimit(10_000)
    preset = resolve_preset("gpt2")
    model_cfg = dict(preset.model)
    if args.shape:
        model_cfg.update(json.loads(args.shape))
    if args.vocab_size:
        model_cfg["vocab_size"] = args.vocab_size
    if args.inductor_tuning:  # slower compilation, searched Triton launch settings
        import torch._inductor.config

        torch._inductor.config.coordinate_descent_tuning = True
    warm, iters, prof_steps = args.warmup, args.iters, args.profile_steps
    total = warm + iters + prof_steps
    train_cfg = dict(preset.train)
    train_cfg.update(
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_iters=total,
        log_interval=args.log,
        eval_interval=10**9,
        ckpt_interval=10**9,
        eval_iters=1,
        compile=args.compile,
        dtype="float32" if args.device == "cpu" else "bfloat16",
    )
    events: list[dict[str, Any]] = []
    prof: Any = None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device != "cpu":
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    def on_event(event: Any) -> None:  # model.events' TypedDicts
        nonlocal prof
        events.append(event)
        if event["event"] != "train":
            return
        print(
            f"step {event['iter']}: loss {event['loss']:.4f}, {event['tokens_per_sec']:,.0f} "
            f"tokens/s, elapsed {event['elapsed']:.2f}s",
            flush=True,
        )
        if prof_steps and event["iter"] == warm + iters:
            prof = torch.profiler.profile(activities=activities)
            prof.start()
        if prof is not None and event["iter"] == total:
            if args.device != "cpu":
                torch.cuda.synchronize()
            prof.stop()

    if args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    out = Path(args.run_dir)
    opts = RunOptions(
        data=Path(args.data),
        out=out,
        device=args.device,
        force=True,
        final_eval=False,
        preset="gpt2",
        on_event=on_event,
    )
    result: dict[str, Any] = {"batch_size": args.batch_size, "grad_accum": args.grad_accum}
    try:
        train(model_cfg, train_cfg, opts)
    except torch.OutOfMemoryError:
        emit({**result, "oom": True})
        return
    finally:
        shutil.rmtree(out, ignore_errors=True)
    start = next(e for e in events if e["event"] == "start")
    at = {e["iter"]: e["elapsed"] for e in events if e["event"] == "train"}
    seconds = at[warm + iters] - at[warm]
    tokens = iters * start["tokens_per_step"]
    cfg = start["config"]["model"]
    result.update(
        oom=False,
        params=start["params"],
        vocab_size=cfg["vocab_size"],
        block_size=cfg["block_size"],
        bias=cfg["bias"],
        dtype=start["dtype"],
        compile=args.compile,
        tokens_per_step=start["tokens_per_step"],
        timed_steps=iters,
        tokens_per_sec=round(tokens / seconds),
        ms_per_step=round(1000 * seconds / iters, 2),
        first_step_s=round(at[1], 2),  # includes torch.compile's compilation
        flops_per_token=_flops_per_token(cfg, start["params"]),
    )
    if args.device != "cpu":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        result["memory_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    if prof is not None:
        result["profile"] = kernel_profile(prof, prof_steps)
    emit(result)


def _flops_per_token(cfg: dict[str, Any], params: int) -> int:
    """6N + 12 L C T per trained token, N without the position embedding (PaLM appendix B):
    the formula of GPT.flops_per_token and of nanoGPT's estimate_mfu."""
    n = params - cfg["block_size"] * cfg["n_embd"]
    return 6 * n + 12 * cfg["n_layer"] * cfg["n_embd"] * cfg["block_size"]


def child_decode(args: argparse.Namespace) -> None:
    """GPT-2 124M (random weights) through the torch backend: batch 1, greedy, KV cache; the
    growing cache (eager, the CPU's path), the static cache run eagerly, and the static cache
    with each decode step replayed as a CUDA graph (the backend's default on CUDA)."""
    import tempfile

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import decode_speed

    from minigpt_tui.generation import load_backend
    from model.torch_backend import TorchBackend

    result: dict[str, Any] = {"prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens}
    with tempfile.TemporaryDirectory(prefix="gpu-check-decode-") as tmp:
        path = decode_speed.build_gpt2_shape(Path(tmp))
        backend = load_backend(path, backend="torch", device=args.device)
        assert isinstance(backend, TorchBackend)
        info = backend.info
        rng = __import__("numpy").random.default_rng(0)
        prompt = [int(t) for t in rng.integers(0, info.config.vocab_size, args.prompt_tokens)]
        variants = {
            "growing_cache_eager": TorchBackend(info, device=args.device, static_cache=False),
            "static_cache_eager": TorchBackend(
                info, device=args.device, static_cache=True, cuda_graph=False
            ),
            "default": backend,
        }
        runs: dict[str, Any] = {}
        reference: list[int] = []
        for name, b in variants.items():
            row, tokens = decode_speed.measure(
                "gpt2-124M", "torch", b, prompt, args.new_tokens, None, None
            )
            reference = reference or tokens
            runs[name] = {
                "static_cache": b.static_cache,
                "cuda_graph": b.cuda_graph,
                "tokens_per_sec": round(row.tokens_per_s, 1),
                "ttft_ms": round(row.ttft_ms, 1),
                "same_tokens_as_growing_cache": tokens == reference,
            }
        # Where a decode step's time goes, on the default path: device time, launches per token.
        activities = [torch.profiler.ProfilerActivity.CPU]
        if args.device != "cpu":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        backend.prefill(prompt)
        steps = min(16, len(reference))
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for tok in reference[:steps]:
                backend.decode(tok)
            wall = time.perf_counter() - t0
        result["decode_profile"] = {
            **kernel_profile(prof, steps, top=8),
            "wall_ms_per_token_profiled": round(1000 * wall / steps, 3),
        }
    result["runs"] = runs
    emit(result)


# ------------------------------------------------------------------------- nanoGPT

# Runs nanoGPT's train.py unchanged (argv as given) in its own folder, and prints the peak GPU
# memory when it exits.
NANOGPT_WRAPPER = """
import atexit, runpy, sys, torch
def peak():
    if torch.cuda.is_available():
        print("PEAK_MEMORY", torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(),
              flush=True)
atexit.register(peak)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def prepare_nanogpt(nanogpt: Path, data: Path) -> None:
    import pickle

    target = nanogpt / "data" / "openwebtext"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train.bin", "val.bin"):
        shutil.copyfile(data / name, target / name)
    meta = json.loads((data / "meta.json").read_text())
    with open(target / "meta.pkl", "wb") as f:  # nanoGPT reads the vocabulary size from here
        pickle.dump({"vocab_size": meta["vocab_size"]}, f)


def nanogpt_run(
    args: argparse.Namespace, batch: int, iters: int, timeout: float, shape: dict[str, Any]
) -> dict[str, Any]:
    cfg = {
        "batch_size": batch,
        "block_size": shape.get("block_size", 1024),
        "gradient_accumulation_steps": args.grad_accum,
        "max_iters": iters,
        "lr_decay_iters": 600000,
        "eval_interval": 10**9,  # evaluates once, at iteration 0 (nanoGPT always does)
        "eval_iters": 1,
        "log_interval": LOG if iters >= 2 * LOG else 1,
        "wandb_log": False,
        "bias": True,  # GPT-2's (and our preset's) biases
        "dropout": 0.0,
        "always_save_checkpoint": False,
        "out_dir": "/tmp/gpu-check-nanogpt-out",
        "device": "cpu" if args.device == "cpu" else "cuda",
        "dtype": "float32" if args.device == "cpu" else "bfloat16",
        "compile": args.device != "cpu",
    }
    for key in ("n_layer", "n_head", "n_embd"):
        if key in shape:
            cfg[key] = shape[key]
    argv = ["config/train_gpt2.py"] + [f"--{k}={v}" for k, v in cfg.items()]
    env = child_env(args.device)
    env.pop("PYTHONPATH", None)  # nanoGPT's own model.py, not this project's model package
    if os.environ.get("PYTHONPATH"):
        keep = [p for p in os.environ["PYTHONPATH"].split(":") if Path(p or ".").resolve() != ROOT]
        if keep:
            env["PYTHONPATH"] = ":".join(keep)
    print(f"  nanoGPT train.py {' '.join(argv)}", flush=True)
    run = run_child(
        [sys.executable, "-c", NANOGPT_WRAPPER, *argv], timeout, cwd=Path(args.nanogpt), env=env
    )
    stamps: dict[int, float] = {}
    res: dict[str, Any] = {"batch_size": batch, "grad_accum": args.grad_accum, "argv": argv}
    for t, line in run["lines"]:
        m = re.match(r"iter (\d+): loss ([\d.naif]+), time ([\d.]+)ms", line)
        if m:
            stamps[int(m.group(1))] = t
            res["last_loss"] = float(m.group(2))
        m = re.match(r"number of parameters: ([\d.]+)M", line)
        if m:
            res["params_reported_m"] = float(m.group(1))
        if line.startswith("PEAK_MEMORY"):
            _, alloc, reserved = line.split()
            res["peak_memory_bytes"], res["peak_reserved_bytes"] = int(alloc), int(reserved)
    res.update(rc=run["rc"], oom=run["oom"], wall_s=run["seconds"], timed_out=run["timed_out"])
    if run["rc"] != 0 or not stamps:
        res["error"] = "\n".join(line for _, line in run["lines"][-15:])
        return res
    first, last = min(stamps), max(stamps)
    warm = args.warmup if args.warmup in stamps else first
    timed = last - warm
    if timed > 0:
        tokens = timed * batch * cfg["block_size"] * args.grad_accum
        res.update(
            timed_steps=timed,
            tokens_per_sec=round(tokens / (stamps[last] - stamps[warm])),
            ms_per_step=round(1000 * (stamps[last] - stamps[warm]) / timed, 2),
        )
    # Iteration 0 holds the compilation of the eval and the training graphs, and the eval.
    res["first_step_s"] = round(stamps[first] - _start_of_run(run["lines"]), 2)
    return res


def _start_of_run(lines: list[tuple[float, str]]) -> float:
    for t, line in lines:
        if line.startswith("compiling the model") or line.startswith("step 0"):
            return t
    return 0.0


# ------------------------------------------------------------------------- the check


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.report: dict[str, Any] = {"command": " ".join(sys.argv), "dry_run": args.dry_run}

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def py(self, *argv: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *argv]

    def common(self) -> list[str]:
        a = self.args
        out = ["--device", a.device, "--data", str(a.data), "--nanogpt", str(a.nanogpt)]
        if a.dry_run:
            out.append("--dry-run")
        return out

    def stage(self, name: str, need: float, key: str) -> bool:
        left = self.left()
        print(f"\n== {name} ({left:.0f}s of the budget left)", flush=True)
        only = self.args.only.split(",") if self.args.only else None
        if only is not None and key not in only:
            self.report.setdefault("skipped", []).append(f"{name}: not in --only")
            print("   skipped: not in --only", flush=True)
            return False
        if any(name.startswith(s) for s in self.args.skip):
            self.report.setdefault("skipped", []).append(f"{name}: --skip")
            print("   skipped: --skip", flush=True)
            return False
        if left < need:
            self.report.setdefault("skipped", []).append(f"{name}: {left:.0f}s left, needs {need}")
            print("   skipped: not enough time left", flush=True)
            return False
        return True

    def env(self) -> None:
        smi = shutil.which("nvidia-smi")
        if smi:
            q = "name,driver_version,memory.total,clocks.max.sm,power.limit"
            r = subprocess.run(
                [smi, f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True
            )
            self.report["nvidia_smi"] = r.stdout.strip()
        self.report["python"] = sys.version.split()[0]

    def tests(self) -> None:
        a = self.args
        if not self.stage("GPU tests (pytest -m gpu)", 60, "tests"):
            return
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py"]
        cmd += ["-p", "no:cacheprovider", "-rfEs"]
        env = child_env(a.device)
        if a.dry_run:  # the tests' own CPU mode, one quick test: proves the step works
            env["MINIGPT_GPU_TESTS_DEVICE"] = "cpu"
            cmd += ["-k", a.tests_k or "forward_on_gpu"]
        elif a.tests_k:
            cmd += ["-k", a.tests_k]
        run = run_child(cmd, min(a.tests_timeout, self.left() - 30), cwd=ROOT, env=env)
        summary = next(
            (line for _, line in reversed(run["lines"]) if re.search(r"passed|failed|error", line)),
            "",
        )
        failed = [line for _, line in run["lines"] if line.startswith(("FAILED", "ERROR"))]
        self.report["tests"] = {
            "rc": run["rc"],
            "summary": summary.strip("= "),
            "failed": failed,
            "seconds": run["seconds"],
        }

    def matmul(self) -> None:
        if not self.stage("bf16 matmul", 20, "matmul"):
            return
        run = run_child(
            self.py("child-matmul", *self.common()), 90, env=child_env(self.args.device)
        )
        self.report["device"] = run["result"]

    def ours(self, key: str, timeout: float, **kw: Any) -> dict[str, Any]:
        a = self.args
        argv = ["child-ours", *self.common(), "--run-dir", f"/tmp/gpu-check-{key}"]
        log = kw.pop("log", 1 if a.dry_run else LOG)
        argv += ["--grad-accum", str(a.grad_accum), "--log", str(log)]
        argv += ["--shape", json.dumps(a.shape)] if a.shape else []
        for k, v in kw.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        if not a.dry_run:
            argv.append("--compile")
        run = run_child(self.py(*argv), timeout, env=child_env(a.device))
        res = dict(run["result"])
        res.update(rc=run["rc"], wall_s=run["seconds"], timed_out=run["timed_out"])
        if run["oom"]:
            res["oom"] = True
        if run["rc"] != 0 and not res.get("oom"):
            res["error"] = "\n".join(line for _, line in run["lines"][-15:])
        self.report[key] = res
        return res

    def train_pair(self) -> None:
        a = self.args
        iters = a.warmup + a.iters
        if self.stage("ours: gpt2 preset", 60, "ours"):
            self.ours(
                "ours",
                min(240, self.left()),
                batch_size=a.batch_size,
                warmup=a.warmup,
                iters=a.iters,
                profile_steps=a.profile_steps,
            )
        if self.stage("nanoGPT train.py", 60, "nanogpt"):
            prepare_nanogpt(Path(a.nanogpt), Path(a.data))
            self.report["nanogpt"] = nanogpt_run(
                a, a.batch_size, iters, min(240, self.left()), a.shape or {}
            )

    def decode(self) -> None:
        a = self.args
        if not self.stage("decode (torch backend)", 30, "decode"):
            return
        argv = ["child-decode", *self.common(), "--prompt-tokens", str(a.prompt_tokens)]
        argv += ["--new-tokens", str(a.new_tokens)]
        run = run_child(self.py(*argv), min(240, self.left()), env=child_env(a.device))
        self.report["decode"] = run["result"] or {
            "error": "\n".join(x for _, x in run["lines"][-15:])
        }

    def largest_batch(self, key: str) -> None:
        """Peak memory grows linearly with the micro-batch: extrapolate to 95% of the card
        from the measured peak, and try that size once (and a smaller one if it fails)."""
        a = self.args
        total = self.report.get("device", {}).get("memory_bytes")
        peak = self.report.get(key, {}).get("peak_memory_bytes")
        params = self.report.get("ours", {}).get("params", 124_439_808)
        if a.dry_run:
            total, peak = total or 2**30, peak or 2**28
        if not (total and peak):
            return
        fixed = 16 * params  # fp32 weights and gradients, two AdamW moments
        per_seq = max(1.0, (peak - fixed) / a.batch_size)
        guess = a.batch_size + 1 if a.dry_run else int((0.95 * total - fixed) / per_seq)
        tries: list[dict[str, Any]] = []
        found = {"estimate": guess, "per_sequence_bytes": round(per_seq), "tries": tries}
        self.report[f"largest_batch_{key}"] = found
        steps = 1 if a.dry_run else LOG
        for batch in (guess, int(guess * 0.85)):
            if not self.stage(f"largest micro-batch, {key}: try {batch}", 80, f"largest-{key}"):
                break
            if key == "ours":
                res = self.ours("try", min(200, self.left()), batch_size=batch, warmup=steps,
                                iters=steps, profile_steps=0)  # fmt: skip
                self.report.pop("try", None)
            else:
                res = nanogpt_run(a, batch, 2 * LOG, min(200, self.left()), a.shape or {})
            ok = res.get("rc") == 0 and not res.get("oom") and "tokens_per_sec" in res
            tries.append(
                {
                    "batch_size": batch,
                    "fits": ok,
                    "tokens_per_sec": res.get("tokens_per_sec"),
                    "peak_memory_bytes": res.get("peak_memory_bytes"),
                }
            )
            if ok:
                found["largest_tried_that_fits"] = batch
                break

    def padded(self, tuned: bool = False) -> None:
        """Ours with the vocabulary padded to 50304 (as nanoGPT pads it); `tuned` adds
        inductor's coordinate-descent tuning."""
        a = self.args
        key = "ours_vocab_50304" + ("_tuned" if tuned else "")
        title = (
            "ours, padded, inductor coordinate-descent tuning"
            if tuned
            else "ours, vocabulary padded to 50304"
        )
        if self.stage(title, 90 if tuned else 80, "tuned" if tuned else "padded"):
            self.ours(
                key,
                min(200, self.left()),
                batch_size=a.batch_size,
                warmup=a.warmup,
                iters=a.iters,
                profile_steps=0,
                vocab_size=50304,
                **({"inductor_tuning": 1} if tuned else {}),
            )

    def run(self) -> None:
        self.env()
        self.tests()
        self.matmul()
        self.decode()
        self.train_pair()
        self.padded()
        self.padded(tuned=True)
        self.largest_batch("ours")
        self.largest_batch("nanogpt")
        self.report["total_seconds"] = round(time.perf_counter() - self.t0, 1)


# ------------------------------------------------------------------------- the report


def mfu(res: dict[str, Any], peak: float | None) -> float | None:
    if not peak or "tokens_per_sec" not in res or "flops_per_token" not in res:
        return None
    return res["tokens_per_sec"] * res["flops_per_token"] / peak


def finish(report: dict[str, Any], out: Path) -> None:
    """Adds MFU figures, writes gpu_check.json and gpu_check.md into `out`."""
    dev = report.get("device", {})
    measured = dev.get("matmul_tflops", 0) * 1e12 or None
    ours = report.get("ours", {})
    nano = report.get("nanogpt", {})
    if ours.get("flops_per_token") and "tokens_per_sec" in nano:
        nano["flops_per_token"] = ours["flops_per_token"]  # the same shape, the same formula
    variants = [report.get(k, {}) for k in ("ours_vocab_50304", "ours_vocab_50304_tuned")]
    for res in (ours, nano, *variants):
        if res:
            for label, peak in (("datasheet", DATASHEET_BF16), ("measured_matmul", measured)):
                value = mfu(res, peak)
                if value is not None:
                    res[f"mfu_vs_{label}"] = round(value, 4)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(summary(report) + "\n")
    print("\n" + summary(report), flush=True)


def _gb(n: Any) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, int | float) else "-"


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, int | float) else "-"


def summary(r: dict[str, Any]) -> str:
    dev = r.get("device", {})
    ours, nano = r.get("ours", {}), r.get("nanogpt", {})
    lines = [
        "# GPU check",
        "",
        f"- device: {dev.get('device_name', '?')} ({r.get('nvidia_smi', 'no nvidia-smi')}); "
        f"torch {dev.get('torch', '?')}, CUDA {dev.get('cuda', '?')}, python {r.get('python')}",
        f"- bf16 matmul {dev.get('matmul_n', '?')}^3 (random data, median): "
        f"{dev.get('matmul_tflops', '?')} TFLOP/s; datasheet peak {DATASHEET_BF16 / 1e12:.0f}",
        f"- tests: {r.get('tests', {}).get('summary', 'not run')}",
    ]
    for f in r.get("tests", {}).get("failed", []):
        lines.append(f"  - {f}")
    lines += [
        "",
        "| training (block 1024, bf16, compile) | ours (gpt2 preset) | nanoGPT train.py |",
        "|---|---:|---:|",
    ]
    rows = [
        ("micro-batch x grad accum", lambda x: f"{x.get('batch_size')} x {x.get('grad_accum')}"),
        ("timed steps", lambda x: str(x.get("timed_steps", "-"))),
        ("tokens/s", lambda x: f"{x['tokens_per_sec']:,}" if "tokens_per_sec" in x else "-"),
        ("ms per step", lambda x: str(x.get("ms_per_step", "-"))),
        ("MFU vs datasheet bf16 peak", lambda x: _pct(x.get("mfu_vs_datasheet"))),
        ("MFU vs measured matmul", lambda x: _pct(x.get("mfu_vs_measured_matmul"))),
        ("peak memory allocated", lambda x: _gb(x.get("peak_memory_bytes"))),
        ("peak memory reserved", lambda x: _gb(x.get("peak_reserved_bytes"))),
        ("first step incl. compile (s)", lambda x: str(x.get("first_step_s", "-"))),
    ]
    for label, fmt in rows:
        lines.append(f"| {label} | {fmt(ours) if ours else '-'} | {fmt(nano) if nano else '-'} |")
    big = [r.get("largest_batch_ours", {}), r.get("largest_batch_nanogpt", {})]
    lines.append(
        "| largest micro-batch (estimate; tried, fits) | "
        + " | ".join(
            f"{b.get('estimate', '-')}; "
            + ", ".join(
                f"{t['batch_size']} {'fits' if t['fits'] else 'fails'}"
                + (f" ({t['tokens_per_sec']:,} tok/s)" if t.get("tokens_per_sec") else "")
                for t in b.get("tries", [])
            )
            if b
            else "-"
            for b in big
        )
        + " |"
    )
    for key, label in (
        ("ours_vocab_50304", "ours with the vocabulary padded to 50304"),
        ("ours_vocab_50304_tuned", "ours, padded, inductor coordinate-descent tuning"),
    ):
        pad = r.get(key)
        if pad:
            lines.append(
                f"\n{label}: {pad['tokens_per_sec']:,} tokens/s, {pad.get('ms_per_step')} ms "
                f"per step, MFU {_pct(pad.get('mfu_vs_datasheet'))} of the datasheet peak, "
                f"{_pct(pad.get('mfu_vs_measured_matmul'))} of the measured matmul; first "
                f"step {pad.get('first_step_s')} s"
                if "tokens_per_sec" in pad
                else f"\n{label}: failed ({pad.get('error', '')[-200:]})"
            )
    prof = ours.get("profile")
    if prof:
        lines.append(
            f"\nours, where a step's device time goes ({prof['source']}, {prof['steps']} steps, "
            f"{prof['time_ms_per_step']} ms/step): "
            + ", ".join(f"{k} {v}%" for k, v in prof["by_kind_percent"].items())
        )
    dec = r.get("decode", {})
    if dec:
        lines.append(
            f"\n| decode, GPT-2 124M random, batch 1, {dec.get('prompt_tokens')}-token prompt, "
            f"{dec.get('new_tokens')} new greedy | tokens/s | time to first token (ms) |"
        )
        lines.append("|---|---:|---:|")
        for name, run in dec.get("runs", {}).items():
            same = "" if run.get("same_tokens_as_growing_cache", True) else " (tokens differ!)"
            lines.append(f"| {name}{same} | {run['tokens_per_sec']} | {run['ttft_ms']} |")
        p = dec.get("decode_profile")
        if p:
            lines.append(
                f"\ndecode step: {p['wall_ms_per_token_profiled']} ms wall per token under the "
                f"profiler, {p['time_ms_per_step']} ms of {p['source']}, "
                f"{p['launches_per_step']} launches per token"
            )
        if "error" in dec:
            lines.append(f"\ndecode failed: {dec['error'][-300:]}")
    for key in ("ours", "nanogpt"):
        if r.get(key, {}).get("error"):
            lines.append(f"\n{key} failed:\n```\n{r[key]['error'][-1200:]}\n```")
    if r.get("skipped"):
        lines.append("\nskipped for time: " + "; ".join(r["skipped"]))
    lines.append(f"\ntotal {r.get('total_seconds', '?')} s; command: `{r.get('command')}`")
    return "\n".join(lines)


# ------------------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", default="check")
    ap.add_argument("--data", type=Path, required=True, help="GPT-2 BPE Tiny Shakespeare")
    ap.add_argument("--nanogpt", type=Path, required=True, help="scratch copy of nanoGPT")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, 2 steps")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check")
    ap.add_argument("--tests-timeout", type=float, default=200.0)
    ap.add_argument("--tests-k", default=None, help="pytest -k expression for the GPU tests")
    ap.add_argument(
        "--only",
        default=None,
        help="run only these steps (comma-separated): tests, matmul, decode, ours, nanogpt, "
        "padded, tuned, largest-ours, largest-nanogpt",
    )
    ap.add_argument(
        "--skip", action="append", default=[], help="skip the steps whose name starts so"
    )
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--profile-steps", type=int, default=LOG, help="a multiple of the log interval")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    # child options
    ap.add_argument("--run-dir", default="/tmp/gpu-check-run")
    ap.add_argument("--log", type=int, default=LOG)
    ap.add_argument("--shape", default=None, help="JSON model-shape overrides")
    ap.add_argument("--vocab-size", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--inductor-tuning", type=int, default=0)
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device = "cpu"
        if args.mode == "check":
            args.shape = {"block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64}
            args.batch_size, args.grad_accum, args.warmup, args.iters = 2, 1, 1, 2
            args.profile_steps, args.prompt_tokens, args.new_tokens = 1, 16, 4
            args.budget = 10**6
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    sys.path.insert(0, str(ROOT))
    children = {
        "child-matmul": child_matmul,
        "child-ours": child_ours,
        "child-decode": child_decode,
    }
    if args.mode in children:
        children[args.mode](args)
        return
    out = args.out or Path(os.environ.get("OUT") or ROOT / "benchmarks" / "out")
    if args.dry_run:
        print("dry run: CPU, tiny shapes; the figures mean nothing", flush=True)
    check = Check(args)
    try:
        check.run()
    finally:
        finish(check.report, out)


if __name__ == "__main__":
    main()
