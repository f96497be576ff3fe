"""Concurrent jobs share the CPUs (model/jobs.py): the fair-share rule, the registry's stale
entries, the re-check during training, and inference taking one thread beside a training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from model import jobs
from model.backend import SINGLE_THREAD_PARAMS, default_threads, spinning_pays
from model.jobs import Job, Registration, ThreadShare, fair_threads
from model.startup import RunOptions
from model.train import train
from tests.helpers import make_data

TRAIN, IDLE, BUSY = Job(1, "", "train"), Job(2, "", "infer", False), Job(3, "", "infer", True)


@pytest.mark.parametrize(
    ("kind", "cpus", "alone", "others", "want"),
    [
        ("train", 2, 2, [], 2),  # alone: exactly what it uses today
        ("train", 2, 1, [], 1),  # OMP_NUM_THREADS=1 stays 1
        ("train", 2, 2, [TRAIN], 1),  # two trainings on 2 cores: one thread each
        ("train", 2, 2, [TRAIN, TRAIN], 1),  # never fewer than one
        ("train", 8, 8, [TRAIN], 4),
        ("train", 8, 4, [TRAIN], 4),  # never more than alone
        ("train", 2, 2, [BUSY], 1),  # a reply streaming beside it takes a core
        ("train", 2, 2, [IDLE], 2),  # an idle chat takes nothing
        ("train", 8, 8, [BUSY, BUSY, TRAIN], 3),
        ("train", 2, 64, [], 2),  # never more than the machine has
        ("infer", 2, 2, [], 2),
        ("infer", 2, 2, [TRAIN], 1),  # inference yields to a training
        ("infer", 4, 4, [BUSY], 4),
    ],
)
def test_fair_share(kind: str, cpus: int, alone: int, others: list[Job], want: int) -> None:
    assert fair_threads(kind, cpus, alone, others) == want


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def register_other(directory: Path, pid: int, kind: str = "train", **kw: Any) -> Path:
    started = kw.pop("started", jobs.process_start(pid))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "started": started, "kind": kind, "busy": True}))
    return path


def test_live_entries_count_and_stale_ones_are_removed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = register_other(tmp_path, int(done.stdout), started="123")  # ended: a stale entry
    reused = register_other(tmp_path, os.getppid(), started="1")  # a pid now someone else's
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "odd.json").write_text(json.dumps({"pid": 1, "started": "", "kind": "x"}))
    live = register_other(tmp_path, sleeper.pid)
    assert jobs.others(tmp_path) == [Job(sleeper.pid, jobs.process_start(sleeper.pid), "train")]
    assert live.exists() and not dead.exists() and not reused.exists()
    sleeper.kill()
    sleeper.wait()
    assert jobs.others(tmp_path) == []
    assert not live.exists()


def test_registration_is_written_marked_busy_and_removed(tmp_path: Path) -> None:
    reg = Registration("infer", tmp_path)
    reg.write()
    me = os.getpid()
    assert jobs.others(tmp_path, me=-1) == [Job(me, jobs.process_start(me), "infer", False)]
    assert jobs.others(tmp_path) == []  # a process never counts itself
    with reg.busy():
        with reg.busy():  # nested (two panes streaming): busy until both end
            pass
        assert jobs.others(tmp_path, me=-1)[0].busy
    assert not jobs.others(tmp_path, me=-1)[0].busy
    reg.remove()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_registry_changes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    reg = Registration("train", blocker / "jobs")
    reg.write()  # no error: the job runs as it would alone
    assert not reg.written
    assert jobs.others(blocker / "jobs") == []


def test_thread_share_rechecks_at_intervals(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    now = [0.0]
    calls: list[int] = []
    reg = Registration("train", tmp_path)
    share = ThreadShare(reg, alone=2, cpus=2, set_threads=calls.append, clock=lambda: now[0])
    assert share.update() == 2 and calls == []  # alone: torch's threads are left as they are
    other = register_other(tmp_path, sleeper.pid)
    now[0] += jobs.RECHECK_SECONDS / 2
    assert share.update() == 2  # not re-read yet
    now[0] += jobs.RECHECK_SECONDS
    assert share.update() == 1 and calls == [1]
    other.unlink()  # the other training ended
    now[0] += jobs.RECHECK_SECONDS
    assert share.update() == 2 and calls == [1, 2]


def test_inference_takes_one_thread_while_a_training_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setenv(jobs.ENV_DIR, str(tmp_path))
    monkeypatch.setattr("model.backend.available_cpus", lambda: 4)
    assert default_threads(SINGLE_THREAD_PARAMS * 2) == 4
    register_other(tmp_path, sleeper.pid, "train")
    assert default_threads(SINGLE_THREAD_PARAMS * 2) == 1


def test_a_pool_spins_only_on_a_quiet_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    """Several decode threads of a lone generation spin between operators when the CPUs are
    otherwise idle, and sleep beside one of this user's trainings or on a loaded machine; the
    onnxruntime session is made accordingly, and never spins unless asked (the chat app)."""
    from export.onnx_export import export_onnx
    from export.ort_backend import make_session
    from tests.test_onnx import build

    monkeypatch.setenv(jobs.ENV_DIR, str(tmp_path))
    monkeypatch.setattr("model.backend.available_cpus", lambda: 2)
    load = [0.2]
    monkeypatch.setattr(os, "getloadavg", lambda: (load[0], 0.0, 0.0))
    assert spinning_pays(2) and not spinning_pays(1)
    load[0] = 1.6  # another process keeps most of a core busy
    assert not spinning_pays(2)
    load[0] = 0.2
    model = build(tmp_path / "m", block_size=16)
    export_onnx(model)

    def spins(spin: bool) -> str:
        session = make_session(model / "model.onnx", threads=2, spin=spin)
        return session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning"
        )

    assert spins(True) == "1" and spins(False) == "0"  # only a lone generation asks for it
    register_other(tmp_path, sleeper.pid, "train")
    assert not spinning_pays(2) and spins(True) == "0"


def test_training_drops_to_its_share_beside_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    registry = tmp_path / "jobs"
    monkeypatch.setenv(jobs.ENV_DIR, str(registry))
    monkeypatch.setattr(jobs, "_current", None)
    monkeypatch.setattr("model.device.available_cpus", lambda: 2)
    register_other(registry, sleeper.pid, "train")
    seen: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "train":
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        opts = RunOptions(
            data=make_data(tmp_path), out=tmp_path / "run", device="cpu", on_event=on_event
        )
        model = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
        train(model, {"batch_size": 2, "max_iters": 3, "log_interval": 1}, opts)
    finally:
        torch.set_num_threads(before)
        reg = jobs._current
        if reg is not None:
            reg.remove()
    assert seen and set(seen) == {1}
    assert [p.name for p in registry.iterdir()] == [f"{sleeper.pid}.json"]


def test_a_registry_that_is_not_a_directory_of_ours_is_not_used(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "jobs"
    link.symlink_to(target)  # e.g. made first by another user in a shared /tmp
    (target / "1.json").write_text(json.dumps({"pid": 1, "started": "", "kind": "train"}))
    assert not jobs.usable(link)
    assert jobs.others(link) == []
    reg = Registration("train", link)
    reg.write()
    assert not reg.written and [p.name for p in target.iterdir()] == ["1.json"]


def test_a_fifo_in_the_registry_is_skipped_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "7.json")
    assert jobs.others(tmp_path) == []


# A reply beside a training: its network calls run at a low priority (Linux), so the training
# keeps all its threads and the reply takes the time it leaves.

YIELDER = Job(4, "", "infer", True, yields=True)
needs_priorities = pytest.mark.skipif(not jobs.YIELDS, reason="thread priorities: Linux only")


@pytest.mark.parametrize(
    ("others", "want"),
    [([YIELDER], 2), ([YIELDER, BUSY], 1), ([YIELDER, TRAIN], 1)],
)
def test_a_reply_that_yields_takes_no_core_from_a_training(others: list[Job], want: int) -> None:
    assert fair_threads("train", 2, 2, others) == want
    assert fair_threads("infer", 2, 2, [TRAIN]) == 1  # its own thread count is unchanged


def test_an_entry_without_yields_counts_as_one_that_does_not(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    register_other(tmp_path, sleeper.pid, "infer")  # written by an older version
    assert jobs.others(tmp_path)[0].yields is False


@pytest.fixture
def inference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registration]:
    """This process registered as inference in its own registry, with a stand-in autogroup."""
    registry = tmp_path / "jobs"
    monkeypatch.setenv(jobs.ENV_DIR, str(registry))
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-7 nice 0\n")
    monkeypatch.setattr(jobs, "AUTOGROUP", autogroup)
    reg = Registration("infer", registry)
    reg.write()
    monkeypatch.setattr(jobs, "_current", reg)
    yield reg
    reg.remove()


def where(seen: list[tuple[int, int]]) -> Callable[[], int]:
    """A network call that records the thread it ran on and that thread's nice value."""

    def call() -> int:
        tid = threading.get_native_id()
        seen.append((tid, os.getpriority(os.PRIO_PROCESS, tid)))
        return len(seen)

    return call


def entry(reg: Registration) -> Job:
    return jobs.others(reg.directory, me=-1)[0]


@needs_priorities
def test_calls_run_at_low_priority_while_a_training_runs_and_normal_after(
    inference: Registration, sleeper: subprocess.Popen[bytes]
) -> None:
    now = [0.0]
    me, seen = threading.get_native_id(), []
    normal = os.getpriority(os.PRIO_PROCESS, me)
    other = register_other(inference.directory, sleeper.pid, "train")
    with jobs.Yielding(clock=lambda: now[0]) as yielding:
        assert yielding.call(where(seen)) == 1
        assert seen[-1][0] != me and seen[-1][1] == jobs.YIELD_NICE
        assert entry(inference).yields  # so the training keeps its threads
        assert jobs.AUTOGROUP.read_text() == "/autogroup-7 nice 0\n"  # one session: untouched
        other.unlink()  # the training ended: normal priority from the next re-check on
        yielding.call(where(seen))
        assert seen[-1][1] == jobs.YIELD_NICE  # not re-read yet
        now[0] += jobs.RECHECK_SECONDS
        yielding.call(where(seen))
        assert seen[-1] == (me, normal) and not entry(inference).yields
    assert os.getpriority(os.PRIO_PROCESS, me) == normal  # the calling thread is never lowered


def test_alone_calls_run_in_the_calling_thread(
    inference: Registration, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "_thread", None)
    seen: list[tuple[int, int]] = []
    with jobs.Yielding() as yielding:
        yielding.call(where(seen))
    me = threading.get_native_id()
    assert seen == [(me, os.getpriority(os.PRIO_PROCESS, me))]
    assert jobs._thread is None  # no low-priority thread is even started
    assert jobs.AUTOGROUP.read_text() == "/autogroup-7 nice 0\n"  # the session untouched
    assert not entry(inference).yields


def test_without_thread_priorities_a_reply_takes_its_core_as_before(
    inference: Registration, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setattr(jobs, "YIELDS", False)  # a platform without per-thread priorities
    register_other(inference.directory, sleeper.pid, "train")
    seen: list[tuple[int, int]] = []
    with jobs.Yielding() as yielding:
        yielding.call(where(seen))
        assert seen[0][0] == threading.get_native_id()
        assert not entry(inference).yields  # so the training leaves it a core (fair_threads)


@needs_priorities
def test_a_training_in_another_session_is_yielded_to_through_the_session(
    inference: Registration, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_terminal = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        register_other(inference.directory, other_terminal.pid, "train")
        training = jobs.others(inference.directory)[0]
        assert not jobs.takes_effect(training, session_lowered=False)
        assert jobs.takes_effect(training, session_lowered=True)
        with jobs.Yielding() as yielding:
            assert yielding.low and entry(inference).yields
            assert jobs.AUTOGROUP.read_text() == str(jobs.YIELD_NICE)
        assert jobs.AUTOGROUP.read_text() == "0"  # restored when the reply ends
        monkeypatch.setattr(jobs, "AUTOGROUP", tmp_path / "none")  # a kernel without them:
        with jobs.Yielding() as yielding:  # the reply takes its core as before
            assert not yielding.low and not entry(inference).yields
    finally:
        other_terminal.kill()
        other_terminal.wait()


def test_the_sessions_priority_is_restored_by_the_last_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-7 nice 0\n")
    monkeypatch.setattr(jobs, "AUTOGROUP", autogroup)
    assert jobs.lower_session() and jobs.lower_session()  # two panes replying
    assert autogroup.read_text() == str(jobs.YIELD_NICE)
    jobs.restore_session()
    assert autogroup.read_text() == str(jobs.YIELD_NICE)
    jobs.restore_session()
    assert autogroup.read_text() == "0"
    autogroup.write_text("/autogroup-7 nice 15\n")  # the user's own, lower still: kept
    assert jobs.lower_session()
    jobs.restore_session()
    assert autogroup.read_text() == "/autogroup-7 nice 15\n"


def test_a_training_in_another_cgroup_is_not_yielded_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "_cgroup", lambda pid: "0::/mine" if pid == "self" else "0::/x")
    assert not jobs.takes_effect(Job(os.getpid(), "", "train"), session_lowered=True)


@needs_priorities
def test_a_generation_beside_a_registered_training_decodes_at_low_priority(
    inference: Registration, sleeper: subprocess.Popen[bytes]
) -> None:
    from minigpt_tui.generation import Generation
    from minigpt_tui.sampling import SamplingSettings
    from model.tokenizer import CharTokenizer
    from tests.test_generation import ScriptedBackend

    class Recording(ScriptedBackend):
        nice: list[int]

        def decode(self, token: int) -> Any:
            self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().decode(token)

    def reply() -> set[int]:
        tokenizer = CharTokenizer("abcd")
        backend = Recording([1, 2, 3], tokenizer.vocab_size)
        backend.nice = []
        settings = SamplingSettings(temperature=0.0, max_new_tokens=3)
        list(Generation(backend, tokenizer, [1], settings))  # type: ignore[arg-type]
        return set(backend.nice)

    normal = os.getpriority(os.PRIO_PROCESS, 0)
    assert reply() == {normal}  # alone
    register_other(inference.directory, sleeper.pid, "train")
    assert reply() == {jobs.YIELD_NICE}
    assert not entry(inference).yields and not entry(inference).busy  # after the reply
    sleeper.kill()
    sleeper.wait()
    assert reply() == {normal}  # the training ended


def test_a_trainings_own_samples_never_yield(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    reg = Registration("train", tmp_path)
    monkeypatch.setattr(jobs, "_current", reg)
    register_other(tmp_path, sleeper.pid, "train")
    with jobs.Yielding() as yielding:
        assert not yielding.low


def test_the_cgroup_compared_is_the_one_of_the_cpu_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "1": "4:memory:/a\n1:cpu,cpuacct:/x\n0::/u\n",  # v1 with a cpu controller
        "2": "0::/user.slice/app.scope\n",  # v2 only
        "3": "",
    }
    monkeypatch.setattr(jobs.userfile, "read_text", lambda path, limit: files[path.split("/")[2]])
    assert [jobs._cgroup(pid) for pid in ("1", "2", "3")] == ["/x", "/user.slice/app.scope", "?"]
