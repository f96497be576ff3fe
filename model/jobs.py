"""This user's running minigpt-tui jobs, so that each process takes its fair share of the CPUs.

Two CPU trainings on a 2-core machine, each with 2 OpenMP threads, once took 10x as long as
one alone (issue 24): a thread that waits at a barrier spins on a core that the other process
holds. With one thread a process runs no OpenMP team, so nothing spins. So every training and
inference process registers itself in a per-user registry (one small JSON file per process,
named by its pid), and takes

- training: an even share of the CPUs that busy inference jobs leave, never more than it
  would use alone (torch's default, or OMP_NUM_THREADS); re-checked every second of training,
  since torch.set_num_threads applies from the next operation. An inference job that yields
  (below) leaves it every CPU;
- inference (generate, chat, score, eval): 1 thread while a training runs; and on Linux a
  generation's network calls (generate, chat) yield to the training (`Yielding`): they run
  on a thread of their own at nice YIELD_NICE, so a reply streams in the time the training
  leaves instead of taking a core from it (a training beside back-to-back replies took 1.73x
  as long when it gave up a core). The UI thread keeps its priority. A thread's priority
  counts only against threads of its own session when the kernel groups sessions
  (autogroups, on by default on most desktops), so for a training in another terminal the
  job also lowers its session's autogroup while it replies. Where neither would count
  (another cgroup, no autogroups to lower), or off Linux, the entry does not say `yields`
  and the training leaves it a core. Re-checked every second too: normal priority again
  within a second of the training's end.

A process that is alone keeps exactly the threads it has today. Entries of processes that have
ended (a crash, kill -9) are stale: a dead pid, or a live pid that belongs to a newer process
(its start time differs), is ignored and removed. The registry never stops a job: a directory
that cannot be written, or a file that cannot be read, only means a job counts no others.

No torch here: the train command reads the registry before torch is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from model import userfile

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor  # imported when first used (startup time)

R = TypeVar("R")

ENV_DIR = "MINIGPT_JOBS_DIR"  # where the registry lives (tests, or several users' own choice)
RECHECK_SECONDS = 1.0
KINDS = ("train", "infer")


@dataclass(frozen=True)
class Job:
    """One registered process: its pid and start time (which tell a stale entry), what it
    does, and whether it is computing now (an inference job between replies is idle)."""

    pid: int
    started: str
    kind: str
    busy: bool = True
    yields: bool = False  # an inference job that computes at idle priority beside a training


def registry_dir() -> Path:
    """The per-user registry: $MINIGPT_JOBS_DIR, else $XDG_RUNTIME_DIR/minigpt-tui/jobs, else
    a directory of this user's in the system's temporary directory."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "minigpt-tui" / "jobs"
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"minigpt-tui-{uid}" / "jobs"


def usable(directory: Path) -> bool:
    """Whether `directory` is a real directory of this user's (in a shared temporary directory
    another user could have made it first, to feed us entries)."""
    try:
        st = directory.lstat()
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return stat.S_ISDIR(st.st_mode) and mine


def process_start(pid: int) -> str:
    """When process `pid` started, in the kernel's clock ticks since boot ("" where /proc is
    missing, or the process is gone); a reused pid has a different start."""
    try:
        line = userfile.read_text(f"/proc/{pid}/stat", 4096)
    except (OSError, ValueError):
        return ""
    fields = line[line.rfind(")") + 2 :].split()  # the name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else ""


def alive(job: Job) -> bool:
    """Whether the process that wrote `job` still runs (not a later one with its pid)."""
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the pid
        return False
    except OSError:
        return False
    return process_start(job.pid) == job.started


def _read(path: Path) -> Job | None:
    try:
        raw = json.loads(userfile.read_bytes(path, 4096))  # a FIFO or device is refused
        job = Job(
            int(raw["pid"]),
            str(raw["started"]),
            str(raw["kind"]),
            bool(raw["busy"]),
            bool(raw.get("yields", False)),  # entries of older versions have no "yields"
        )
    except (OSError, ValueError, KeyError, TypeError):  # UserFileError is a ValueError
        return None
    return job if job.kind in KINDS else None


def others(directory: Path | None = None, me: int | None = None) -> list[Job]:
    """The live jobs in the registry other than this process; stale entries are removed."""
    directory = directory or registry_dir()
    me = os.getpid() if me is None else me
    found: list[Job] = []
    if not usable(directory):
        return found
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return []
    for path in paths[:4096]:  # bounded, whatever the directory holds
        job = _read(path)
        if job is None or job.pid == me:
            continue
        if not alive(job):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(job)
    return found


def fair_threads(kind: str, cpus: int, alone: int, jobs: list[Job]) -> int:
    """Threads for a `kind` job among the other live `jobs` on `cpus` CPUs: at least 1, at
    most `alone` (what it uses by itself) and never more than the CPUs.

    Training splits the CPUs that busy inference jobs leave evenly among the trainings;
    inference takes 1 thread while any training runs.
    """
    alone = max(1, min(alone, cpus))
    trainings = sum(1 for j in jobs if j.kind == "train")
    if kind == "infer":
        return 1 if trainings else alone
    busy_inference = sum(1 for j in jobs if j.kind == "infer" and j.busy and not j.yields)
    free = max(1, cpus - busy_inference)
    return max(1, min(alone, free // (trainings + 1)))


class Registration:
    """This process's entry in the registry, written atomically, removed when it ends."""

    def __init__(self, kind: str, directory: Path | None = None) -> None:
        self.directory = directory or registry_dir()
        self.job = Job(os.getpid(), process_start(os.getpid()), kind, busy=kind == "train")
        self.path = self.directory / f"{self.job.pid}.json"
        self._busy = 0
        self._lock = threading.Lock()
        self.written = False

    def write(self) -> None:
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.directory.mkdir(exist_ok=True, mode=0o700)
            if not usable(self.directory):
                self.written = False
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".job-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(self.job), f)
            os.replace(tmp, self.path)
            self.written = True
        except OSError:
            self.written = False  # a job without an entry runs exactly as before

    def remove(self) -> None:
        if self.written:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.written = False

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark this inference job busy while the block runs (nested uses count once)."""
        with self._lock:
            self._busy += 1
            if self._busy == 1:
                self._set_busy(True)
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0:
                    self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.job = Job(self.job.pid, self.job.started, self.job.kind, busy, self.job.yields)
        if self.written:
            self.write()

    def set_yields(self, yields: bool) -> None:
        """Say whether this job's computing yields to the trainings now (`Yielding`)."""
        with self._lock:
            if yields != self.job.yields and self.job.kind == "infer":
                self.job = Job(self.job.pid, self.job.started, self.job.kind, self.job.busy, yields)
                if self.written:
                    self.write()


class ThreadShare:
    """A training process's thread count, kept at its fair share: `update()` (called every
    step) re-reads the registry at most once a RECHECK_SECONDS and calls `set_threads` when
    the share changed. `alone` is what the process uses by itself."""

    def __init__(
        self,
        registration: Registration,
        alone: int,
        cpus: int,
        set_threads: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registration, self.alone, self.cpus = registration, alone, cpus
        self.set_threads, self.clock = set_threads, clock
        self.threads = alone
        self.checked = -float("inf")

    def update(self) -> int:
        now = self.clock()
        if now - self.checked >= RECHECK_SECONDS:
            self.checked = now
            jobs = others(self.registration.directory, self.registration.job.pid)
            share = fair_threads(self.registration.job.kind, self.cpus, self.alone, jobs)
            if share != self.threads:
                self.threads = share
                self.set_threads(share)
        return self.threads


_current: Registration | None = None


def join(kind: str) -> Registration:
    """Register this process (once; later calls return the first registration), removed at
    exit. Ranks of one torchrun job each register: they share the CPUs like any trainings. A
    process that starts training after it registered as inference counts as training."""
    global _current
    if _current is None:
        import atexit

        _current = Registration(kind)
        _current.write()
        atexit.register(_current.remove)
    elif kind == "train" and _current.job.kind != "train":  # a process that loaded a model
        _current.job = Job(_current.job.pid, _current.job.started, "train")
        _current.write()
    return _current


def busy() -> contextlib.AbstractContextManager[None]:
    """Mark this process busy for the block when it registered as inference; else nothing."""
    if _current is None or _current.job.kind != "infer":
        return contextlib.nullcontext()
    return _current.busy()


def training_running() -> bool:
    """Whether another live process of this user's is training."""
    return any(j.kind == "train" for j in others())


# While a training runs, an inference job computes at this nice value (10: a weight of 110
# against a normal thread's 1024). SCHED_IDLE, or nice 19, starved the replies: gaps of 1.7 s
# and 0.6 s between tokens beside a training, against 84 ms at 10 (benchmarks/RESULTS.md).
YIELD_NICE = 10
# Per-thread priorities are Linux's: elsewhere setpriority takes a whole process, and an
# inference job takes its thread from the training as before (as with MINIGPT_YIELD=0, which
# benchmarks/concurrency.py sets to measure that).
YIELDS = (
    sys.platform.startswith("linux")
    and hasattr(os, "setpriority")
    and os.environ.get("MINIGPT_YIELD") != "0"
)
AUTOGROUP = Path("/proc/self/autogroup")  # this session's share of the CPUs: "/autogroup-N nice K"
_lock = threading.Lock()
_thread: ThreadPoolExecutor | None = None
_group_users = 0  # Yieldings that hold this session's autogroup lowered
_group_before: int | None = None  # its nice value before, restored when the last one ends


def _lower_this_thread() -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), YIELD_NICE)


def yielding_thread() -> ThreadPoolExecutor:
    """This process's one thread at nice YIELD_NICE, started on first use. A thread of its own,
    since with the usual RLIMIT_NICE of 0 a thread can lower its priority but never raise it
    again: the calling thread (a pool thread of the UI's) keeps its priority."""
    global _thread
    from concurrent.futures import ThreadPoolExecutor

    with _lock:
        if _thread is None:
            _thread = ThreadPoolExecutor(1, "minigpt-yield", initializer=_lower_this_thread)
        return _thread


def _autogroup_nice() -> int | None:
    try:
        return int(userfile.read_text(AUTOGROUP, 256).split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _write_autogroup(nice: int) -> bool:
    try:
        with open(AUTOGROUP, "w") as f:  # a /proc file: written in place
            f.write(str(nice))
        return True
    except OSError:  # no autogroups, or EAGAIN: the kernel takes ten changes a second
        return False


def lower_session() -> bool:
    """Lower this session's autogroup to YIELD_NICE (kept when the user's own setting is
    lower still). With autogroups on, the kernel shares the CPUs between sessions (terminals)
    first, so a thread's priority counts only against threads of its own session: a chat in
    another terminal than the training yields only this way. Counted: `restore_session` puts
    the value back when the last user ends. Whether the session is lower now."""
    global _group_users, _group_before
    with _lock:
        if _group_users == 0:
            before = _autogroup_nice()
            if before is None or (before < YIELD_NICE and not _write_autogroup(YIELD_NICE)):
                return False
            _group_before = before
        _group_users += 1
        return True


def restore_session() -> None:
    global _group_users, _group_before
    with _lock:
        _group_users -= 1
        if _group_users == 0 and _group_before is not None:
            if _group_before < YIELD_NICE:
                _write_autogroup(_group_before)  # >= 0: no privilege needed
            _group_before = None


def _cgroup(pid: int | str) -> str:
    """The cgroup whose CPU weight process `pid` shares: cgroup v1's `cpu` controller's,
    else v2's one hierarchy ("?" when unknown: never equal to our own)."""
    try:
        lines = userfile.read_text(f"/proc/{pid}/cgroup", 65536).splitlines()
    except (OSError, ValueError):
        return "?"
    fields = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    v1 = [path for _, names, path in fields if "cpu" in names.split(",")]
    v2 = [path for number, _, path in fields if number == "0"]
    return (v1 or v2 or ["?"])[0]


def same_session(pid: int) -> bool:
    """Whether process `pid` is in this process's session (so in its autogroup)."""
    try:
        return os.getsid(pid) == os.getsid(0)
    except OSError:
        return False


def takes_effect(training: Job, session_lowered: bool) -> bool:
    """Whether our lowered priority counts against `training`: both in one cgroup (a cgroup's
    CPU weight is shared as a whole), and in one session (one autogroup), or our session
    lowered. Where it does not, the reply takes a core from the training as before."""
    if _cgroup("self") != _cgroup(training.pid):
        return False
    return session_lowered or same_session(training.pid)


class Yielding:
    """Where a generation's network calls run: in the calling thread, or, while this user's
    trainings run, in `yielding_thread` at nice YIELD_NICE with this session lowered too, so
    that the trainings keep all their threads (this job's entry says it `yields`) and the
    reply takes the time they leave. Re-checked at most once a RECHECK_SECONDS, so a reply
    that began beside a training computes at normal priority again within a second of its end.
    Use as a context manager: its end restores the session's priority."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.low = False
        self.session = False  # whether this Yielding holds the session lowered
        self.checked = -float("inf")

    def __enter__(self) -> Yielding:
        self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        self._set([])

    def update(self) -> bool:
        """Whether the next network call runs at low priority."""
        now = self.clock()
        reg = _current  # a training's own samples never yield: only inference jobs
        if YIELDS and reg and reg.job.kind == "infer" and now - self.checked >= RECHECK_SECONDS:
            self.checked = now
            jobs = others(reg.directory, reg.job.pid)
            self._set([j for j in jobs if j.kind == "train"])
        return self.low

    def _set(self, trainings: list[Job]) -> None:
        """Yield to these trainings (none: compute at normal priority, session restored)."""
        want = bool(trainings)
        # The session is lowered only for a training in another one (in ours it would slow
        # the training too, against everything else the machine runs).
        apart = want and not all(same_session(t.pid) for t in trainings)
        if apart and not self.session:
            self.session = lower_session()
        self.low = want and all(takes_effect(t, self.session) for t in trainings)
        if self.session and not (apart and self.low):
            restore_session()
            self.session = False
        if _current is not None:
            _current.set_yields(self.low)

    def call(self, fn: Callable[..., R], *args: object) -> R:
        """fn(*args), at low priority while a training runs."""
        if not self.update():
            return fn(*args)
        return yielding_thread().submit(fn, *args).result()
