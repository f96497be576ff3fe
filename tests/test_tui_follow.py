"""`chat --follow`: the app switches to each newer checkpoint of a run between replies, also
while a real `train` process writes them; `watch`'s `c` opens it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_tui_support import FakeBackend, make_app, run_async, said, wait_for

from minigpt_tui.tui import follow
from minigpt_tui.tui.follow import Checkpoint, CheckpointLoader, RunWatcher
from minigpt_tui.tui.widgets.status_bar import StatusBar
from model import modeldir
from model.backend import Backend
from tests.helpers import cli, make_data, make_model

ROOT = Path(__file__).resolve().parent.parent


def add_checkpoint(run: Path, model: Path, step: int, val: float) -> Path:
    """What `train` does: the complete directory first, then `latest` pointed at it."""
    meta = modeldir.read(model).meta
    meta["summary"] = {"iter": step, "val_loss": val}
    target = run / f"step-{step:06d}"
    with modeldir.staged_dir(target) as tmp:
        shutil.copy(model / modeldir.WEIGHTS_FILE, tmp)
        modeldir.write_json(tmp / modeldir.CONFIG_FILE, meta)
    modeldir.point_latest(run, target)
    return target


class FakeCheckpoints:
    """Loads a FakeBackend per checkpoint (slow replies on the first, to switch mid-reply)."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def label(self) -> str:
        return "torch"

    def __call__(self, path: Path) -> Backend:
        self.loaded.append(path.name)
        delay = 0.05 if len(self.loaded) == 1 else 0.0  # the first replies until stopped
        return FakeBackend("Good morrow, sweet ", delay=delay)  # type: ignore[return-value]


def test_watcher_sees_only_complete_newer_checkpoints(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    run = tmp_path / "run"
    first = add_checkpoint(run, model, 10, 2.5)
    watcher = RunWatcher.open(run)
    assert watcher.current == first and watcher.poll() is None
    (run / ".step-000020.abc.tmp").mkdir()  # a checkpoint being written: not seen
    assert watcher.poll() is None
    second = add_checkpoint(run, model, 20, 2.25)
    assert watcher.poll() == second and watcher.poll() is None
    assert Checkpoint.read(second).describe() == "step 20 · val loss 2.2500"
    shutil.rmtree(add_checkpoint(run, model, 30, 2.0))  # pruned before we looked
    assert watcher.poll() is None
    assert RunWatcher.open(run / "step-000020").run == run  # a checkpoint means its run


def test_a_latest_retargeted_outside_the_run_is_never_followed(tmp_path: Path) -> None:
    """Mid-session, `latest` pointed at another model: it is not this run's checkpoint."""
    model = make_model(tmp_path)
    run = tmp_path / "run"
    add_checkpoint(run, model, 10, 2.5)
    watcher = RunWatcher.open(run)
    elsewhere = add_checkpoint(tmp_path / "other", model, 20, 1.0)
    (run / modeldir.LATEST).unlink()
    (run / modeldir.LATEST).symlink_to(elsewhere)
    assert watcher.poll() is None  # never handed out as this run's
    with pytest.raises(modeldir.ModelDirError, match="outside the run directory"):
        RunWatcher.newest(run)


def test_first_load_moves_on_when_train_pruned_the_checkpoint(tmp_path: Path) -> None:
    """`train` keeps its newest few checkpoints: the one chat picked can go before it is read."""
    model = make_model(tmp_path)
    run = tmp_path / "run"
    first = add_checkpoint(run, model, 10, 2.5)
    watcher = RunWatcher.open(run)
    second = add_checkpoint(run, model, 20, 2.25)
    shutil.rmtree(first)  # pruned between start and load
    backend = watcher.load_first(CheckpointLoader("torch"))
    assert backend.info.path == second and watcher.current == second
    assert watcher.poll() is None  # the newest is loaded: nothing newer to switch to
    shutil.rmtree(second)  # nothing newer left: the error is the load's own
    with pytest.raises(modeldir.ModelDirError, match="model not found"):
        watcher.load_first(CheckpointLoader("torch"))


@run_async
async def test_switches_between_replies_never_mid_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "POLL_SECONDS", 0.05)
    model = make_model(tmp_path)
    run = tmp_path / "run"
    add_checkpoint(run, model, 10, 2.5)
    watcher = RunWatcher.open(run)
    loads = FakeCheckpoints()
    app = make_app(max_new_tokens=1000)
    app.loader = lambda: watcher.load_first(loads)
    app.setup_workflow(follow=watcher, checkpoints=loads, model_path=run)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        status = app.query_one(StatusBar)
        assert status.checkpoint == "following · step 10 · val loss 2.5000"
        first = app.chat.backend
        app.chat.prompt_input.load_text("Speak.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.generating)
        add_checkpoint(run, model, 20, 2.0)  # train writes a newer one mid-reply
        await wait_for(pilot, lambda: said(app, "it answers from the next reply"), 20)
        assert app.chat.generating and app.chat.backend is first  # loaded, waiting for the reply
        await pilot.pause(0.2)
        assert app.chat.generating and app.chat.backend is first
        await pilot.press("escape")  # the reply ends: now it switches
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.backend is not first, 10)
        assert loads.loaded == ["step-000010", "step-000020"]
        assert status.checkpoint == "following · step 20 · val loss 2.0000"
        notes = [str(n.render()) for n in app.chat.transcript.query(".note")]
        assert notes == [
            "── the run's checkpoint at step 20 · val loss 2.0000 answers from here ──"
        ]
        assert [t.role for t in app.chat.session.turns] == ["user", "model"]  # the talk goes on
        app.settings.max_new_tokens = 20
        app.chat.prompt_input.load_text("Again.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.chat.session.turns) == 4, 10)


@pytest.mark.slow  # a real train process: about 15 s
@run_async
async def test_follows_a_run_that_train_is_writing(tmp_path: Path) -> None:
    """A real `train` process writes checkpoints; chat follows it with the torch backend."""
    data = make_data(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # fmt: off
    args = [
        sys.executable, "-m", "minigpt_tui", "train", "--data", str(data), "--out", str(run),
        "--block-size", "16", "--n-layer", "1", "--n-head", "1", "--n-embd", "16",
        "--batch-size", "4", "--max-iters", "300", "--eval-interval", "50", "--eval-iters", "1",
        "--ckpt-interval", "50", "--device", "cpu",
    ]
    # fmt: on
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while RunWatcher.newest(run) is None if run.exists() else True:
            assert proc.poll() is None or run.exists(), proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "train wrote no checkpoint in 30 s"
            time.sleep(0.05)
        watcher = RunWatcher.open(run)
        first = watcher.current.name
        loads = CheckpointLoader("torch")
        app = make_app(max_new_tokens=8)
        app.loader = lambda: watcher.load_first(loads)
        app.setup_workflow(follow=watcher, checkpoints=loads, model_path=run)
        async with app.run_test(size=(100, 30)) as pilot:
            # The model and the screen both ready (a busy machine can take a while for either).
            await wait_for(pilot, lambda: app.chat.session is not None, 20)
            await wait_for(pilot, lambda: bool(app.screen.query(StatusBar)), 20)
            status = app.query_one(StatusBar)
            assert status.backend == "torch" and status.checkpoint.startswith("following · step")
            await wait_for(pilot, lambda: app.chat.backend.info.path.name != first, 30)
            assert "val loss" in status.checkpoint  # a newer checkpoint answers
            app.chat.prompt_input.load_text("ROMEO")
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.chat.generating and app.chat.last_stats, 20)
            assert app.chat.last_stats.new_tokens > 0
    finally:
        proc.terminate()
        proc.wait(30)


def test_watch_c_opens_chat_following_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_terminal: None
) -> None:
    from minigpt_tui.tui.app import ChatApp
    from minigpt_tui.tui.watch_app import WatchApp

    run = tmp_path / "run"
    add_checkpoint(run, make_model(tmp_path), 10, 2.5)
    started: list[Any] = []
    monkeypatch.setattr(WatchApp, "run", lambda self, *a, **k: "chat")
    monkeypatch.setattr(ChatApp, "run", lambda self, *a, **k: started.append(self))
    assert cli("watch", str(run)) == 0
    assert started and started[0].workflow.follow.run == run


@run_async
async def test_watch_c_needs_a_checkpoint(tmp_path: Path) -> None:
    from minigpt_tui.tui.watch_app import WatchApp

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    app = WatchApp(run)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("c")
        await pilot.pause()
        assert app.is_running and any("No checkpoint" in n.message for n in app._notifications)
        add_checkpoint(run, make_model(tmp_path), 10, 2.5)
        await pilot.press("c")
    assert app.return_value == "chat"


@pytest.mark.slow  # two ONNX exports
def test_onnx_follow_exports_each_checkpoint_fresh(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = make_model(tmp_path)
    run = tmp_path / "run"
    first = add_checkpoint(run, model, 10, 2.5)
    second = add_checkpoint(run, model, 20, 2.0)
    loads = CheckpointLoader("onnx")
    try:
        assert loads.label() == "onnx (fresh export)"
        assert loads(first).name == "onnx"
        backend = loads(second)
        assert backend.name == "onnx" and backend.info.meta["summary"]["iter"] == 20
        assert loads.exports is not None
        assert [p.name for p in loads.exports.iterdir()] == ["step-000020"]  # older ones go
        assert not (second / modeldir.ONNX_FILE).exists()  # the run is never written to
    finally:
        loads.close()
    assert loads.exports is None
