"""`minigpt-tui train`: train a model from a preset, a TOML file and per-flag overrides."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import typer

from minigpt_tui.errors import UserError

# Flags that override a field of GPTConfig / TrainConfig; None means "not given".
MODEL_FLAGS = (
    "block_size",
    "n_layer",
    "n_head",
    "n_embd",
    "dropout",
    "bias",
    "tie_weights",
    "vocab_size",
)
TRAIN_FLAGS = (
    "batch_size",
    "grad_accum",
    "learning_rate",
    "min_lr",
    "decay_lr",
    "max_iters",
    "warmup_iters",
    "lr_decay_iters",
    "time_budget",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "eval_interval",
    "eval_iters",
    "log_interval",
    "ckpt_interval",
    "keep_checkpoints",
    "seed",
    "dtype",
    "compile",
    "sample_interval",
)


def train(
    data: Path = typer.Option(..., "--data", "-d", help="Prepared data directory."),
    out: Path = typer.Option(Path("runs/latest-run"), "--out", "-o", help="Run directory."),
    preset: str = typer.Option(
        "cpu", help="cpu, cpu-fast, gpt2, gpt2-medium, gpt2-large, gpt2-xl."
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML file of [model]/[train] keys."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    force: bool = typer.Option(False, "--force", help="Start over in an --out that holds a run."),
    init_from: str | None = typer.Option(None, help="Start from this model's weights (fine-tune)."),
    nproc: int | None = typer.Option(
        None, help="Launch this many processes on this machine through torchrun (DDP)."
    ),
    bpe_dir: Path | None = typer.Option(None, help="Directory with GPT-2's BPE files."),
    final_eval: bool = typer.Option(True, help="Whole-split validation loss at the end."),
    samples: bool = typer.Option(True, help="Generate a text sample at each evaluation."),
    # model
    block_size: int | None = typer.Option(None, help="Context length.", rich_help_panel="Model"),
    n_layer: int | None = typer.Option(None, help="Transformer blocks.", rich_help_panel="Model"),
    n_head: int | None = typer.Option(None, help="Attention heads.", rich_help_panel="Model"),
    n_embd: int | None = typer.Option(None, help="Embedding width.", rich_help_panel="Model"),
    dropout: float | None = typer.Option(None, help="Dropout rate.", rich_help_panel="Model"),
    bias: bool | None = typer.Option(
        None, help="Biases in Linear/LayerNorm.", rich_help_panel="Model"
    ),
    tie_weights: bool | None = typer.Option(
        None, help="Tie output head to token embedding.", rich_help_panel="Model"
    ),
    vocab_size: int | None = typer.Option(
        None, help="Override (pad) the vocabulary size.", rich_help_panel="Model"
    ),
    # optimisation
    batch_size: int | None = typer.Option(
        None, help="Micro-batch size.", rich_help_panel="Training"
    ),
    grad_accum: int | None = typer.Option(
        None, help="Micro-batches per step (all processes).", rich_help_panel="Training"
    ),
    learning_rate: float | None = typer.Option(
        None, "--learning-rate", "--lr", help="Peak learning rate.", rich_help_panel="Training"
    ),
    min_lr: float | None = typer.Option(
        None, help="Final learning rate.", rich_help_panel="Training"
    ),
    max_iters: int | None = typer.Option(None, help="Optimizer steps.", rich_help_panel="Training"),
    warmup_iters: int | None = typer.Option(
        None, help="Linear warm-up steps.", rich_help_panel="Training"
    ),
    lr_decay_iters: int | None = typer.Option(
        None, help="Cosine decay length.", rich_help_panel="Training"
    ),
    decay_lr: bool | None = typer.Option(
        None,
        "--decay-lr/--constant-lr",
        help="Cosine decay, or a constant learning rate.",
        rich_help_panel="Training",
    ),
    time_budget: float | None = typer.Option(
        None,
        help="Seconds; the learning rate is scheduled over this wall-clock budget.",
        rich_help_panel="Training",
    ),
    weight_decay: float | None = typer.Option(
        None, help="AdamW weight decay (matrices only).", rich_help_panel="Training"
    ),
    beta1: float | None = typer.Option(None, help="AdamW beta1.", rich_help_panel="Training"),
    beta2: float | None = typer.Option(None, help="AdamW beta2.", rich_help_panel="Training"),
    grad_clip: float | None = typer.Option(
        None, help="Gradient norm clip (0: off).", rich_help_panel="Training"
    ),
    eval_interval: int | None = typer.Option(
        None, help="Steps between evaluations.", rich_help_panel="Training"
    ),
    eval_iters: int | None = typer.Option(
        None, help="Batches per evaluation estimate.", rich_help_panel="Training"
    ),
    log_interval: int | None = typer.Option(
        None, help="Steps between log lines.", rich_help_panel="Training"
    ),
    ckpt_interval: int | None = typer.Option(
        None, help="Steps between checkpoints.", rich_help_panel="Training"
    ),
    keep_checkpoints: int | None = typer.Option(
        None, help="Checkpoints kept on disk.", rich_help_panel="Training"
    ),
    seed: int | None = typer.Option(None, help="Random seed.", rich_help_panel="Training"),
    dtype: str | None = typer.Option(
        None, help="auto, float32, bfloat16 or float16.", rich_help_panel="Training"
    ),
    compile: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile.", rich_help_panel="Training"
    ),
    sample_interval: int | None = typer.Option(None, hidden=True),
) -> None:
    """Train a GPT on a prepared data directory (see 'minigpt-tui data prepare')."""
    given = dict(locals())
    from model.config import resolve_preset
    from model.train import RunOptions
    from model.train import train as run_training

    p = resolve_preset(preset)
    model_cfg: dict[str, Any] = dict(p.model)
    train_cfg: dict[str, Any] = dict(p.train)
    if config is not None:
        file_model, file_train = _read_toml(config)
        model_cfg.update(file_model)
        train_cfg.update(file_train)
    model_over = {k: given[k] for k in MODEL_FLAGS if given[k] is not None}
    train_over = {k: given[k] for k in TRAIN_FLAGS if given[k] is not None}
    model_cfg.update(model_over)
    train_cfg.update(train_over)
    if resume:
        if model_over:
            raise UserError(
                f"--resume keeps the checkpoint's model shape; drop {', '.join(model_over)}"
            )
        train_cfg = train_over  # the checkpoint's training config, with explicit overrides
    if nproc is not None:
        accum = int(train_cfg.get("grad_accum", 1))
        if nproc < 1:
            raise UserError(f"--nproc must be >= 1, got {nproc}")
        if accum % nproc and accum > nproc:
            raise UserError(
                f"--grad-accum ({accum}) must be divisible by --nproc ({nproc}) so that every "
                "process runs the same number of micro-batches"
            )
        _launch_torchrun(nproc, device)
        return

    import os

    from minigpt_tui.cli import invocation
    from minigpt_tui.train_view import TrainView

    view = TrainView(quiet=os.environ.get("RANK", "0") != "0")  # rank 0 speaks for the job
    opts = RunOptions(
        data=data,
        out=out,
        device=device,
        resume=resume,
        force=force,
        init_from=init_from,
        preset=preset,
        bpe_dir=str(bpe_dir) if bpe_dir else None,
        final_eval=final_eval,
        command=shlex.join(["minigpt-tui", *invocation()]),
        on_event=view.handle,
        sample=_sampler() if samples else None,
    )
    t0 = time.perf_counter()
    with view:
        result = run_training(model_cfg, train_cfg, opts)
    view.finish(result, time.perf_counter() - t0)
    if result["reason"] == "interrupted":
        raise typer.Exit(130)


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from model.config import GPTConfig, TrainConfig

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    model_keys = {f.name for f in dataclasses.fields(GPTConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model: dict[str, Any] = dict(doc.pop("model", {}))
    train: dict[str, Any] = dict(doc.pop("train", {}))
    for key, value in doc.items():  # flat keys are allowed too
        if key in model_keys:
            model[key] = value
        elif key in train_keys:
            train[key] = value
        else:
            raise UserError(f"{path}: unknown key {key!r}")
    return model, train


def _sampler() -> Any:
    """A callback that writes a short sample from the live model, for `watch`."""
    from minigpt_tui.engine import Generation
    from minigpt_tui.sampling import SamplingSettings
    from model.engine import TorchBackend
    from model.modeldir import ModelInfo

    def sample(model: Any, tokenizer: Any, at: int) -> str:
        was_training = model.training
        model.eval()
        try:
            settings = SamplingSettings(temperature=0.8, top_k=40, max_new_tokens=160, seed=at)
            info = ModelInfo(Path("."), model.config, {"tokenizer": tokenizer.spec()})
            gen = Generation(TorchBackend(info, model=model), tokenizer, [], settings)
            return "".join(ev.text for ev in gen)
        finally:
            model.train(was_training)

    return sample


def _launch_torchrun(nproc: int, device: str) -> None:
    import os
    import subprocess

    from minigpt_tui.cli import invocation

    args = invocation()
    i = args.index("--nproc") if "--nproc" in args else -1
    if i >= 0:
        del args[i : i + 2]
    else:
        args = [a for a in args if not a.startswith("--nproc=")]
    from model.train import resolve_device

    if resolve_device(device).startswith("cuda"):  # missing CUDA is a one-line error there
        import torch

        if nproc > torch.cuda.device_count():
            raise UserError(
                f"--nproc {nproc} is more than the {torch.cuda.device_count()} visible GPUs"
            )
    elif nproc > (os.cpu_count() or 1):
        raise UserError(f"--nproc {nproc} is more than the {os.cpu_count()} CPU cores here")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "minigpt_tui",
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rc = subprocess.call(cmd, env=env)
    if rc:
        raise UserError(f"torchrun exited with status {rc} (a process failed; see above)")


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(train)
