"""Training recipes compared at equal wall time, side by side, one pinned core per run.

On a machine shared with other jobs, runs made one after the other measure the neighbours as
much as the recipe. Here the runs of a comparison go AT THE SAME TIME, each pinned to its own
core(s) (`taskset`, OMP_NUM_THREADS and torch threads = its core count), with the same time
budget, so they see the same machine.

An arm is NAME=PRESET[:KEY=VALUE,...]:
  - our trainer (benchmarks/train_speed.py's budget mode): KEY=VALUE are config overrides, plus
    `budget=S` (seconds; default --budget; 0: the preset's own stop, e.g. the cpu preset's 4000
    iterations) and `threads=N` (cores, default 1). Scored by the whole-split validation loss.
  - NAME=nanogpt:iters=N[,KEY=VALUE...]: nanoGPT's README CPU command (NANOGPT_CPU below) with
    --max_iters=N --lr_decay_iters=N --eval_interval=N and --KEY=VALUE, run from a scratch copy
    (--nanogpt). nanoGPT saves its checkpoint at evaluations only, so it evaluates at the end
    (and at iteration 0) instead of every 250 iterations; the checkpoint is scored on OUR whole
    validation split by benchmarks/nanogpt_val.py; its loop time is the sum of the
    per-iteration times it prints.

Two arms, two cores, and a second round with the cores swapped (the 2-core machine):

    python benchmarks/recipe_ablation.py --data DIR --budget 60 --swap \\
        --arm adamw=cpu-fast:optimizer=adamw --arm muon=cpu-fast:optimizer=muon

The whole ablation on a many-core machine (`--plan recipe`, see `recipe_plan`; 14 cores): a
first stage of 60 s runs (learning rates, shapes, schedule, zero-init), then a stage of 120 s
runs built from its winners (the recipe with each choice switched off, nanoGPT with --max_iters
set from its speed measured in the first stage, a second copy of both on other cores), and,
alongside both stages, the cpu preset against nanoGPT at that config:

    python benchmarks/recipe_ablation.py --data DIR --nanogpt /tmp/nanogpt --plan recipe \\
        --cores 0-15 --log results.jsonl

Prints one line per finished run and a table at the end; --log appends JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# nanoGPT's README command for a CPU ("I only have a macbook"), less --max_iters/--lr_decay_iters.
NANOGPT_CPU = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
]
ITER_LINE = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms")


@dataclass
class Arm:
    name: str
    preset: str
    sets: dict[str, str] = field(default_factory=dict)
    budget: float | None = None  # None: --budget
    threads: int = 1
    stage: str = ""

    @classmethod
    def parse(cls, text: str, stage: str = "") -> Arm:
        name, _, spec = text.partition("=")
        preset, _, rest = spec.partition(":")
        if not name or not preset:
            raise SystemExit(f"error: arm {text!r} is not NAME=PRESET[:KEY=VALUE,...]")
        sets = dict(item.split("=", 1) for item in rest.split(",") if item)
        arm = cls(name, preset, sets, stage=stage)
        if "budget" in sets:
            arm.budget = float(sets.pop("budget"))
        if "threads" in sets:
            arm.threads = int(sets.pop("threads"))
        return arm

    def spec(self) -> str:
        sets = ",".join(f"{k}={v}" for k, v in self.sets.items())
        return f"{self.name}={self.preset}" + (f":{sets}" if sets else "")


class Running:
    def __init__(self, arm: Arm, cores: list[int], args: argparse.Namespace, work: Path) -> None:
        self.arm, self.cores, self.args = arm, cores, args
        self.budget = args.budget if arm.budget is None else arm.budget
        env = dict(
            os.environ,
            OMP_NUM_THREADS=str(arm.threads),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        pin = ["taskset", "-c", ",".join(map(str, cores))]
        self.started = time.time()
        if arm.preset == "nanogpt":
            sets = dict(arm.sets)
            iters = int(sets.pop("iters"))
            self.out = work / f"nanogpt-{arm.stage}-{arm.name}-{cores[0]}"
            cmd = [
                *pin,
                sys.executable,
                "train.py",
                *NANOGPT_CPU,
                f"--max_iters={iters}",
                f"--lr_decay_iters={iters}",
                f"--out_dir={self.out}",
                # Evaluate (and keep the checkpoint) at the last iteration, not only every 250.
                f"--eval_interval={sets.pop('eval_interval', iters)}",
                *(f"--{k}={v}" for k, v in sets.items()),
            ]
            cwd = args.nanogpt
        else:
            cmd = [
                *pin,
                sys.executable,
                str(ROOT / "benchmarks" / "train_speed.py"),
                "--data",
                str(args.data),
                "--preset",
                arm.preset,
                "--mode",
                "budget",
                "--budget",
                str(self.budget),
                "--threads",
                str(arm.threads),
            ]
            for k, v in arm.sets.items():
                cmd += ["--set", f"{k}={v}"]
            cwd = None
        # Output goes to a file, not a pipe: nanoGPT logs every iteration, and a pipe nobody
        # reads until the run ends fills up and stops it.
        self.log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (closed in result())
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )

    def result(self) -> dict[str, Any]:
        self.proc.wait()
        self.log.seek(0)
        output = self.log.read()
        self.log.close()
        base: dict[str, Any] = {
            "arm": self.arm.name,
            "stage": self.arm.stage,
            "spec": self.arm.spec(),
            "cores": self.cores,
            "threads": self.arm.threads,
            "budget": self.budget,
            "wall": round(time.time() - self.started, 1),
        }
        if self.proc.returncode:
            return {**base, "error": output[-1500:]}
        if self.arm.preset != "nanogpt":
            return {**base, **json.loads(output.strip().splitlines()[-1])}
        times = [(int(m[1]), float(m[2])) for m in map(ITER_LINE.match, output.splitlines()) if m]
        score = subprocess.run(
            [
                "taskset",
                "-c",
                str(self.cores[0]),
                sys.executable,
                str(ROOT / "benchmarks" / "nanogpt_val.py"),
                "--ckpt",
                str(self.out / "ckpt.pt"),
                "--meta",
                str(Path(self.args.nanogpt) / "data" / "shakespeare_char" / "meta.pkl"),
                "--data",
                str(self.args.data),
            ],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if score.returncode:
            return {**base, "error": score.stderr[-1500:]}
        scored = json.loads(score.stdout.strip().splitlines()[-1])
        est = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", output)
        iters = times[-1][0] if times else 0
        seconds = sum(t for _, t in times) / 1000
        return {
            **base,
            "iters": iters,
            "train_seconds": round(seconds, 1),
            "tokens": iters * 12 * 64,
            "tokens_per_sec": round(iters * 12 * 64 / max(seconds, 1e-9)),
            "ckpt_iter": scored["iter"],
            "last_val_loss_estimate": float(est[-1][2]) if est else None,
            "val_loss_full": scored["val_loss_full"],
        }


def run_all(
    arms: list[Arm],
    cores: list[int],
    args: argparse.Namespace,
    work: Path,
    beside: list[Running] | None = None,
    done: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run arms first-in first-out on the free cores; returns their results in arm order.

    Runs in `beside` (started elsewhere, on other cores) are reported into `done` as they end.
    """
    beside = beside if beside is not None else []
    free, queue = list(cores), list(enumerate(arms))
    running: list[tuple[int, Running]] = []
    results: dict[int, dict[str, Any]] = {}
    while queue or running:
        while queue and len(free) >= queue[0][1].threads:
            i, arm = queue.pop(0)
            mine, free[:] = free[: arm.threads], free[arm.threads :]
            running.append((i, Running(arm, mine, args, work)))
        time.sleep(0.5)
        for run in list(beside):
            if run.proc.poll() is not None:
                beside.remove(run)
                res = run.result()
                report(res, args)
                if done is not None:
                    done.append(res)
        for item in list(running):
            i, run = item
            if run.proc.poll() is None:
                continue
            running.remove(item)
            free.extend(run.cores)
            res = run.result()
            res["load_at_end"] = round(os.getloadavg()[0], 2)
            results[i] = res
            report(res, args)
    return [results[i] for i in range(len(arms))]


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    if "error" in res:
        print(f"[{res['stage']}] {res['arm']}: FAILED\n{res['error']}", flush=True)
    else:
        print(
            f"[{res['stage']}] {res['arm']:>16} cores {res['cores']}: "
            f"val {res['val_loss_full']:.4f}"
            f"  iters {res['iters']}  train {res['train_seconds']} s"
            f"  {res['tokens_per_sec']:,} tok/s",
            flush=True,
        )
    if args.log:
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(res) + "\n")


# ---------------------------------------------------------------------------- the recipe plan

# What every "new recipe" arm starts from: cpu-fast's evaluation settings, float32 (no AMX),
# Muon, the trapezoid schedule and zeroed output projections.
NEW = dict(
    dtype="float32",
    optimizer="muon",
    schedule="trapezoid",
    cooldown="0.5",
    zero_init="true",
    min_lr="0.0",
    warmup_iters="50",
)


def _spec(name: str, **sets: Any) -> str:
    return f"{name}=cpu-fast:" + ",".join(f"{k}={v}" for k, v in sets.items())


def fixed_arms(scale: float) -> list[Arm]:
    """The cpu preset (its own 4000 iterations) against nanoGPT's command at the same values
    (batch 12, block 64, 128/4/4, dropout 0, lr 3e-4, 4000 iterations; nanoGPT's cosine to
    lr/10, warm-up, beta2 and clipping), run alongside both stages."""
    iters = 4000 if scale >= 1 else 250
    return [
        Arm.parse(f"cpu-preset=cpu:budget=0,max_iters={iters}", stage="cpu-config"),
        Arm.parse(
            f"nanogpt-cpu-config=nanogpt:iters={iters},learning_rate=3e-4,min_lr=3e-5",
            stage="cpu-config",
        ),
    ]


def stage1_arms(scale: float) -> list[Arm]:
    b = 60 * scale
    base = {**NEW, "budget": b}
    specs = [
        _spec(f"muon-lr{lr}", **{**base, "learning_rate": lr})
        for lr in (3e-3, 6e-3, 1.2e-2, 2.4e-2)
    ]
    specs += [
        _spec(f"adamw-lr{lr}", **{**base, "optimizer": "adamw", "learning_rate": lr})
        for lr in (3e-3, 6e-3)
    ]
    mid = {**base, "learning_rate": 6e-3}
    specs += [
        _spec("old-cpu-fast-fp32", dtype="float32", budget=b),
        _spec("shape-b24", **{**mid, "batch_size": 24}),
        _spec("shape-T128", **{**mid, "block_size": 128}),
        _spec("shape-192-4x6", **{**mid, "n_embd": 192, "n_head": 6}),
        _spec("shape-128-6x4", **{**mid, "n_layer": 6}),
        _spec("cosine", **{**mid, "schedule": "cosine"}),
        _spec("no-zero-init", **{**mid, "zero_init": "false"}),
    ]
    # nanoGPT's speed on this machine, to set its --max_iters for the 120 s stage.
    specs.append(f"nanogpt-speed=nanogpt:iters={max(251, int(1000 * scale))}")
    return [Arm.parse(s, stage="explore") for s in specs]


def best(results: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    ok = [r for r in results if r["arm"].startswith(prefix) and "error" not in r]
    return min(ok, key=lambda r: r["val_loss_full"])


def stage2_arms(explore: list[dict[str, Any]], scale: float) -> list[Arm]:
    """The 120 s table: the recipe from stage 1's winners, and each choice switched off."""
    by_name = {r["arm"]: r for r in explore if "error" not in r}
    muon_lr = float(best(explore, "muon-lr")["spec"].split("learning_rate=")[1].split(",")[0])
    adamw_lr = float(best(explore, "adamw-lr")["spec"].split("learning_rate=")[1].split(",")[0])
    mid = by_name.get("muon-lr0.006", {}).get("val_loss_full", 99.0)
    shapes = {
        "base": {},
        "shape-b24": dict(batch_size=24),
        "shape-T128": dict(block_size=128),
        "shape-192-4x6": dict(n_embd=192, n_head=6),
        "shape-128-6x4": dict(n_layer=6),
    }
    scored = {k: by_name.get(k, {}).get("val_loss_full", 99.0) for k in shapes}
    scored["base"] = mid
    shape_name = min(scored, key=lambda k: scored[k])
    shape = shapes[shape_name]
    sched = "trapezoid" if mid <= by_name.get("cosine", {}).get("val_loss_full", 99.0) else "cosine"
    zero = mid <= by_name.get("no-zero-init", {}).get("val_loss_full", 99.0)
    b = 120 * scale
    recipe = {**NEW, **shape, "learning_rate": muon_lr, "schedule": sched, "budget": b}
    recipe["zero_init"] = "true" if zero else "false"
    # nanoGPT's loop time per iteration, measured in stage 1 on this machine, sets its iters.
    speed = by_name.get("nanogpt-speed")
    per_iter = speed["train_seconds"] / max(speed["iters"], 1) if speed else 0.03
    nano_iters = max(10, round(b / per_iter))
    other_shape = "base" if shape_name != "base" else sorted(scored, key=lambda k: scored[k])[1]
    specs = [
        _spec("recipe", **recipe),
        f"nanogpt-120s=nanogpt:iters={nano_iters}",
        _spec("recipe-adamw", **{**recipe, "optimizer": "adamw", "learning_rate": adamw_lr}),
        _spec(
            "recipe-cosine" if sched == "trapezoid" else "recipe-trapezoid",
            **{**recipe, "schedule": "cosine" if sched == "trapezoid" else "trapezoid"},
        ),
        _spec(
            "recipe-zero-init-" + ("off" if zero else "on"),
            **{**recipe, "zero_init": "false" if zero else "true"},
        ),
        _spec(
            f"recipe-{other_shape}",
            **{**{k: v for k, v in recipe.items() if k not in shape}, **shapes[other_shape]},
        ),
        _spec("recipe-bf16", **{**recipe, "dtype": "bfloat16"}),
        _spec("old-cpu-fast", budget=b),  # as the preset stands (bfloat16)
        _spec("recipe-2threads", **{**recipe, "threads": 2}),
        _spec("recipe-copy", **recipe),  # the same run on another core: the noise
        f"nanogpt-120s-copy=nanogpt:iters={nano_iters}",
    ]
    return [Arm.parse(s, stage="table") for s in specs]


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| stage | arm | cores | val (whole split) | iters | train s | tokens/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['stage']} | {r['arm']} | {r['cores']} | failed | | | |")
            continue
        rows.append(
            f"| {r['stage']} | {r['arm']} | {','.join(map(str, r['cores']))} "
            f"| {r['val_loss_full']:.4f} | {r['iters']} | {r['train_seconds']} "
            f"| {r['tokens_per_sec']:,} |"
        )
    return "\n".join(rows)


def recipe_plan(cores: list[int], args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The fixed-iteration pair on the first two cores; the stages share the rest."""
    fixed = [Running(a, [cores[i]], args, work) for i, a in enumerate(fixed_arms(args.scale))]
    rest, beside, done = cores[2:], list(fixed), []
    try:
        explore = run_all(stage1_arms(args.scale), rest, args, work, beside, done)
        table = run_all(stage2_arms(explore, args.scale), rest, args, work, beside, done)
        for run in beside:
            run.proc.wait()
            res = run.result()
            report(res, args)
            done.append(res)
        results = explore + table + done
    finally:
        for run in fixed:
            if run.proc.poll() is None:
                run.proc.kill()
    return results


def parse_cores(text: str) -> list[int]:
    cores: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cores += list(range(int(lo), int(hi or lo) + 1))
    return cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="our prepared data directory")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of training per arm")
    ap.add_argument("--arm", action="append", default=[], help="NAME=PRESET[:KEY=VALUE,...]")
    ap.add_argument("--swap", action="store_true", help="two arms: a second round, cores swapped")
    ap.add_argument("--plan", choices=("recipe",), default=None, help="the built-in ablation")
    ap.add_argument("--cores", default="0-1", help="cores to use, e.g. 0-15 or 0,2,4")
    ap.add_argument("--scale", type=float, default=1.0, help="scale every plan budget (dry run)")
    ap.add_argument("--nanogpt", type=Path, default=None, help="scratch copy of nanoGPT")
    ap.add_argument("--log", type=Path, default=None, help="append JSON lines here")
    ap.add_argument("--table", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args()
    cores = parse_cores(args.cores)
    arms = [Arm.parse(a, stage="pair") for a in args.arm]
    if (any(a.preset == "nanogpt" for a in arms) or args.plan) and args.nanogpt is None:
        raise SystemExit("error: nanoGPT arms need --nanogpt DIR (a scratch copy)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.plan:
            results = recipe_plan(cores, args, Path(tmp))
        else:
            results = run_all(arms, cores, args, Path(tmp))
            if args.swap:
                for a in arms:
                    a.stage = "swapped"
                results += run_all(arms, cores[::-1], args, Path(tmp))
    text = table(results)
    print(text)
    if args.table:
        args.table.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
