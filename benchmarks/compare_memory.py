"""Memory of a 4-pane compare on GPT-2 124M: the chat app, headless, runs F9 with four panes
on one ONNX model and reports the process's peak resident memory (VmHWM).

The model is a GPT-2-124M-shaped model with random weights (benchmarks/decode_speed.py builds
it), exported to ONNX fp32; memory does not depend on the weights' values. Each pane streams
`--new` tokens after a `--prompt-tokens` prompt, all four at once.

    python benchmarks/compare_memory.py --work-dir /tmp/ci_bench   # builds, exports, measures
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def prepare(work: Path) -> Path:
    from decode_speed import build_gpt2_shape

    from export.onnx_export import export_onnx

    path = build_gpt2_shape(work)
    if not (path / "model.onnx").exists():
        t0 = time.perf_counter()
        export_onnx(path, verify=False)
        print(f"exported in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return path


async def measure(model: Path, panes: int, prompt_tokens: int, new: int) -> None:
    from minigpt_tui.generation import load_backend
    from minigpt_tui.history import HistoryStore
    from minigpt_tui.sampling import SamplingSettings
    from minigpt_tui.tui.app import ChatApp
    from minigpt_tui.tui.screens.compare import CompareScreen

    start = rss_mb()
    app = ChatApp(
        lambda: load_backend(model, backend="onnx"),
        settings=SamplingSettings(temperature=0.8, seed=1, max_new_tokens=new),
        history=HistoryStore.memory(),
    )
    async with app.run_test(size=(160, 40)) as pilot:
        while app.chat.session is None:
            await pilot.pause(0.1)
        loaded = rss_mb()
        await pilot.press("f9")
        while not isinstance(app.screen, CompareScreen):
            await pilot.pause(0.05)
        screen = app.screen
        for _ in range(panes - 2):
            await pilot.press("ctrl+n")
        await pilot.pause()
        assert len(screen.panes) == panes
        screen.query_one("#compare-prompt").value = "ROMEO: " + "But soft, what light " * (
            prompt_tokens // 5
        )
        for pane in screen.panes:
            pane.finished.clear()
        t0 = time.perf_counter()
        await pilot.press("ctrl+g")
        while not all(p.finished.is_set() for p in screen.panes):
            await pilot.pause(0.2)
        seconds = time.perf_counter() - t0
        done = rss_mb()
        texts = [len(p.text) for p in screen.panes]
        stats = [str(p.query_one(".pane-stats").render()) for p in screen.panes]
    print(f"RSS before loading: {start[0]:.0f} MB")
    print(f"RSS with the model loaded (chat ready): {loaded[0]:.0f} MB")
    print(
        f"RSS after {panes} panes streamed {new} tokens each at once: {done[0]:.0f} MB; "
        f"peak (VmHWM) {done[1]:.0f} MB; {seconds:.1f}s"
    )
    print(f"characters per pane: {texts}")
    for s in stats:
        print("  pane:", s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--panes", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model = args.work_dir / "gpt2-124m-random"
        asyncio.run(measure(model, args.panes, args.prompt_tokens, args.new))
        return
    prepare(args.work_dir)
    # Measure in a fresh process: no torch (the ONNX path never imports it), no export memory.
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    raise SystemExit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
