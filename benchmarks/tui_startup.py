"""TUI startup: time from launching `minigpt-tui chat` to a usable screen.

"Usable" means the model is loaded and the message box has focus: the status bar then says
"ready" (the box is focused at mount, before loading ends). The app runs in a real terminal
(tmux, 80x24); the clock starts just before tmux launches the command and stops when
capture-pane first shows "ready │". Also checks, from /proc/PID/maps, that the ONNX path
never loaded libtorch.

Default model: the bundled one (`minigpt_tui/bundled/shakespeare-char`, ONNX backend). When
it is not installed, a stand-in of a similar shape (char vocabulary, 4 layers, 128 wide, block
256, random weights) is built and exported to ONNX in a temporary directory, and the output
says so.

    python benchmarks/tui_startup.py             # 5 launches
    python benchmarks/tui_startup.py --runs 10 --model runs/x --backend torch
    python benchmarks/tui_startup.py --textual-floor   # also a bare Textual app, interleaved
    python benchmarks/tui_startup.py --variant main=/path/to/main-checkout   # against another

`--textual-floor` times, the same way and taking turns with chat, a Textual app with nothing
of ours in it (an Input, a Static that reads "ready │", a Footer): what Textual itself costs
on this machine, below which chat's startup cannot go. Beside each wall time the CPU time
(user + system, /proc/PID/stat) the process had used when "ready" showed is reported: on a
busy machine, compare those. Each checkout's packages are byte-compiled first, as an
installed package is (see cold_start.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cold_start import compile_bytecode  # noqa: E402

from minigpt_tui.models import BUNDLED_DIR, DEFAULT_MODEL  # noqa: E402


def stand_in_model(target: Path) -> Path:
    from export.onnx_export import export_onnx
    from model import checkpoint, modeldir
    from model.config import GPTConfig
    from model.gpt import GPT
    from model.tokenizer import CharTokenizer

    text = "\n !$&',-.3:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    tok = CharTokenizer.from_text([text])
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=4, n_head=4, n_embd=128)
    checkpoint.save(target, GPT(cfg), modeldir.make_meta(cfg, tok, name="stand-in-char"))
    export_onnx(target, verify=False)
    return target


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10
    ).stdout


def python_pid(shell_pid: int) -> int | None:
    """The chat process: the python child of the pane's shell."""
    try:
        children = Path(f"/proc/{shell_pid}/task/{shell_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


BARE_APP = """
from textual.app import App
from textual.widgets import Footer, Input, Static

class Bare(App):
    def compose(self):
        yield Input()
        yield Static("ready │")
        yield Footer()

Bare().run()
"""


def chat_command(model: str, backend: str, data_dir: str, cwd: Path = ROOT) -> str:
    return (
        f"cd {cwd} && MINIGPT_TUI_DATA_DIR={data_dir} {sys.executable} -m minigpt_tui chat "
        f"--model {model} --backend {backend} --no-history; sleep 5"
    )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds the process has used so far (its threads, live and ended)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


Launch = tuple[float, float, bool]  # wall seconds, CPU seconds, libtorch mapped


def launch_once(command: str, timeout: float) -> Launch:
    """Seconds from launching `command` in a fresh 80x24 tmux pane to "ready │" on screen, the
    CPU seconds its python process had used by then, and whether it mapped libtorch."""
    socket = f"minigpt-bench-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    tmux(socket, "new-session", "-d", "-s", "b", "-x", "80", "-y", "24", command)
    try:
        while True:
            elapsed = time.perf_counter() - t0
            if "ready │" in tmux(socket, "capture-pane", "-p", "-t", "b"):
                break
            if elapsed > timeout:
                raise SystemExit(f"not ready after {timeout}s")
            time.sleep(0.005)
        pane_pid = int(tmux(socket, "display", "-p", "-t", "b", "#{pane_pid}").strip())
        pid = python_pid(pane_pid)
        cpu = cpu_seconds(pid)
        maps = Path(f"/proc/{pid}/maps").read_text() if pid else ""
        return elapsed, cpu, "libtorch" in maps
    finally:
        tmux(socket, "kill-server")


def summary(name: str, rows: list[Launch]) -> str:
    walls, cpus = [r[0] for r in rows], [r[1] for r in rows]
    return (
        f"{name:>12}: wall median {statistics.median(walls):.3f}s "
        f"(min {min(walls):.3f}, max {max(walls):.3f}), "
        f"CPU median {statistics.median(cpus):.3f}s (min {min(cpus):.3f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: bundled)")
    ap.add_argument("--backend", default="onnx", choices=("auto", "onnx", "torch"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--textual-floor", action="store_true", help="also time a bare Textual app")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also launch chat from another checkout, taking turns (repeatable)",
    )
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed (apt-get install tmux)")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        note = ""
        if model is None:
            bundled = BUNDLED_DIR / DEFAULT_MODEL
            if (bundled / "config.json").is_file():
                model = str(bundled)
            else:
                model = str(stand_in_model(Path(tmp) / "stand-in"))
                note = " (bundled model not installed: random-weight stand-in, same kind)"
        commands = {"chat": chat_command(model, args.backend, tmp)}
        compile_bytecode(ROOT)
        for spec in args.variant:
            name, _, where = spec.partition("=")
            compile_bytecode(Path(where))
            commands[f"chat {name}"] = chat_command(model, args.backend, tmp, Path(where))
        if args.textual_floor:
            bare_script = Path(tmp) / "bare_app.py"
            bare_script.write_text(BARE_APP)
            commands["bare Textual"] = f"{sys.executable} {bare_script}; sleep 5"
        for command in commands.values():
            launch_once(command, args.timeout)  # warm the OS file cache
        results: dict[str, list[Launch]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                results[name].append(launch_once(command, args.timeout))
    print(f"model: {model}{note}")
    print(
        f"backend: {args.backend}; {args.runs} launches each, taking turns; {os.cpu_count()} "
        f"CPUs; load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}"
    )
    print("launch -> ready (the bare app: launch -> on screen); CPU: the process's by then")
    for name, rows in results.items():
        print(summary(name, rows))
    if args.textual_floor:
        floor = results["bare Textual"]
        for name in commands:
            if name.startswith("chat"):
                extra = [c[0] - f[0] for c, f in zip(results[name], floor, strict=True)]
                extra_cpu = [c[1] - f[1] for c, f in zip(results[name], floor, strict=True)]
                print(
                    f"{name} above the floor, median of the pairs: wall "
                    f"{statistics.median(extra):+.3f}s, CPU {statistics.median(extra_cpu):+.3f}s"
                )
    if args.backend == "onnx":
        loaded = any(r[2] for rows in results.values() for r in rows)
        print("libtorch loaded in a chat process: " + ("YES (bug)" if loaded else "no"))


if __name__ == "__main__":
    main()
