"""Training speed on this machine: tokens/s of the real training loop, and the loss in a budget.

    python benchmarks/train_speed.py --data DIR                       # cpu preset, both modes
    python benchmarks/train_speed.py --data DIR --mode speed --dtype bfloat16 --threads 2
    python benchmarks/train_speed.py --data DIR --preset cpu-fast --mode budget --budget 120
    python benchmarks/train_speed.py --data DIR --mode budget --set learning_rate=1e-3

Both modes run `model.train.train`, the code path of `minigpt-tui train`, in this process.

speed:  `--warmup` optimizer steps, then `--iters` timed ones (no evaluation in between);
        tokens/s = tokens of the timed steps / their wall-clock time, from the loop's own
        `elapsed` in the train events. The first step's time (which includes torch.compile's
        compilation with --compile) is reported separately as `first_step_s`.
budget: a run of `--budget` wall-clock seconds with the preset's evaluation settings (their
        cost counts against the budget, as in a real run), then the whole-split validation
        loss (model.evaluate.split_loss), not counted in the budget.

Prints one JSON object per mode; `--out-dir` keeps the run directories (with metrics.jsonl,
for benchmarks/plot_loss.py). DATA is a prepared data directory, e.g.
`minigpt-tui data prepare shakespeare --from-file tinyshakespeare.txt --out DIR`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_value(text: str) -> Any:
    """`--set key=value`: a JSON value if it parses (numbers, true, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from model.config import GPTConfig, resolve_preset

    preset = resolve_preset(args.preset)
    model_cfg, train_cfg = dict(preset.model), dict(preset.train)
    model_keys = set(GPTConfig.__dataclass_fields__)
    for item in args.set:
        key, _, value = item.partition("=")
        (model_cfg if key in model_keys else train_cfg)[key] = parse_value(value)
    if args.dtype:
        train_cfg["dtype"] = args.dtype
    if args.compile:
        train_cfg["compile"] = True
    return model_cfg, train_cfg


def run(
    model_cfg: dict[str, Any], train_cfg: dict[str, Any], data: Path, out: Path, final_eval: bool
) -> list[dict[str, Any]]:
    from model.startup import RunOptions
    from model.train import train

    events: list[dict[str, Any]] = []
    opts = RunOptions(data=data, out=out, device="cpu", force=True, final_eval=final_eval)
    opts.on_event = events.append
    train(model_cfg, train_cfg, opts)
    return events


def speed(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    model_cfg, train_cfg = configs(args)
    log = 10
    warmup = max(log, args.warmup // log * log)
    iters = max(log, args.iters // log * log)
    train_cfg.update(
        max_iters=warmup + iters,
        time_budget=None,
        log_interval=log,
        eval_interval=10**9,  # no evaluation inside the timed steps
        ckpt_interval=10**9,
        eval_iters=1,
    )
    events = run(model_cfg, train_cfg, args.data, out, final_eval=False)
    start = next(e for e in events if e["event"] == "start")
    at = {e["iter"]: e["elapsed"] for e in events if e["event"] == "train"}
    seconds = at[warmup + iters] - at[warmup]
    tokens = iters * start["tokens_per_step"]
    return {
        "mode": "speed",
        "preset": args.preset,
        "dtype": start["dtype"],
        "compile": train_cfg.get("compile", False),
        "threads": args.threads,
        "iters": iters,
        "tokens_per_sec": round(tokens / seconds),
        "ms_per_iter": round(1000 * seconds / iters, 2),
        "first_step_s": round(at[1], 3),
        "load_before": round(args.load, 2),
    }


def budget(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    model_cfg, train_cfg = configs(args)
    if args.budget > 0:  # 0: the preset's own stopping rule (max_iters, or its budget)
        train_cfg["time_budget"] = args.budget
    if args.max_iters:
        train_cfg["max_iters"] = args.max_iters
    t0 = time.perf_counter()
    events = run(model_cfg, train_cfg, args.data, out, final_eval=True)
    wall = time.perf_counter() - t0
    start = next(e for e in events if e["event"] == "start")
    end = next(e for e in events if e["event"] == "end")
    evals = [e for e in events if e["event"] == "eval" and "val_loss" in e]
    return {
        "mode": "budget",
        "preset": args.preset,
        "dtype": start["dtype"],
        "compile": train_cfg.get("compile", False),
        "threads": args.threads,
        "overrides": args.set,
        "budget_s": args.budget,
        "iters": end["iter"],
        "tokens": end["iter"] * start["tokens_per_step"],
        "train_seconds": round(end["elapsed"], 1),
        "wall_seconds_with_final_eval": round(wall, 1),
        "tokens_per_sec": round(end["iter"] * start["tokens_per_step"] / end["elapsed"]),
        "last_val_loss_estimate": evals[-1]["val_loss"] if evals else None,
        "val_loss_full": round(end["val_loss_full"], 4),
        "params": start["params"],
        "load_before": round(args.load, 2),
        "run_dir": str(out),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared data directory")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--mode", choices=("speed", "budget", "both"), default="both")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the preset's)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--warmup", type=int, default=50, help="speed: steps before timing")
    ap.add_argument("--iters", type=int, default=300, help="speed: timed steps")
    ap.add_argument(
        "--budget", type=float, default=120.0, help="budget: seconds of training (0: the preset's)"
    )
    ap.add_argument("--max-iters", type=int, default=None, help="budget: also stop at this step")
    ap.add_argument("--repeat", type=int, default=1, help="speed: runs; the best is kept")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    ap.add_argument("--out-dir", type=Path, default=None, help="keep run directories here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out_dir or Path(tmp)
        tag = f"{args.preset}-{args.dtype or 'preset'}{'-compile' if args.compile else ''}"
        if args.mode in ("speed", "both"):
            results = []
            for i in range(args.repeat):
                args.load = os.getloadavg()[0]
                results.append(speed(args, base / f"speed-{tag}-{i}"))
            best = max(results, key=lambda r: r["tokens_per_sec"])
            best["all_tokens_per_sec"] = [r["tokens_per_sec"] for r in results]
            print(json.dumps(best), flush=True)
        if args.mode in ("budget", "both"):
            args.load = os.getloadavg()[0]
            print(json.dumps(budget(args, base / f"budget-{tag}")), flush=True)


if __name__ == "__main__":
    main()
