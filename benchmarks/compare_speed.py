"""Compare panes decoded together against each in its own thread, and what one batched step
costs.

1. The chat app, headless, opens the compare screen with four panes (each its own seed) on one
   ONNX model and runs them, first batched (minigpt_tui/streams.py's Lockstep: one onnxruntime
   call a step for all panes), then forked (each pane its own KV cache and thread, as before),
   alternating for --rounds rounds. Reported per mode: the aggregate tokens/s (all panes'
   tokens over the wall time from Ctrl+G until every pane has finished, screen updates
   included), the UI thread's CPU time, and the panes' own tokens/s figures. Both modes must
   write the same texts. Then the same decoding without the app (Lockstep.run against one
   thread per forked view), which leaves out what the screen's redraws take from the workers.
2. With --steps MODEL_DIR (an ONNX model directory, e.g. decode_bench.py's onnx-int8), the time
   of one OrtStreams.decode_batch step for 1 and for 4 streams (decode_bench.stream_costs),
   wall clock and per CPU-second.

    python benchmarks/compare_speed.py                      # the bundled model, 4 panes
    python benchmarks/compare_speed.py --new 500 --rounds 3 --steps /tmp/decode-bench/onnx-int8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


async def run_panes(
    model: str, batched: bool, panes: int, new: int
) -> tuple[float, float, list[str]]:
    """(aggregate tokens/s, tokens per CPU-second of the process, the panes' texts) for one
    run of the compare screen."""
    from minigpt_tui.generation import load_backend
    from minigpt_tui.history import HistoryStore
    from minigpt_tui.sampling import SamplingSettings
    from minigpt_tui.tui.app import ChatApp
    from minigpt_tui.tui.screens.compare import CompareScreen

    app = ChatApp(
        lambda: load_backend(model, backend="onnx"),
        settings=SamplingSettings(temperature=0.8, seed=1, max_new_tokens=new),
        history=HistoryStore.memory(),
    )
    specs = [f"temp=0.8 top_k=40 seed={i + 1} max={new}" for i in range(panes)]
    async with app.run_test(size=(200, 40)) as pilot:
        while app.chat.session is None or app.chat.backend is None:
            await pilot.pause(0.05)
        screen = CompareScreen(
            app.chat.backend,
            app.chat.session.tokenizer,
            app.chat.replies.backend_lock,
            app.settings,
            prompt="ROMEO:",
            specs=specs,
            batched=batched,
        )
        await app.push_screen(screen)
        await pilot.pause()
        assert (screen.lockstep is not None) == batched
        t0, cpu0, ui0 = time.perf_counter(), time.process_time(), ui_cpu()
        await pilot.press("ctrl+g")
        await pilot.pause(0.05)
        while screen.running:
            await pilot.pause(0.1)
        seconds, ui = time.perf_counter() - t0, ui_cpu() - ui0
        cpu = time.process_time() - cpu0
        tokens = sum(len(p.sampler.bits) for p in screen.panes if p.sampler is not None)
        stats = [str(p.query_one(".pane-stats").render()) for p in screen.panes]
        texts = [p.text for p in screen.panes]
    print(f"  {'batched' if batched else 'forked '}: {tokens / seconds:7.1f} tokens/s", end="")
    print(f", {tokens / cpu:7.1f} per CPU-s ({tokens} tokens in {seconds:.2f} s, ", end="")
    print(f"{cpu:.2f} CPU-s, {ui:.2f} of them the UI thread's)", end="")
    print(f"; panes: {' | '.join(stats)}")
    return tokens / seconds, tokens / cpu, texts


def without_ui(model: str, panes: int, new: int) -> dict[bool, tuple[float, float]]:
    """The decoding alone, no app: aggregate (tokens/s, tokens per CPU-second) of Lockstep.run,
    and of one thread per forked view (each running its Generation), on the panes' settings."""
    import threading

    from minigpt_tui.generation import Generation, load_backend
    from minigpt_tui.sampling import SamplingSettings
    from minigpt_tui.streams import lockstep, stream_slots
    from minigpt_tui.tui.widgets.compare_pane import SurprisalSampler
    from model.backend import Backend

    backend = load_backend(model, backend="onnx")
    tok = backend.info.tokenizer()
    batch = lockstep(backend, panes)
    views = [s.backend for s in stream_slots(backend, panes, threading.Lock())]
    assert batch is not None

    def generations(backends: list[Backend]) -> list[Generation]:
        out = []
        for i, b in enumerate(backends):
            s = SamplingSettings(temperature=0.8, top_k=40, seed=i + 1, max_new_tokens=new)
            out.append(Generation(b, tok, tok.encode("ROMEO:"), s, sampler=SurprisalSampler(s)))
        return out

    together, apart = generations([backend] * panes), generations(views)
    t0, c0 = time.perf_counter(), time.process_time()
    batch.run(together, lambda i, e: None, lambda i: None)
    t1, c1 = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=lambda g=g: list(g)) for g in apart]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t2, c2 = time.perf_counter(), time.process_time()
    assert [g.text for g in together] == [g.text for g in apart]
    tokens = sum(g.stats.new_tokens for g in together)
    return {
        True: (tokens / (t1 - t0), tokens / (c1 - c0)),
        False: (tokens / (t2 - t1), tokens / (c2 - c1)),
    }


def ui_cpu() -> float:
    """CPU seconds of this process's main thread (the app's event loop: the UI) so far."""
    fields = Path(f"/proc/self/task/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shakespeare-char")
    ap.add_argument("--panes", type=int, default=4)
    ap.add_argument("--new", type=int, default=500, help="tokens per pane")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=Path, help="also time decode_batch steps on this ONNX model")
    args = ap.parse_args()

    cpus = len(os.sched_getaffinity(0))
    print(f"CPU {_cpu_name()}, this process on {cpus} CPU(s); load {os.getloadavg()[0]:.1f}")
    print(f"{args.panes} panes x {args.new} tokens on {args.model}, {args.rounds} rounds:")
    rates: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    texts: dict[bool, list[str]] = {}
    for _ in range(args.rounds):
        for batched in (True, False):
            wall, cpu, texts[batched] = asyncio.run(
                run_panes(args.model, batched, args.panes, args.new)
            )
            rates[batched].append((wall, cpu))
    assert texts[True] == texts[False], "batched and forked panes wrote different texts"
    report("in the app", rates)
    alone: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for batched, rate in without_ui(args.model, args.panes, args.new).items():
            alone[batched].append(rate)
    report("decoding alone (no app)", alone)
    if args.steps is not None:
        from decode_bench import stream_costs

        for clock, unit in ((time.perf_counter, "wall clock"), (time.process_time, "CPU time")):
            one, four = stream_costs({"m": args.steps}, 1, 4, 100 * args.rounds, clock)["m"]
            print(
                f"{args.steps.name} decode_batch step, 1 thread ({unit}): 1 stream "
                f"{one * 1e3:.1f} ms, 4 streams {four * 1e3:.1f} ms ({four / one:.2f}x)"
            )


def report(what: str, rates: dict[bool, list[tuple[float, float]]]) -> None:
    """Best and median of each mode, wall clock and per CPU-second, and batched / forked."""
    best = {}
    for batched, name in ((True, "batched"), (False, "forked")):
        wall, cpu = [r[0] for r in rates[batched]], [r[1] for r in rates[batched]]
        best[batched] = (max(wall), max(cpu))
        print(
            f"{what}, {name}: {max(wall):.1f} tokens/s (median {statistics.median(wall):.1f}), "
            f"{max(cpu):.1f} per CPU-second (median {statistics.median(cpu):.1f})"
        )
    print(
        f"{what}, batched / forked (best): {best[True][0] / best[False][0]:.2f}x wall clock, "
        f"{best[True][1] / best[False][1]:.2f}x per CPU-second"
    )


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
