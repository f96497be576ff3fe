"""Cold start of `minigpt-tui generate --max-tokens 1` (issue 25), in wall and CPU time.

Each run is a fresh process (`python -m minigpt_tui generate --max-tokens 1 -t 0 PROMPT` on
the bundled model unless --model says otherwise); its wall time is timed here and its CPU time
(user + system, from the child's rusage) is reported beside it: CPU time is what to compare on
a busy machine, wall time is the target's measure on a quiet one. Several variants can be
timed in turn (A B A B ...): another checkout of the project (run from its directory, with
this Python) or an environment variable that the child sees:

    python benchmarks/cold_start.py                          # 11 runs of this checkout
    python benchmarks/cold_start.py --runs 21 --variant main=/work/main
    python benchmarks/cold_start.py --variant typer026=PYTHONPATH=/tmp/typer026
    python benchmarks/cold_start.py --importtime             # the slowest imports, once

`--importtime` runs it once more under `python -X importtime` and prints the imports that took
longest (cumulative), which is where a cold start's time goes before the model loads.

Every variant's own packages are byte-compiled first (`compile_bytecode`), as pip does when it
installs a wheel: with PYTHONDONTWRITEBYTECODE set, or after an edit, each start would
otherwise compile the changed modules from source (~0.1 s for the chat's 50 modules).
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def command(model: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "minigpt_tui", "generate", "--max-tokens", "1", "-t", "0"]
    return [*cmd, *(["--model", model] if model else []), "To be"]


Variant = tuple[Path, dict[str, str]]  # the directory it runs in, its environment
PACKAGES = ("minigpt_tui", "model", "export")


def compile_bytecode(checkout: Path) -> None:
    """Write the checkout's packages' bytecode (__pycache__, ignored by git) if it is stale."""
    for package in PACKAGES:
        if (checkout / package).is_dir():
            compileall.compile_dir(checkout / package, quiet=1)


def run_once(cmd: list[str], variant: Variant) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run; it must succeed."""
    cwd, env = variant
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def import_times(cmd: list[str], variant: Variant, top: int) -> None:
    """Print the `top` slowest imports (cumulative microseconds) of one run."""
    cwd, env = variant
    out = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True
    ).stderr
    rows = []
    for line in out.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, cum_us, name = (p.strip() for p in line.replace(":", "|", 1).split("|"))
        rows.append((int(cum_us), int(self_us), name))
    print(f"slowest imports (cumulative, self; microseconds), {len(rows)} modules in all:")
    for cum, own, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cum:>8} {own:>8}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: the bundled model")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR|NAME=VAR=VALUE",
        help="another variant: a checkout to run from, or an environment variable (repeatable)",
    )
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    cmd = command(args.model)
    variants: dict[str, Variant] = {"this": (ROOT, dict(os.environ))}
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        if "=" in rest:
            var, _, value = rest.partition("=")
            variants[name] = (ROOT, {**os.environ, var: value})
        else:
            variants[name] = (Path(rest), dict(os.environ))
    for cwd, _ in variants.values():
        compile_bytecode(cwd)
    for variant in variants.values():  # warm the file cache
        run_once(cmd, variant)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, variant in variants.items():
            results[name].append(run_once(cmd, variant))
    print(f"{' '.join(cmd[1:])}; load average {os.getloadavg()[0]:.1f}; {args.runs} runs each")
    for name, rows in results.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        print(
            f"{name:>10}: wall median {statistics.median(walls):.3f} s (min {min(walls):.3f}), "
            f"CPU median {statistics.median(cpus):.3f} s (min {min(cpus):.3f})"
        )
    if args.importtime:
        for name, variant in variants.items():
            print(f"[{name}]", end=" ")
            import_times(cmd, variant, 25)


if __name__ == "__main__":
    main()
