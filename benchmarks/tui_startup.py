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

`--textual-floor` times, the same way and taking turns with chat, a Textual app with nothing
of ours in it (an Input, a Static that reads "ready │", a Footer): what Textual itself costs
on this machine, below which chat's startup cannot go.
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


def chat_command(model: str, backend: str, data_dir: str) -> str:
    return (
        f"MINIGPT_TUI_DATA_DIR={data_dir} {sys.executable} -m minigpt_tui chat "
        f"--model {model} --backend {backend} --no-history; sleep 5"
    )


def launch_once(command: str, timeout: float) -> tuple[float, bool]:
    """Seconds from launching `command` in a fresh 80x24 tmux pane to "ready │" on screen, and
    whether its python process mapped libtorch."""
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
        maps = Path(f"/proc/{pid}/maps").read_text() if pid else ""
        return elapsed, "libtorch" in maps
    finally:
        tmux(socket, "kill-server")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: bundled)")
    ap.add_argument("--backend", default="onnx", choices=("auto", "onnx", "torch"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--textual-floor", action="store_true", help="also time a bare Textual app")
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
        chat = chat_command(model, args.backend, tmp)
        bare_script = Path(tmp) / "bare_app.py"
        bare_script.write_text(BARE_APP)
        bare = f"{sys.executable} {bare_script}; sleep 5"
        launch_once(chat, args.timeout)  # warm the OS file cache
        times, floor, torch_loaded = [], [], False
        for _ in range(args.runs):
            t, loaded = launch_once(chat, args.timeout)
            times.append(t)
            torch_loaded |= loaded
            if args.textual_floor:
                floor.append(launch_once(bare, args.timeout)[0])
    print(f"model: {model}{note}")
    print(
        f"backend: {args.backend}; {args.runs} launches; {os.cpu_count()} CPUs; "
        f"python {sys.version.split()[0]}"
    )
    print(
        f"launch -> ready: median {statistics.median(times):.3f}s, "
        f"min {min(times):.3f}s, max {max(times):.3f}s"
    )
    if floor:
        print(
            f"bare Textual app (Input, Static, Footer), launch -> on screen: median "
            f"{statistics.median(floor):.3f}s, min {min(floor):.3f}s, max {max(floor):.3f}s"
        )
    if args.backend == "onnx":
        print("libtorch loaded in the chat process: " + ("YES (bug)" if torch_loaded else "no"))


if __name__ == "__main__":
    main()
