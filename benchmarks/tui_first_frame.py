"""Chat's work up to its first frame with the model loaded, by figures a busy machine does not
change (issue 25): tui_startup.py's wall clock needs a quiet machine, these do not.

    python benchmarks/tui_first_frame.py count                 # widgets and style applies
    python benchmarks/tui_first_frame.py cpu --runs 15 --variant main=/path/to/main-checkout

`count` runs the chat headless (80x24) on the tests' fake model and counts, up to the first
frame after the status bar says "ready": the widgets in the app's registry, those of the chat
screen and of the settings panel, and the calls of Textual's style pass (`Stylesheet.apply`,
one per widget and per component class each time a widget is styled). Deterministic.

`cpu` launches `minigpt-tui chat --backend onnx --no-history` on the bundled model (a
temporary MINIGPT_TUI_DATA_DIR, as tui_startup.py does), headless (80x24) in a
pseudo-terminal, checkouts taking turns, and reports the process's CPU time (all threads,
`time.process_time()`) at the first frame after "ready"; the process then exits. Each
checkout's packages are byte-compiled first, as an installed package is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def count() -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from test_tui_support import make_app
    from textual.css.stylesheet import Stylesheet

    calls = 0
    apply = Stylesheet.apply

    def counted(self: Stylesheet, node: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        apply(self, node, **kwargs)  # type: ignore[arg-type]

    Stylesheet.apply = counted  # type: ignore[method-assign]

    async def run() -> None:
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            while app.chat.session is None or "ready" not in str(app.query_one("#status").render()):
                await pilot.pause(0.005)
            await pilot.pause()  # the frame that shows it
            screen = len(list(app.screen.walk_children()))
            panel = len(list(app.query_one("#settings").walk_children(with_self=True)))
            print(f"Stylesheet.apply calls {calls}, widgets: app {len(app._registry)}, ", end="")
            print(f"chat screen {screen}, settings panel {panel}")

    asyncio.run(run())


# Run in the launched process: headless, and print the CPU time at the first "ready" frame.
PROBE = """
import os, sys, time
from minigpt_tui.tui.app import ChatApp
from minigpt_tui.tui.chat.screen import ChatScreen

def done():
    print(f"CPU {time.process_time():.4f}", flush=True)
    os._exit(0)

mount = ChatScreen.on_mount
def on_mount(self):
    mount(self)
    self.watch(self.chat, "state", lambda s: s == "ready" and self.app.call_after_refresh(done))
ChatScreen.on_mount = on_mount
run = ChatApp.run
ChatApp.run = lambda self, *a, **k: run(self, headless=True, size=(80, 24))
from minigpt_tui.cli import main
sys.argv = ["minigpt-tui", "chat", "--backend", "onnx", "--no-history"]
main()
"""


def cpu_once(checkout: Path, data_dir: str) -> float:
    """One launch from `checkout` (its packages first on the path) in a pseudo-terminal."""
    env = dict(os.environ, PYTHONPATH=str(checkout), MINIGPT_TUI_DATA_DIR=data_dir)
    probe = shlex.join([sys.executable, "-c", PROBE])
    out = subprocess.run(
        ["script", "-qec", f"timeout 60 {probe}", "/dev/null"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    lines = [line for line in out.replace("\r", "").splitlines() if line.startswith("CPU ")]
    if not lines:
        raise SystemExit(f"no ready frame from {checkout}: {out[-500:]}")
    return float(lines[-1].split()[1])


def cpu(runs: int, variants: dict[str, Path]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cold_start import compile_bytecode

    for checkout in variants.values():
        compile_bytecode(checkout)
    print(f"load average {os.getloadavg()[0]:.1f}")
    seen: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as data_dir:
        for _ in range(runs):
            for name, checkout in variants.items():
                seen[name].append(cpu_once(checkout, data_dir))
    for name, values in seen.items():
        print(
            f"{name}: CPU s at the first ready frame, median {statistics.median(values):.3f}"
            f" (min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("count", "cpu"))
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--variant", action="append", default=[], help="NAME=DIR, another checkout")
    args = ap.parse_args()
    if args.what == "count":
        count()
        return
    variants = {"this": ROOT}
    for spec in args.variant:
        name, _, path = spec.partition("=")
        variants[name] = Path(path).resolve()
    cpu(args.runs, variants)


if __name__ == "__main__":
    main()
