"""Training: gradient accumulation, exact resume, run-directory safety, schedules, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from model import checkpoint, modeldir
from model.config import ConfigError, GPTConfig, TrainConfig
from model.data import DataError
from model.errors import TrainingError
from model.gpt import GPT
from model.startup import RunOptions
from model.train import accumulate_gradients, learning_rate, train
from tests.helpers import cli, expect_one_line_error, make_data, train_argv

TINY = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
FAST = {
    "batch_size": 4,
    "max_iters": 30,
    "eval_interval": 10,
    "eval_iters": 2,
    "log_interval": 5,
    "ckpt_interval": 5,
    "keep_checkpoints": 20,
    "warmup_iters": 5,
    "learning_rate": 3e-3,
}


def run(data: Path, out: Path, **kw: Any) -> dict[str, Any]:
    model_cfg = {**TINY, **kw.pop("model", {})}
    train_cfg = {**FAST, **kw.pop("train", {})}
    return train(model_cfg, train_cfg, RunOptions(data=data, out=out, device="cpu", **kw))


def weights(out: Path) -> bytes:
    return (modeldir.resolve(out) / modeldir.WEIGHTS_FILE).read_bytes()


def test_gradient_accumulation_equals_one_big_batch() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=16)
    a, b = GPT(cfg), GPT(cfg)
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 30, (8, 8))
    y = torch.randint(0, 30, (8, 8))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    accumulate_gradients(a, iter([(x, y)]), 1, contextlib.nullcontext(), scaler)
    micro = iter([(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)])
    accumulate_gradients(b, micro, 4, contextlib.nullcontext(), scaler)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert pa.grad is not None and pb.grad is not None
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_training_lowers_the_loss_and_writes_a_run(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    result = run(data, tmp_path / "run", train={"max_iters": 60})
    assert result["reason"] == "done" and result["iter"] == 60
    info = modeldir.read(tmp_path / "run")
    assert info.path.name == "step-000060"
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    first_loss = next(e["loss"] for e in events if e["event"] == "train")
    assert info.meta["summary"]["val_loss_full"] < first_loss - 0.5
    assert info.meta["training"]["config"]["max_iters"] == 60


def test_resume_after_interruption_is_bit_exact(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run(data, tmp_path / "straight")

    def interrupt_at_12(event: dict[str, Any]) -> None:
        if event["event"] == "train" and event["iter"] == 10:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl+C: stop after this step, saving

    first = run(data, tmp_path / "resumed", on_event=interrupt_at_12)
    assert first["reason"] == "interrupted" and first["iter"] == 10
    second = run(data, tmp_path / "resumed", resume=True, train={})
    assert second["iter"] == 30
    assert weights(tmp_path / "resumed") == weights(tmp_path / "straight")


def test_resume_from_an_older_checkpoint_is_bit_exact(tmp_path: Path) -> None:
    """A crash after step 15's checkpoint: steps 16-19 are lost and redone identically."""
    data = make_data(tmp_path)
    run(data, tmp_path / "straight")
    run(data, tmp_path / "crashed", train={"max_iters": 30})
    out = tmp_path / "crashed"
    modeldir.point_latest(out, out / "step-000015")
    run(data, out, resume=True, train={})
    assert weights(out) == weights(tmp_path / "straight")


MUON = {"optimizer": "muon", "schedule": "trapezoid", "cooldown": 0.4, "zero_init": True}


def test_muon_run_resumes_bit_exactly(tmp_path: Path) -> None:
    """Muon's momentum and its AdamW part's moments go into trainer.pt and come back exactly."""
    data = make_data(tmp_path)
    run(data, tmp_path / "straight", train=MUON)

    def interrupt_at_10(event: dict[str, Any]) -> None:
        if event["event"] == "train" and event["iter"] == 10:
            os.kill(os.getpid(), signal.SIGINT)

    first = run(data, tmp_path / "resumed", on_event=interrupt_at_10, train=MUON)
    assert first["reason"] == "interrupted" and first["iter"] == 10
    state = torch.load(modeldir.resolve(tmp_path / "resumed") / "trainer.pt", weights_only=True)[
        "optimizer"
    ]
    assert [g["use_muon"] for g in state["param_groups"]] == [True, False, False]
    assert any("momentum_buffer" in s for s in state["state"].values())
    run(data, tmp_path / "resumed", resume=True, train={})
    assert weights(tmp_path / "resumed") == weights(tmp_path / "straight")


def test_resume_with_another_optimizer_is_refused(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run(data, tmp_path / "run", train={"max_iters": 5})
    with pytest.raises(TrainingError, match="optimizer"):
        run(data, tmp_path / "run", resume=True, train={"optimizer": "muon"})


def test_zero_init_starts_with_zero_projections(tmp_path: Path) -> None:
    from model import checkpoint

    data = make_data(tmp_path)
    run(data, tmp_path / "run", train={**MUON, "max_iters": 1, "learning_rate": 1e-12})
    model, _ = checkpoint.load(str(tmp_path / "run"))
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.abs().max() < 1e-9, name


def test_out_directory_with_a_run_is_refused_without_resume_or_force(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run(data, tmp_path / "run", train={"max_iters": 5})
    before = weights(tmp_path / "run")
    with pytest.raises(TrainingError, match="already holds a training run"):
        run(data, tmp_path / "run", train={"max_iters": 5})
    assert weights(tmp_path / "run") == before
    run(data, tmp_path / "run", force=True, train={"max_iters": 10, "seed": 5})
    assert modeldir.read(tmp_path / "run").path.name == "step-000010"
    assert (tmp_path / "run" / "step-000005" / "model.safetensors").read_bytes() != before
    starts = (tmp_path / "run" / "metrics.jsonl").read_text().count('"event": "start"')
    assert starts == 1  # the old run's log went with it


def test_resume_without_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no checkpoint"):
        run(make_data(tmp_path), tmp_path / "empty", resume=True)


def test_keeps_only_the_newest_checkpoints(tmp_path: Path) -> None:
    run(make_data(tmp_path), tmp_path / "run", train={"keep_checkpoints": 2})
    names = sorted(p.name for p in (tmp_path / "run").glob("step-*"))
    assert names == ["step-000025", "step-000030"]


def test_missing_and_short_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        run(tmp_path / "nope", tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no meta\.json"):
        run(tmp_path / "empty", tmp_path / "run")
    short = make_data(tmp_path, text="ab\n" * 60)
    with pytest.raises(DataError, match="fewer than block_size"):
        run(short, tmp_path / "run", model={"block_size": 64})


def test_cuda_without_cuda_is_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(TINY, FAST, RunOptions(data=tmp_path, out=tmp_path / "r", device="cuda"))


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    assert learning_rate(cfg, 0) == pytest.approx(1e-3 / 11)
    assert learning_rate(cfg, 10) == pytest.approx(1e-3)
    assert learning_rate(cfg, 60) == pytest.approx(5.5e-4)
    assert learning_rate(cfg, 110) == pytest.approx(1e-4)
    assert learning_rate(cfg, 50, progress=1.0) == pytest.approx(1e-4)  # time-budget mode
    constant = TrainConfig(learning_rate=3e-4, decay_lr=False, warmup_iters=0, max_iters=4000)
    assert learning_rate(constant, 0) == learning_rate(constant, 3999) == 3e-4
    trap = TrainConfig(
        learning_rate=1e-3, min_lr=0.0, warmup_iters=10, max_iters=110, schedule="trapezoid"
    )
    assert learning_rate(trap, 0) == pytest.approx(1e-3 / 11)
    assert learning_rate(trap, 60) == pytest.approx(1e-3)  # flat until half-way
    assert learning_rate(trap, 85) == pytest.approx(5e-4)
    assert learning_rate(trap, 110) == pytest.approx(0.0)
    assert learning_rate(trap, 50, progress=0.75) == pytest.approx(5e-4)


def test_time_budget_stops_the_run(tmp_path: Path) -> None:
    result = run(
        make_data(tmp_path),
        tmp_path / "run",
        train={"max_iters": 10**6, "time_budget": 1.5, "eval_interval": 10**5},
    )
    assert result["reason"] == "done" and 0 < result["iter"] < 10**6


def test_bfloat16_autocast_on_cpu_trains(tmp_path: Path) -> None:
    result = run(make_data(tmp_path), tmp_path / "run", train={"dtype": "bfloat16"})
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    first_loss = next(e["loss"] for e in events if e["event"] == "train")
    assert result["val_loss_full"] < first_loss - 0.3


def test_cli_run_writes_text_samples_for_the_dashboard(tmp_path: Path) -> None:
    from tests.helpers import cli

    data = make_data(tmp_path)
    out = tmp_path / "run"
    code = cli(
        "train",
        "--data",
        data,
        "--out",
        out,
        "--block-size",
        "16",
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--max-iters",
        "4",
        "--eval-interval",
        "2",
        "--eval-iters",
        "1",
        "--device",
        "cpu",
    )
    assert code == 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    samples = [e for e in events if e["event"] == "sample"]
    assert [e["iter"] for e in samples] == [2, 4]
    assert all(e["text"] for e in samples)


def test_resume_with_a_config_file_keeps_its_settings(tmp_path: Path) -> None:
    """`train --resume --config run.toml` applies the file's [train] settings (they were
    once dropped: only flags reached a resumed run)."""
    from tests.helpers import cli

    data, out, config = make_data(tmp_path), tmp_path / "run", tmp_path / "run.toml"
    shape = "[model]\nblock_size = 16\nn_layer = 2\nn_head = 2\nn_embd = 16\n"
    config.write_text(shape + "[train]\nmax_iters = 4\neval_interval = 2\neval_iters = 1\n")
    common = ("--data", data, "--out", out, "--config", config, "--device", "cpu", "--no-samples")
    assert cli("train", *common, "--no-final-eval") == 0
    assert modeldir.read(out).path.name == "step-000004"
    config.write_text(shape + "[train]\nmax_iters = 6\neval_interval = 2\neval_iters = 1\n")
    assert cli("train", *common, "--no-final-eval", "--resume") == 0
    info = modeldir.read(out)
    assert info.path.name == "step-000006"
    assert info.meta["training"]["config"]["max_iters"] == 6


def test_sample_interval_samples_apart_from_evaluations(tmp_path: Path) -> None:
    from tests.helpers import cli

    data, out = make_data(tmp_path), tmp_path / "run"
    shape = ("--block-size", "16", "--n-layer", "2", "--n-head", "2", "--n-embd", "16")
    every = (
        "--max-iters",
        "6",
        "--eval-interval",
        "4",
        "--eval-iters",
        "1",
        "--sample-interval",
        "3",
    )
    assert cli("train", "--data", data, "--out", out, *shape, *every, "--device", "cpu") == 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [e["iter"] for e in events if e["event"] == "sample"] == [3, 6]
    assert [e["iter"] for e in events if e["event"] == "eval" and "val_loss" in e] == [4, 6]


def test_init_from_with_a_shorter_block_crops_the_model(tmp_path: Path) -> None:
    from tests.helpers import make_model

    base = make_model(tmp_path, block_size=32)
    out = tmp_path / "tuned"
    result = run(make_data(tmp_path), out, init_from=str(base), train={"max_iters": 5})
    assert result["iter"] == 5
    info = modeldir.read(out)
    assert info.config.block_size == TINY["block_size"] == 16
    assert info.meta["training"]["init_from"] == str(base)


def test_init_from_has_the_models_shape_and_refuses_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import cli, expect_one_line_error, make_model

    base, data = make_model(tmp_path, block_size=32), make_data(tmp_path)
    args = ["train", "--data", data, "--init-from", base, "--device", "cpu", "--no-samples"]
    line = expect_one_line_error(capsys, *args, "--out", tmp_path / "a", "--n-layer", "3")
    assert "differs in n_layer" in line and not (tmp_path / "a").exists()
    # The preset's shape (cpu: block 64, 4 layers) does not apply: the model's does.
    assert cli(*args, "--out", tmp_path / "b", "--max-iters", "2", "--eval-iters", "1") == 0
    assert modeldir.read(tmp_path / "b").config == modeldir.read(base).config


def test_resume_refuses_force_and_init_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import expect_one_line_error, make_model

    data, out = make_data(tmp_path), tmp_path / "run"
    run(data, out, train={"max_iters": 10})
    before = weights(out)
    for extra in (["--force"], ["--init-from", str(make_model(tmp_path))]):
        argv = ["train", "--data", data, "--out", out, "--resume", "--max-iters", "20", *extra]
        assert f"drop {extra[0]}" in expect_one_line_error(capsys, *argv)
        assert weights(out) == before and modeldir.read(out).path.name == "step-000010"


def test_resuming_a_finished_run_says_there_is_nothing_to_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import cli

    data, out = make_data(tmp_path), tmp_path / "run"
    run(data, out, train={"max_iters": 10})
    capsys.readouterr()
    assert cli("train", "--data", data, "--out", out, "--resume", "--max-iters", "5") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "already at iteration 10 (--max-iters 5): nothing to train" in err
    run(data, tmp_path / "budget", train={"max_iters": 10**6, "time_budget": 0.2})
    assert cli("train", "--data", data, "--out", tmp_path / "budget", "--resume") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "already spent its --time-budget of 0.2 s: nothing to train" in err


def test_flags_the_run_leaves_unused_get_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import cli

    data = make_data(tmp_path)
    tiny = ["--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--block-size", "16"]
    args = ["--max-iters", "1", "--eval-iters", "1", "--no-final-eval", *tiny]
    given = ["--cooldown", "0.3", "--muon-momentum", "0.9", "--sample-interval", "5"]
    assert cli("train", "--data", data, "--out", tmp_path / "a", *args, *given, "--no-samples") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "note: --cooldown is unused: only --schedule trapezoid has a cooldown" in err
    assert "note: --muon-momentum is unused: the optimizer is not muon" in err
    assert "note: --sample-interval is unused with --no-samples" in err
    used = ["--schedule", "trapezoid", "--decay-lr", "--optimizer", "muon", "--no-samples"]
    assert cli("train", "--data", data, "--out", tmp_path / "b", *args, *given[:4], *used) == 0
    assert "note:" not in capsys.readouterr().err  # each flag is used this time
    # The cpu preset (the default) keeps a constant learning rate: nothing decays.
    constant = ["--lr-decay-iters", "5", "--cooldown", "0.3", "--schedule", "trapezoid"]
    assert cli("train", "--data", data, "--out", tmp_path / "c", *args, *constant) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--lr-decay-iters is unused: the learning rate is constant" in err
    assert "--cooldown is unused: the learning rate is constant" in err
    budget = ["--time-budget", "1", "--lr-decay-iters", "5", "--decay-lr", "--no-samples"]
    assert cli("train", "--data", data, "--out", tmp_path / "d", *args, *budget) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--lr-decay-iters is unused with --time-budget" in err


@pytest.mark.slow
def test_a_batch_too_large_for_memory_is_one_line(tmp_path: Path) -> None:
    """A batch that cannot be allocated (here under a 6 GB address-space limit) ends in one
    error line, not torch's traceback."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    tiny = ["--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--block-size", "16"]
    argv = ["train", "--data", str(make_data(tmp_path)), "--out", str(tmp_path / "run"), *tiny]
    res = subprocess.run(
        [sys.executable, "-m", "minigpt_tui", *argv, "--batch-size", "3000000", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"},
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith("error: out of memory") and "--batch-size" in lines[-1]


def test_lr_decay_iters_ends_the_decay_of_either_schedule_as_its_help_says() -> None:
    import dataclasses

    for schedule in ("cosine", "trapezoid"):
        cfg = TrainConfig(
            max_iters=100, warmup_iters=0, lr_decay_iters=50, min_lr=0.0, schedule=schedule
        )
        assert learning_rate(cfg, 25) > 0 and learning_rate(cfg, 50) == pytest.approx(0.0)
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    assert "Cosine" not in helps["lr_decay_iters"] and "--time-budget" in helps["lr_decay_iters"]
    assert "Cosine" not in helps["decay_lr"]  # --decay-lr decays as --schedule says


def test_time_budget_progress_bar_stays_put_at_evaluations() -> None:
    import io

    from rich.console import Console

    from minigpt_tui.train_view import TrainView

    view = TrainView(Console(file=io.StringIO(), force_terminal=True))
    model = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16}
    with view:
        view.handle(
            {
                "event": "start",
                "iter": 0,
                "max_iters": 10**6,
                "time_budget": 60.0,
                "resumed": False,
                "params": 1000,
                "tokens_per_step": 64,
                "config": {"model": model, "train": {}},
                "device": "cpu",
                "dtype": "float32",
                "world_size": 1,
            }
        )
        train_event = {"iter": 50, "loss": 2.0, "lr": 1e-3, "tokens_per_sec": 1e4, "elapsed": 30.0}
        view.handle({"event": "train", **train_event})  # type: ignore[typeddict-item]
        view.handle({"event": "eval", "iter": 50, "train_loss": 2.0, "val_loss": 2.1})
        assert view.progress is not None
        assert view.progress.tasks[0].completed == 30.0  # seconds of the budget, not iterations


def test_every_config_field_is_a_train_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from tests.helpers import cli

    monkeypatch.setenv("COLUMNS", "200")
    assert cli("train", "--help") == 0
    shown = capsys.readouterr().out
    for cls in (GPTConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            flag = (f.metadata["flags"] or (f"--{f.name.replace('_', '-')}",))[0]
            assert flag.split("/")[0] in shown and f.metadata["help"] in shown, f.name


# ---------------------------------------------------------- run-directory safety


def test_a_diverging_run_never_saves_non_finite_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = make_data(tmp_path), tmp_path / "run"
    ckpt = ["--ckpt-interval", "3", "--eval-interval", "3", "--log-interval", "1000"]
    assert cli(*train_argv(data, out, "--max-iters", "3", *ckpt)) == 0
    good = (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes()
    line = expect_one_line_error(
        capsys, *train_argv(data, out, "--resume", "--max-iters", "60", "--lr", "1e9", *ckpt)
    )
    assert "training diverged" in line and "step-000003 is still latest" in line
    assert os.readlink(out / "latest") == "step-000003"
    assert (out / "latest" / modeldir.WEIGHTS_FILE).read_bytes() == good
    for step in out.glob("step-*"):  # every checkpoint left loads and is finite
        checkpoint.load(step)


def test_a_run_directory_is_held_by_one_run_and_a_killed_holder_does_not_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    data, out = make_data(tmp_path), tmp_path / "run"
    assert cli(*train_argv(data, out, "--max-iters", "2")) == 0
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from model import rundir\n"
         "with rundir.locked(Path(sys.argv[1])) as claim:\n"
         "    claim(); print('held', flush=True); time.sleep(120)",
         str(out)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for extra in (["--resume", "--max-iters", "4"], ["--force", "--max-iters", "2"]):
            line = expect_one_line_error(capsys, *train_argv(data, out, *extra))
            assert f"being written by another training run (process {holder.pid})" in line
        (out / ".train.pid").unlink()  # the kernel's lock table still names the holder
        line = expect_one_line_error(capsys, *train_argv(data, out, "--resume"))
        assert f"(process {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait(10)
    (out / ".train.pid").write_text(f"{holder.pid}\n")  # a stale id, as kill -9 leaves it
    assert cli(*train_argv(data, out, "--resume", "--max-iters", "4")) == 0
    assert os.readlink(out / "latest") == "step-000004"
    assert not (out / ".train.pid").exists()


def test_a_tiny_time_budget_still_leaves_a_run_that_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = make_data(tmp_path), tmp_path / "run"
    assert cli(*train_argv(data, out, "--time-budget", "1e-9", "--max-iters", "50")) == 0
    assert os.readlink(out / "latest") == "step-000001"
    assert cli(*train_argv(data, out, "--resume", "--time-budget", "600", "--max-iters", "3")) == 0
    assert os.readlink(out / "latest") == "step-000003"
    # A run that stopped before its first checkpoint: --resume says what to do.
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.jsonl").write_text('{"event": "start", "iter": 0}\n')
    line = expect_one_line_error(capsys, *train_argv(data, tmp_path / "early", "--resume"))
    assert "stopped before saving a checkpoint; start it over with --force" in line
