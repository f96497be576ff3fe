"""Hardening: training survives kill -9 bit-exactly, hostile model and data files are refused
in one line without running or allocating anything, and a full disk loses nothing.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from minigpt_tui.dialogue import Turn
from minigpt_tui.history import Conversation, HistoryStore, export
from model import checkpoint, modeldir, rundir, trainer_state
from model.config import GPTConfig
from model.events import METRICS_FILE
from model.gpt import GPT
from tests.helpers import cli, expect_one_line_error, make_data, make_model

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ kill -9

MODEL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]
MODEL += ["--dropout", "0.1"]  # dropout: the torch RNG state must be restored too
RUN = ["--device", "cpu", "--batch-size", "8", "--max-iters", "80", "--ckpt-interval", "7"]
RUN += ["--eval-interval", "20", "--eval-iters", "2", "--log-interval", "1"]
RUN += ["--no-samples", "--no-final-eval", "--keep-checkpoints", "3"]
MAX_ITERS = 80
# The child with every fsync slowed down, so that a checkpoint write takes long enough to be
# caught in the act (the staging directory exists for ~0.5 s instead of ~5 ms).
SLOW_FSYNC = (
    "import os, time; fsync = os.fsync\n"
    "os.fsync = lambda fd: (time.sleep(0.15), fsync(fd))[1]\n"
    "from minigpt_tui.cli import main; main()"
)
KILLS = 4


def _start(data: Path, out: Path, log: Path, resume: bool, slow_fsync: bool = False) -> Any:
    args = ["train", "--data", str(data), "--out", str(out), *RUN]
    args += ["--resume"] if resume else MODEL
    head = ["-c", SLOW_FSYNC] if slow_fsync else ["-m", "minigpt_tui"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, *head, *args], cwd=ROOT, env=env, stdout=f, stderr=f
        )


def _events(out: Path) -> list[dict[str, Any]]:
    """The events of the current (last started) process; torn lines are skipped."""
    try:
        lines = (out / METRICS_FILE).read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    return events[starts[-1] :] if starts else []


def _iteration(out: Path) -> int:
    return max((e["iter"] for e in _events(out) if e.get("event") == "train"), default=-1)


def _staging(out: Path) -> list[str]:
    try:
        return [n for n in os.listdir(out) if n.startswith(".step-") and n.endswith(".tmp")]
    except FileNotFoundError:
        return []


def _kill_when(proc: Any, ready: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _check_latest_loads(out: Path) -> int:
    """After any kill: `latest` is a complete checkpoint that loads, with its trainer state."""
    info = modeldir.read(out)
    model, _ = checkpoint.load(out)
    state = trainer_state.load(info)
    assert info.path.name == f"step-{state['step']:06d}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return int(state["step"])


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_exact(tmp_path: Path) -> None:
    seed = int(os.environ.get("HARDENING_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    note = f"(HARDENING_SEED={seed} reproduces the kill moments)"
    data = make_data(tmp_path)
    ref, out, log = tmp_path / "ref", tmp_path / "run", tmp_path / "train.log"
    reference = _start(data, ref, tmp_path / "ref.log", resume=False)  # alongside the kills

    # 1: a random iteration, after the first checkpoint.
    proc = _start(data, out, log, resume=False)
    target = rng.randint(8, 30)
    _kill_when(proc, lambda: _iteration(out) >= target)
    saved = [_check_latest_loads(out)]

    # 2: in the middle of writing a checkpoint (its staging directory exists).
    proc = _start(data, out, log, resume=True, slow_fsync=True)
    _kill_when(proc, lambda: bool(_staging(out)))
    assert _staging(out), f"the kill should leave a half-written checkpoint behind {note}"
    saved.append(_check_latest_loads(out))

    # 3: a random moment after launch (importing, loading, or training).
    proc = _start(data, out, log, resume=True)
    t_kill = time.monotonic() + rng.uniform(0.0, 3.0)
    _kill_when(proc, lambda: time.monotonic() >= t_kill or _iteration(out) >= MAX_ITERS - 10)
    saved.append(_check_latest_loads(out))

    # 4: a random iteration after the resume point.
    proc = _start(data, out, log, resume=True)
    target = min(saved[-1] + rng.randint(1, 12), MAX_ITERS - 5)
    _kill_when(proc, lambda: _iteration(out) >= target)
    saved.append(_check_latest_loads(out))
    assert len(saved) == KILLS

    # The last resume runs to the end and leaves nothing stale behind.
    proc = _start(data, out, log, resume=True)
    assert proc.wait(120) == 0, log.read_text(errors="replace")[-2000:] + note
    assert reference.wait(120) == 0
    assert _check_latest_loads(out) == MAX_ITERS
    assert not [p for p in out.iterdir() if rundir.STALE.match(p.name)]
    final = modeldir.resolve(out) / modeldir.WEIGHTS_FILE
    expected = modeldir.resolve(ref) / modeldir.WEIGHTS_FILE
    assert final.read_bytes() == expected.read_bytes(), f"resumed weights differ {note}"
    starts = [e for e in _all_events(out) if e.get("event") == "start"]
    resumed = [e["resumed"] for e in starts]  # a kill while importing leaves no start event
    assert resumed[0] is False and all(resumed[1:]) and len(resumed) <= KILLS + 1


def _all_events(out: Path) -> list[dict[str, Any]]:
    events = []
    for line in (out / METRICS_FILE).read_bytes().split(b"\n"):
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_tidy_run_dir_clears_what_a_kill_leaves_and_keeps_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name in ("step-000007", "step-000014"):
        make_model(run, name)
    modeldir.point_latest(run, run / "step-000014")
    (run / ".step-000021.abc123.tmp").mkdir()  # killed while staging step 21
    (run / ".step-000021.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    shutil.copytree(run / "step-000007", run / ".step-000028.old")  # killed mid-replace
    os.symlink("step-000007", run / ".latest.tmp")  # killed while re-pointing latest
    (run / METRICS_FILE).write_bytes(b'{"event": "start", "iter": 0}\n{"event": "tr')
    removed = rundir.tidy(run)
    assert sorted(p.name for p in removed) == [".latest.tmp", ".step-000021.abc123.tmp"]
    # The only copy of a checkpoint (its replacement never arrived) is put back.
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("m")) == [
        "latest",
        "step-000007",
        "step-000014",
        "step-000028",
    ]
    assert modeldir.read(run).path.name == "step-000014"
    assert (run / METRICS_FILE).read_bytes().endswith(b'"tr\n')
    assert rundir.tidy(run) == []  # idempotent, and a clean file is left alone
    assert (run / METRICS_FILE).read_bytes().endswith(b'"tr\n')


@pytest.mark.slow
def test_kill_9_during_export_leaves_a_model_that_still_works(
    good: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed while model.onnx is being written in place: the directory still loads, and
    either has no model.onnx or a complete one; exporting again works."""
    pytest.importorskip("onnxscript")
    model = tmp_path / "model"
    shutil.copytree(good[0], model)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", SLOW_FSYNC, "export", "onnx", str(model), "--no-verify"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: any(p.name.startswith(".model.onnx.") for p in model.iterdir()))
    checkpoint.load(model)
    info = modeldir.read(model)
    if info.has_onnx:  # killed after the rename: the file must be complete and usable
        assert cli("generate", "-m", model, "--backend", "onnx", "-n", "3", "hi") == 0
    # Export again (the kill may have left a temp file beside it: harmless).
    assert cli("export", "onnx", model, "--no-verify", "--force") == 0
    capsys.readouterr()
    assert cli("generate", "-m", model, "--backend", "onnx", "-n", "3", "--seed", "1", "hi") == 0
    assert capsys.readouterr().out.strip()


# ------------------------------------------------------------------------------ hostile files


class PickleBomb:
    """Runs a shell command when unpickled, if anything ever unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _meta(path: Path) -> dict[str, Any]:
    return json.loads((path / modeldir.CONFIG_FILE).read_text())


def _set_config(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    meta = _meta(path)
    change(meta)
    (path / modeldir.CONFIG_FILE).write_text(json.dumps(meta))


def _other_shapes(path: Path) -> None:
    cfg = GPTConfig.from_dict({**_meta(path)["model"], "n_embd": 24})
    save_file(checkpoint.state_for_saving(GPT(cfg)), str(path / modeldir.WEIGHTS_FILE))


def _truncate(path: Path) -> None:
    w = path / modeldir.WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _header_bomb(path: Path) -> None:
    # A safetensors header that claims to be 2**62 bytes long.
    (path / modeldir.WEIGHTS_FILE).write_bytes((2**62).to_bytes(8, "little") + b"{}" * 8)


def _foreign_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("label", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["pixels"], ["label"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path / modeldir.ONNX_FILE)


def _sparse_config(path: Path) -> None:
    with open(path / modeldir.CONFIG_FILE, "r+b") as f:
        f.truncate(modeldir.MAX_CONFIG_BYTES + 1)  # sparse: no disk used


def _config_key(section: str, key: str, value: Any) -> Callable[[Path], None]:
    return lambda p: _set_config(p, lambda m: m[section].__setitem__(key, value))


WEIGHTS_COMMANDS = ("generate", "eval", "init-from", "export")
CONFIG_COMMANDS = ("info", "generate", "eval", "init-from", "export", "chat")

# name -> (how to spoil a good model directory, the commands that must refuse it)
HOSTILE: dict[str, tuple[Callable[[Path], Any], tuple[str, ...]]] = {
    "weights of other shapes": (_other_shapes, WEIGHTS_COMMANDS),
    "truncated weights": (_truncate, WEIGHTS_COMMANDS),
    "garbage weights": (
        lambda p: (p / modeldir.WEIGHTS_FILE).write_bytes(random.Random(0).randbytes(4096)),
        WEIGHTS_COMMANDS,
    ),
    "weights header claims 2**62 bytes": (_header_bomb, WEIGHTS_COMMANDS),
    "no weights": (lambda p: (p / modeldir.WEIGHTS_FILE).unlink(), WEIGHTS_COMMANDS),
    "config not JSON": (
        lambda p: (p / modeldir.CONFIG_FILE).write_text("{'model': oops"),
        CONFIG_COMMANDS,
    ),
    "config binary": (
        lambda p: (p / modeldir.CONFIG_FILE).write_bytes(b"\xff\xfe\x00\x81garbage"),
        CONFIG_COMMANDS,
    ),
    "config is a list": (
        lambda p: (p / modeldir.CONFIG_FILE).write_text("[1, 2, 3]"),
        CONFIG_COMMANDS,
    ),
    "config of another program": (
        lambda p: (p / modeldir.CONFIG_FILE).write_text('{"architectures": ["GPT2LMHeadModel"]}'),
        CONFIG_COMMANDS,
    ),
    "config without a model section": (
        lambda p: _set_config(p, lambda m: m.pop("model")),
        CONFIG_COMMANDS,
    ),
    "config missing n_head": (
        lambda p: _set_config(p, lambda m: m["model"].pop("n_head")),
        CONFIG_COMMANDS,
    ),
    "config with an unknown key": (_config_key("model", "n_expert", 8), CONFIG_COMMANDS),
    "config of 10**12 parameters": (
        lambda p: _set_config(p, lambda m: m["model"].update(n_layer=10_000, n_embd=3_000)),
        CONFIG_COMMANDS,
    ),
    "config vocab 10**12": (_config_key("model", "vocab_size", 10**12), CONFIG_COMMANDS),
    "config negative layers": (_config_key("model", "n_layer", -2), CONFIG_COMMANDS),
    "config string width": (_config_key("model", "n_embd", "16"), CONFIG_COMMANDS),
    "config float block": (_config_key("model", "block_size", 31.5), CONFIG_COMMANDS),
    "config string bias": (_config_key("model", "bias", "yes"), CONFIG_COMMANDS),
    "config string dropout": (_config_key("model", "dropout", "0.1"), CONFIG_COMMANDS),
    "config heads do not divide width": (_config_key("model", "n_head", 3), CONFIG_COMMANDS),
    "config unknown tokenizer": (
        _config_key("tokenizer", "kind", "sentencepiece"),
        CONFIG_COMMANDS,
    ),
    "config tokenizer chars not a string": (
        _config_key("tokenizer", "chars", [1, 2]),
        CONFIG_COMMANDS,
    ),
    "config tokenizer larger than the model": (
        _config_key("tokenizer", "chars", "".join(map(chr, range(200, 400)))),
        CONFIG_COMMANDS,
    ),
    "config over 64 MB": (_sparse_config, CONFIG_COMMANDS),
    "config nested 100000 deep": (
        lambda p: (p / modeldir.CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000),
        CONFIG_COMMANDS,
    ),
    "config with a 5000-digit number": (
        lambda p: (p / modeldir.CONFIG_FILE).write_text('{"n_layer": ' + "9" * 5000 + "}"),
        CONFIG_COMMANDS,
    ),
    "config NaN dropout": (_config_key("model", "dropout", math.nan), CONFIG_COMMANDS),
    "onnx of another model": (_foreign_onnx, ("generate-onnx",)),
    "onnx garbage": (
        lambda p: (p / modeldir.ONNX_FILE).write_bytes(b"\x08\x07garbage" * 100),
        ("generate-onnx",),
    ),
}


ONE_STEP = ["--max-iters", "1", "--device", "cpu", "--no-samples"]


def _argv(command: str, model: Path, data: Path, tmp: Path) -> list[str]:
    return {
        "info": ["info", model],
        "generate": ["generate", "-m", model, "--backend", "torch", "-n", "2", "hi"],
        "generate-onnx": ["generate", "-m", model, "--backend", "onnx", "-n", "2", "hi"],
        "eval": ["eval", model, "--data", data, "--device", "cpu"],
        "init-from": [
            "train",
            "--data",
            data,
            "--out",
            tmp / "ft",
            "--init-from",
            model,
            *ONE_STEP,
        ],
        "export": ["export", "onnx", model, "--out", tmp / "onnx", "--no-verify"],
        "chat": ["chat", "-m", model, "--no-history"],
    }[command]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("good")
    return make_model(tmp), make_data(tmp)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_model_files_are_refused_in_one_line(
    case: str, good: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(good[0], model)
    spoil, commands = HOSTILE[case]
    spoil(model)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    for command in commands:
        expect_one_line_error(capsys, *_argv(command, model, good[1], tmp_path))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mb < 200, f"{case}: memory grew by {grown_mb:.0f} MB before refusing"
    assert not (tmp_path / "ft").exists() and not (tmp_path / "onnx" / "model.onnx").exists()


def _data_meta(key: str, value: Any) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        meta[key] = value
        (path / "meta.json").write_text(json.dumps(meta))

    return change


def _tokens_out_of_vocab(path: Path) -> None:
    for split in ("train", "val"):
        f = path / f"{split}.bin"
        f.write_bytes(b"\xff\xff" * (f.stat().st_size // 2))  # token 65535 in a 34-token vocab


HOSTILE_DATA: dict[str, Callable[[Path], Any]] = {
    "meta not JSON": lambda p: (p / "meta.json").write_text("{oops"),
    "meta is a list": lambda p: (p / "meta.json").write_text("[]"),
    "meta nested 100000 deep": lambda p: (p / "meta.json").write_text("[" * 100_000),
    "meta with a 5000-digit vocab": lambda p: (p / "meta.json").write_text(
        '{"vocab_size": ' + "9" * 5000 + "}"
    ),
    "meta vocab not a number": _data_meta("vocab_size", "many"),
    "meta dtype float64": _data_meta("dtype", "float64"),
    "meta dtype nonsense": _data_meta("dtype", "tensor<int>"),
    "meta tokenizer not a dict": _data_meta("tokenizer", "char"),
    "train.bin missing": lambda p: (p / "train.bin").unlink(),
    "train.bin torn": lambda p: (p / "train.bin").write_bytes(b"\x01\x00\x02"),
    "tokens outside the vocabulary": _tokens_out_of_vocab,
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DATA))
def test_hostile_data_dirs_are_refused_in_one_line(
    case: str, good: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(good[1], data)
    HOSTILE_DATA[case](data)
    expect_one_line_error(capsys, "eval", good[0], "--data", data, "--device", "cpu")
    expect_one_line_error(capsys, *_tiny_args(data, tmp_path / "run", *TINY, "--max-iters", "2"))
    expect_one_line_error(
        capsys, "train", "--data", data, "--out", tmp_path / "ft", "--init-from", good[0], *ONE_STEP
    )


def _run_dir_with(tmp: Path, good: tuple[Path, Path], trainer: Callable[[Path], Any]) -> Path:
    run = tmp / "run"
    step = run / "step-000005"
    shutil.copytree(good[0], step)
    trainer(step / modeldir.TRAINER_FILE)
    modeldir.point_latest(run, step)
    return run


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "raw-pickle"])
def test_pickle_bomb_trainer_state_never_runs(
    legacy: bool, good: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"

    def bomb(path: Path) -> None:
        if legacy:
            path.write_bytes(pickle.dumps({"step": 5, "x": PickleBomb(marker)}))
        else:
            torch.save({"step": 5, "x": PickleBomb(marker)}, path)

    run = _run_dir_with(tmp_path, good, bomb)
    line = expect_one_line_error(capsys, "train", "--data", good[1], "--out", run, "--resume")
    assert "trainer.pt" in line
    assert not marker.exists(), "unpickling ran the attacker's code"
    # And the loader itself, called directly.
    with pytest.raises(modeldir.ModelDirError):
        trainer_state.load(modeldir.read(run))
    assert not marker.exists()


@pytest.mark.parametrize(
    "trainer",
    [
        lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),
        lambda p: p.write_bytes(b""),
        lambda p: torch.save([1, 2, 3], p),
        lambda p: torch.save({"optimizer": {}}, p),
        lambda p: p.mkdir(),
    ],
    ids=["garbage", "empty", "a list", "no step", "a directory"],
)
def test_bad_trainer_state_is_refused_in_one_line(
    trainer: Callable[[Path], Any],
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = _run_dir_with(tmp_path, good, trainer)
    expect_one_line_error(capsys, "train", "--data", good[1], "--out", run, "--resume")


def test_checkpoints_are_never_unpickled() -> None:
    """Source check: safetensors + JSON, and trainer.pt only through weights_only=True."""
    src = (ROOT / "model" / "trainer_state.py").read_text()
    assert "weights_only=True" in src and "pickle.load" not in src
    for path in [*(ROOT / "model").glob("*.py"), *(ROOT / "export").glob("*.py")]:
        text = path.read_text()
        assert "weights_only=False" not in text, path
        assert "pickle.load(" not in text and "pickle.loads(" not in text, path
        assert text.count("torch.load(") == text.count("weights_only=True"), path


# ------------------------------------------------------------------------------ disk full


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "32"]


def _tiny_args(data: Path, out: Path, *extra: str) -> list[Any]:
    return [
        "train", "--data", data, "--out", out, "--device", "cpu", "--no-samples",
        "--no-final-eval", "--batch-size", "4", "--eval-iters", "1", "--eval-interval", "5",
        "--ckpt-interval", "5", "--log-interval", "5", *extra,
    ]  # fmt: skip


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    assert cli(*_tiny_args(good[1], out, *TINY, "--max-iters", "5")) == 0
    before = (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes()
    capsys.readouterr()

    def full(*args: Any, **kwargs: Any) -> None:  # what safetensors raises on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)  # the disk fills on the next save
    line = expect_one_line_error(capsys, *_tiny_args(good[1], out, "--resume", "--max-iters", "10"))
    assert "No space left on device" in line and "step-000005 is intact" in line
    assert _check_latest_loads(out) == 5
    assert (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes() == before
    assert not [p for p in out.iterdir() if rundir.STALE.match(p.name)]
    monkeypatch.undo()  # space again: the run continues from step 5
    assert cli(*_tiny_args(good[1], out, "--resume", "--max-iters", "10")) == 0
    assert _check_latest_loads(out) == 10


def test_disk_full_while_exporting_keeps_the_model_dir(
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("onnxscript")
    model = tmp_path / "model"
    shutil.copytree(good[0], model)
    files = {p.name: p.read_bytes() for p in model.iterdir()}
    monkeypatch.setattr(modeldir.os, "fsync", _enospc)
    expect_one_line_error(capsys, "export", "onnx", model, "--no-verify")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == files  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_while_preparing_data_keeps_the_old_data(
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(good[1], data)
    files = {p.name: p.read_bytes() for p in data.iterdir()}
    monkeypatch.setattr(os, "fsync", _enospc)
    line = expect_one_line_error(
        capsys, "data", "prepare", good[0].parent / "corpus.txt", "-o", data, "--force"
    )
    assert "No space left on device" in line
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in data.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging dir left


def _conversation(text: str) -> Conversation:
    return Conversation(None, "", "chat", "tiny", [Turn("user", "hi"), Turn("model", text)])


def test_disk_full_while_exporting_a_conversation_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "chat.md"
    export(_conversation("first"), target, {})
    before = target.read_bytes()
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError) as e:
        export(_conversation("second " * 1000), target, {})
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["chat.md"]  # no temp file left


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A real 1 MiB filesystem (tmpfs, needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk, leaving about `leave` bytes free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_real_disk_full_checkpoint_and_history(
    tiny_disk: Path,
    good: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tiny_disk / "run"
    assert cli(*_tiny_args(good[1], out, *TINY, "--max-iters", "5")) == 0
    before = (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes()
    store = HistoryStore(tiny_disk / "history.db")
    first = store.save(_conversation("kept"))
    _fill(tiny_disk, leave=16 * 1024)
    capsys.readouterr()
    expect_one_line_error(capsys, *_tiny_args(good[1], out, "--resume", "--max-iters", "10"))
    assert _check_latest_loads(out) == 5
    assert (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".step-")]
    with pytest.raises(sqlite3.Error):
        for _ in range(50):  # a long conversation no longer fits
            store.save(_conversation("x" * 100_000))
    store.close()
    reopened = HistoryStore(tiny_disk / "history.db")
    loaded = reopened.load(first)
    assert loaded is not None and loaded.turns[-1].text == "kept"
    reopened.close()


def test_watch_skips_hostile_metrics_lines(tmp_path: Path) -> None:
    from minigpt_tui.tui.metrics import MetricsFollower

    path = tmp_path / METRICS_FILE
    good = json.dumps({"event": "train", "iter": 1, "loss": 2.0})
    path.write_bytes(b"[" * 100_000 + b"\n\xff\xfe\n" + b"9" * 5000 + b"\n" + good.encode() + b"\n")
    follower = MetricsFollower(path)
    events, _ = follower.poll()
    assert [e["iter"] for e in events] == [1] and follower.bad_lines == 3


@pytest.mark.parametrize("text", ["ab" * 500, "日本語" * 300], ids=["ascii", "multibyte"])
def test_a_corpus_without_line_breaks_still_gets_both_splits(text: str, tmp_path: Path) -> None:
    from model.data import load_dataset, prepare

    src = tmp_path / "one-line.txt"
    src.write_text(text, encoding="utf-8")
    res = prepare([src], tmp_path / "d", "char", val_fraction=0.1)
    assert res.train_tokens > 0.8 * len(text) and res.val_tokens > 0
    ds = load_dataset(tmp_path / "d")
    tok = ds.tokenizer()
    assert tok.decode(ds.train.tolist()) + tok.decode(ds.val.tolist()) == text
