"""Several processes through torchrun (DDP over gloo on CPU): same result as one process with
the same global batch, and resume under DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from model import modeldir
from tests.helpers import make_data

SHAPE = "--block-size 16 --n-layer 2 --n-head 2 --n-embd 16".split()
ARGS = (
    "--preset cpu --batch-size 4 --grad-accum 2 --max-iters 6 --eval-interval 3 "
    "--eval-iters 2 --lr 3e-3 --device cpu --no-samples"
).split()


def command(data: Path, out: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    """The `train` command line for these tests, and its environment."""
    shape = [] if "--resume" in extra else SHAPE  # a resumed run keeps its shape
    cmd = [
        sys.executable,
        "-m",
        "minigpt_tui",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        *shape,
        *ARGS,
        *extra,
    ]
    return cmd, dict(os.environ, OMP_NUM_THREADS="1", MINIGPT_DIST_TIMEOUT="120")


def train_cmd(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd, env = command(data, out, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = train_cmd(data, out, *extra)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def weights(out: Path) -> dict[str, np.ndarray]:
    return load_file(str(modeldir.resolve(out) / modeldir.WEIGHTS_FILE))


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    train(data, tmp_path / "one")
    proc = train(data, tmp_path / "two", "--nproc", "2")
    assert "2 processes" in proc.stderr
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=2e-5, rtol=1e-4, err_msg=k)

    # Resume under DDP: back to the step-3 checkpoint, continue on 2 processes.
    run = tmp_path / "two"
    modeldir.point_latest(run, run / "step-000003")
    train(data, run, "--resume", "--nproc", "2")
    again = weights(run)
    for k in two:
        np.testing.assert_array_equal(again[k], two[k], err_msg=k)


@pytest.mark.slow
def test_muon_on_two_processes_matches_one(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    muon = ("--optimizer", "muon", "--schedule", "trapezoid", "--zero-init")
    train(data, tmp_path / "one", *muon)
    train(data, tmp_path / "two", *muon, "--nproc", "2")
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=2e-5, rtol=1e-4, err_msg=k)


def test_grad_accum_not_divisible_by_processes_is_refused(tmp_path: Path) -> None:
    proc = train_cmd(make_data(tmp_path), tmp_path / "r", "--grad-accum", "3", "--nproc", "2")
    assert proc.returncode != 0
    assert "must be divisible by --nproc" in proc.stderr
    assert "Traceback" not in proc.stderr.split("torchrun")[0]


def _rank_pids(rank: int) -> list[int]:
    """Processes of this user whose environment says they are torchrun's worker `rank`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"MINIGPT_DDP_KILL_TEST=1" in env:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_rank_ends_the_whole_job(tmp_path: Path) -> None:
    import signal
    import time

    cmd, env = command(make_data(tmp_path), tmp_path / "r", "--max-iters", "100000", "--nproc", "2")
    env.update(MINIGPT_DIST_TIMEOUT="60", MINIGPT_DDP_KILL_TEST="1")
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "r" / "metrics.jsonl").exists():  # training has started
            assert job.poll() is None and time.monotonic() < deadline, job.stderr
            time.sleep(0.2)
        victims = _rank_pids(1)
        assert victims, "rank 1 not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        _, err = job.communicate(timeout=90)  # no hang: torchrun stops the other rank
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert "a process failed" in err


SLOW_RANK0 = """
import os, sys, time
from pathlib import Path
import model.train as mt
from model.startup import RunOptions

rank = int(os.environ["RANK"])
real_loss_sum = mt.loss_sum

def slow_loss_sum(*args, **kw):  # rank 0's share of the final validation is slow
    if rank == 0:
        time.sleep(float(sys.argv[3]))
    return real_loss_sum(*args, **kw)

def slow_sample(model, tokenizer, at):  # so is its sample at each evaluation
    time.sleep(float(sys.argv[3]))
    return "sample"

mt.loss_sum = slow_loss_sum
model_cfg = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
train_cfg = {"batch_size": 2, "max_iters": 4, "eval_interval": 2, "eval_iters": 1}
opts = RunOptions(data=Path(sys.argv[1]), out=Path(sys.argv[2]), device="cpu", sample=slow_sample)
result = mt.train(model_cfg, train_cfg, opts)
print(f"rank {rank} done: {result['val_loss_full']}")
"""


@pytest.mark.slow
def test_a_slow_rank0_evaluation_never_times_the_others_out(tmp_path: Path) -> None:
    """Rank 0 evaluates and samples for longer than the collective timeout (3 s): the other
    rank waits for it instead of failing in its next all-reduce."""
    data = make_data(tmp_path)
    script = tmp_path / "slow_rank0.py"
    script.write_text(SLOW_RANK0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(script), str(data), str(tmp_path / "run"), "6"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MINIGPT_DIST_TIMEOUT="3")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    finals = {line.split(":")[1] for line in proc.stdout.splitlines() if " done: " in line}
    assert len(finals) == 1 and "None" not in finals  # both ranks: the same final loss
    assert (modeldir.resolve(tmp_path / "run") / modeldir.WEIGHTS_FILE).exists()
