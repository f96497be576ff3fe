"""Concurrent runs on one machine (issue 24): how much a training slows beside another training
or beside a chat that streams replies, for this project and for nanoGPT's own train.py.

Scenarios, each timed as the wall time of every training process (start to exit):

    alone        one training
    alone-noreg  ours only: one training with the job registry switched off (the code as it
                 was before model/jobs.py: a run alone must be as fast, within 3%)
    pair         two trainings started together (each <= 2.3x alone)
    chat         one training while a reply loop streams (training <= 1.3x alone)
    chat-noyield ours only: the same with MINIGPT_YIELD=0, the reply taking a core from the
                 training instead of yielding to it (model/jobs.py; measured 1.73x)
    pair-noreg   with --today: two of ours with the registry off (issue 24 measured 10x)

Beside "chat" the replies' speed is reported too: new tokens per second in the 2 s before the
trainings start and while they run, and the longest wait for a token within a reply. The
reply loop runs in a session of its own, as a chat in another terminal (with the kernel's
autogroups a thread's priority counts only within its own session). The benchmark's jobs have
a registry of their own (unless MINIGPT_JOBS_DIR says otherwise), so that no other job of the
user's changes their threads.

The reply loop is `python benchmarks/concurrency.py --reply-loop CKPT`: what `chat --follow`
does for each reply on its torch backend (minigpt_tui.generation.load_backend(path, "torch"),
then iterating a Generation of --reply-tokens tokens, as chat's reply worker does:
minigpt_tui/tui/reply.py), one reply after another with --reply-gap seconds
between them (0: replies back to back, the worst case), from a checkpoint of the cpu preset.
The same loop runs beside nanoGPT's training.

Ours: `minigpt-tui train --preset cpu --max-iters N` on Tiny Shakespeare prepared by
`data prepare shakespeare --from-file`. nanoGPT: its train.py as it is, with the README's CPU
command for the shakespeare_char configuration and --max_iters=N --lr_decay_iters=N, run in a
copy of it (its prepare.py reads the same text as input.txt, so it downloads nothing).
Repeats are interleaved (ours, nanoGPT, ours, ...), and every run prints `uptime` first:
figures are only meaningful when the load before a run is < 1.

    python benchmarks/concurrency.py --repeats 3            # the issue's settings
    python benchmarks/concurrency.py --iters 5 --repeats 1 --no-final-eval  # a quick check
    python benchmarks/concurrency.py --systems ours --only alone,chat,chat-noyield  # some
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (a worktree one level deeper finds it too)
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared").is_dir()), ROOT / "shared")
NO_REGISTRY = "/dev/null/minigpt-jobs"  # a directory that cannot exist: registry off
REPLY_ALONE = 2.0  # seconds of replies timed before the trainings start


def sh(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def cpu_name() -> str:
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def minigpt(*args: str) -> list[str]:
    return [sys.executable, "-m", "minigpt_tui", *args]


class Setup:
    """The prepared data and commands of both systems, in a scratch directory."""

    def __init__(
        self, work: Path, iters: int, text: Path, nanogpt: Path, final_eval: bool = True
    ) -> None:
        self.work, self.iters, self.final_eval = work, iters, final_eval
        self.data = work / "data"
        if not self.data.exists():
            subprocess.run(
                minigpt("data", "prepare", "shakespeare", "--from-file", str(text), "--out",
                        str(self.data)),
                check=True, capture_output=True,
            )  # fmt: skip
        self.nanogpt = work / "nanoGPT"
        if not self.nanogpt.exists():
            shutil.copytree(nanogpt, self.nanogpt)
            char = self.nanogpt / "data" / "shakespeare_char"
            shutil.copy(text, char / "input.txt")
            subprocess.run([sys.executable, "prepare.py"], cwd=char, check=True,
                           capture_output=True)  # fmt: skip
        self.model = work / "reply-model"  # what the reply loop generates from
        if not (self.model / "latest").exists():
            subprocess.run(self.ours(self.model, 20), check=True, capture_output=True)

    def ours(self, out: Path, iters: int | None = None) -> list[str]:
        n = str(iters or self.iters)
        return minigpt("train", "--data", str(self.data), "--out", str(out), "--force",
                       "--preset", "cpu", "--max-iters", n, "--device", "cpu",
                       "--final-eval" if self.final_eval else "--no-final-eval")  # fmt: skip

    def theirs(self, out: Path) -> list[str]:
        n = str(self.iters)
        return [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
                "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
                f"--max_iters={n}", f"--lr_decay_iters={n}", "--dropout=0.0",
                f"--out_dir={out}"]  # fmt: skip


def timed(
    cmds: list[list[str]], cwd: Path, env: dict[str, str], reply: list[str] | None
) -> tuple[list[float], Replies | None]:
    """Start `cmds` together (and the reply loop, if any, first: once it streams, REPLY_ALONE
    seconds of replies alone); each one's wall seconds, and the replies' speed alone and beside
    the trainings."""
    print(f"    uptime: {sh(['uptime']).strip()}", flush=True)
    loop, log = None, None
    if reply is not None:
        fd, name = tempfile.mkstemp(prefix="replies-", suffix=".log")
        os.close(fd)
        log = Path(name)
        # In a session of its own, as a chat in another terminal: with the kernel's autogroups
        # (sched_autogroup_enabled) the CPUs are shared between sessions first, and a thread's
        # priority only counts within its own session.
        loop = subprocess.Popen([*reply, "--reply-log", str(log)], env=env,
                                stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        while not log.read_text().strip():  # loaded and streaming
            if loop.poll() is not None:
                raise SystemExit("the reply loop failed")
            time.sleep(0.1)
        time.sleep(REPLY_ALONE)
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c in cmds]  # fmt: skip
    seconds = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a training failed ({p.args}):\n{err[-2000:]}")
        seconds.append(time.monotonic() - t0)
    t1 = time.monotonic()
    replies = None
    if loop is not None and log is not None:
        loop.terminate()
        loop.wait()
        replies = reply_stats(log.read_text(), t0 - REPLY_ALONE, t0, t1)
        log.unlink()
    return seconds, replies


@dataclass
class Replies:
    """The reply loop's speed alone (the REPLY_ALONE seconds before the trainings) and beside
    them: new tokens per second, and the longest wait for a token within a reply (from the
    reply's start for its first token) in milliseconds."""

    alone_tps: float
    beside_tps: float
    alone_gap_ms: float
    beside_gap_ms: float


def reply_stats(log: str, start: float, t0: float, t1: float) -> Replies:
    """Replies from the loop's log (lines `reply kind time`, kind s: started, t: a token)."""
    tokens = {"alone": 0, "beside": 0}
    gaps = {"alone": 0.0, "beside": 0.0}
    last: dict[str, float] = {}
    for line in log.splitlines():
        fields = line.split()
        if len(fields) != 3:  # the last line, cut short when the loop was stopped
            continue
        reply, kind, when = fields
        t = float(when)
        if kind == "t" and reply in last:
            span = "alone" if start <= t < t0 else "beside" if t0 <= t <= t1 else ""
            if span:
                tokens[span] += 1
                gaps[span] = max(gaps[span], t - last[reply])
        last[reply] = t
    return Replies(tokens["alone"] / (t0 - start), tokens["beside"] / (t1 - t0),
                   gaps["alone"] * 1000, gaps["beside"] * 1000)  # fmt: skip


def scenarios(today: bool, only: list[str], systems: list[str]) -> list[tuple[str, str]]:
    out = [(s, "ours") for s in ("alone", "alone-noreg", "pair", "chat", "chat-noyield")]
    out += [(s, "nanoGPT") for s in ("alone", "pair", "chat")]
    if today:
        out.append(("pair-noreg", "ours"))
    return [(s, y) for s, y in out if (not only or s in only) and y in systems]


def run_one(
    setup: Setup, scenario: str, system: str, args: argparse.Namespace
) -> tuple[list[float], Replies | None]:
    env = dict(os.environ)
    env.setdefault("MINIGPT_JOBS_DIR", str(setup.work / "jobs"))  # this benchmark's jobs only
    if scenario.endswith("noreg"):
        env["MINIGPT_JOBS_DIR"] = NO_REGISTRY
    if scenario == "chat-noyield":
        env["MINIGPT_YIELD"] = "0"  # the reply takes a core from the training (before yielding)
    n = 2 if scenario.startswith("pair") else 1
    outs = [setup.work / "runs" / f"{system}-{scenario}-{i}" for i in range(n)]
    if system == "ours":
        cmds, cwd = [setup.ours(o) for o in outs], ROOT
    else:
        cmds, cwd = [setup.theirs(o) for o in outs], setup.nanogpt
    reply = None
    if scenario.startswith("chat"):
        reply = [sys.executable, __file__, "--reply-loop", str(setup.model), "--reply-gap",
                 str(args.reply_gap), "--reply-tokens", str(args.reply_tokens)]  # fmt: skip
    return timed(cmds, cwd, env, reply)


def reply_loop(path: Path, gap: float, tokens: int, log: Path | None) -> None:
    """Replies one after another, as `chat --follow` makes each one (torch backend): its
    worker iterates a Generation (minigpt_tui/tui/reply.py), as here. With `log`, a line per
    reply start and per token (monotonic seconds, comparable across processes)."""
    sys.path.insert(0, str(ROOT))
    from minigpt_tui.generation import Generation, load_backend
    from minigpt_tui.sampling import SamplingSettings

    backend = load_backend(path, "torch")
    tokenizer = backend.info.tokenizer()
    prompt = tokenizer.encode("ROMEO:\n")
    out = open(log, "a", buffering=1) if log else None  # noqa: SIM115 (written until killed)
    seed = 0
    while True:
        settings = SamplingSettings(temperature=0.8, top_k=40, max_new_tokens=tokens, seed=seed)
        if out:
            out.write(f"{seed} s {time.monotonic()}\n")
        for _ in Generation(backend, tokenizer, prompt, settings, alternatives=5):
            if out:
                out.write(f"{seed} t {time.monotonic()}\n")
        seed += 1
        time.sleep(gap)


def report(times: dict[tuple[str, str], list[float]], speeds: dict[str, list[Replies]]) -> None:
    print("\nmedian wall seconds per training (x: over the same system alone)")
    print(f"{'scenario':<12} {'ours':>14} {'nanoGPT':>14}")
    for scenario in ("alone", "alone-noreg", "pair", "chat", "chat-noyield", "pair-noreg"):
        cells = []
        for system in ("ours", "nanoGPT"):
            got = times.get((scenario, system))
            alone = times.get(("alone", system))
            if not got:
                cells.append(f"{'-':>14}")
                continue
            med = statistics.median(got)
            ratio = f" {med / statistics.median(alone):.2f}x" if alone else ""
            cells.append(f"{med:>8.1f}{ratio:>6}")
        print(f"{scenario:<12} {cells[0]} {cells[1]}")
    if speeds:
        print("\nthe replies in chat (median tokens/s; longest wait for a token, ms)")
        print(f"{'':<20} {'alone':>14} {'beside':>14}")
        for name, got in speeds.items():
            alone = statistics.median(r.alone_tps for r in got)
            beside = statistics.median(r.beside_tps for r in got)
            wait_alone = max(r.alone_gap_ms for r in got)
            wait_beside = max(r.beside_gap_ms for r in got)
            print(f"{name:<20} {alone:>6.0f} {wait_alone:>7.0f} {beside:>6.0f} {wait_beside:>7.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iters", type=int, default=300, help="--max-iters of every training")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reply-gap", type=float, default=0.0, help="seconds between two replies")
    p.add_argument("--reply-tokens", type=int, default=200)
    p.add_argument(
        "--no-final-eval",
        dest="final_eval",
        action="store_false",
        help="ours without its final validation (quick checks; the issue's figures include it)",
    )
    p.add_argument("--today", action="store_true", help="also two of ours, registry off")
    p.add_argument(
        "--only", type=lambda v: v.split(","), default=[], help="these scenarios (a,b,...)"
    )
    p.add_argument(
        "--systems", type=lambda v: v.split(","), default=["ours", "nanoGPT"], help="ours,nanoGPT"
    )
    p.add_argument("--text", type=Path, default=SHARED / "data" / "tinyshakespeare.txt")
    p.add_argument("--nanogpt", type=Path, default=SHARED / "anchors" / "nanoGPT")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: temp)")
    p.add_argument("--reply-loop", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--reply-log", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reply_loop is not None:
        reply_loop(args.reply_loop, args.reply_gap, args.reply_tokens, args.reply_log)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="concurrency-"))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs; --max-iters {args.iters}; work in {work}")
    setup = Setup(work, args.iters, args.text, args.nanogpt, args.final_eval)
    times: dict[tuple[str, str], list[float]] = {}
    speeds: dict[str, list[Replies]] = {}
    for r in range(args.repeats):
        for scenario, system in scenarios(args.today, args.only, args.systems):
            print(f"[{r + 1}/{args.repeats}] {system} {scenario}", flush=True)
            secs, replies = run_one(setup, scenario, system, args)
            print(f"    {', '.join(f'{s:.1f}s' for s in secs)}", flush=True)
            times.setdefault((scenario, system), []).extend(secs)
            if replies is not None:
                print(f"    replies: {replies.alone_tps:.0f} tokens/s alone (longest wait "
                      f"{replies.alone_gap_ms:.0f} ms), {replies.beside_tps:.0f} tokens/s "
                      f"beside the training (longest wait {replies.beside_gap_ms:.0f} ms)",
                      flush=True)  # fmt: skip
                speeds.setdefault(f"{system} {scenario}", []).append(replies)
    report(times, speeds)


if __name__ == "__main__":
    main()
