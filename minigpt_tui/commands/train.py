"""`minigpt-tui train`: train a model from a preset, a TOML file and per-flag overrides."""

from __future__ import annotations

import dataclasses
import inspect
import shlex
import sys
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minigpt_tui import invocation
from minigpt_tui.errors import UserError
from minigpt_tui.models import resolve_model
from model.config import GPTConfig, TrainConfig, resolve_preset

if TYPE_CHECKING:
    from minigpt_tui.train_view import TrainView

# Every field of these configs is also a flag (`--n-layer`, `--lr`, ...), built from the field's
# type, help text and flag names (model/config.py); None means "not given".
SETTINGS = ((GPTConfig, "Model"), (TrainConfig, "Training"))
FINAL_EVAL_TOKENS = 1_000_000
FINAL_EVAL_HELP = (
    "The final validation predicts at most this many tokens, in evenly spaced windows of a "
    "larger split; 0: the whole split, however long. Ctrl+C skips it (the checkpoint is kept)."
)
MODEL_FLAGS = tuple(f.name for f in dataclasses.fields(GPTConfig))
TRAIN_FLAGS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def train(
    data: Path = typer.Option(..., "--data", "-d", help="Prepared data directory."),
    out: Path = typer.Option(Path("runs/latest-run"), "--out", "-o", help="Run directory."),
    preset: str = typer.Option(
        "cpu",
        help="cpu, cpu-fast, cpu-10min, gpt2, gpt2-medium, gpt2-large, gpt2-xl, or sft "
        "(fine-tuning on conversations, with --init-from).",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file of \\[model]/\\[train] keys."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    force: bool = typer.Option(False, "--force", help="Start over in an --out that holds a run."),
    init_from: str | None = typer.Option(
        None,
        help="Start from this model's weights and shape (fine-tune): a model or run directory, "
        "or a bundled model's name.",
    ),
    nproc: int | None = typer.Option(
        None, help="Launch this many processes on this machine through torchrun (DDP)."
    ),
    bpe_dir: Path | None = typer.Option(None, help="Directory with GPT-2's BPE files."),
    text_data: Path | None = typer.Option(
        None,
        help="Prepared plain-text data whose loss is measured before the first step and after "
        "the last (fine-tuning on conversations: what it forgot). Its tokenizer is the data's, "
        "or the one a chat tokenizer grew from.",
    ),
    final_eval: bool = typer.Option(True, help="Whole-split validation loss at the end."),
    final_eval_tokens: int = typer.Option(FINAL_EVAL_TOKENS, min=0, help=FINAL_EVAL_HELP),
    samples: bool = typer.Option(
        True, help="Generate text samples (at each evaluation, or every --sample-interval steps)."
    ),
    **settings: Any,  # one per config field: see _setting_parameters
) -> None:
    """Train a GPT on a prepared data directory (see 'minigpt-tui data prepare')."""
    from model.startup import RunOptions
    from model.train import train as run_training

    if resume and (force or init_from):
        given = "--force" if force else "--init-from"
        raise UserError(f"--resume continues the run in --out; drop {given}")
    model_cfg, train_cfg = _configs(preset, config, resume, bool(init_from), settings)
    start = resolve_model(init_from) if init_from else None  # a bundled model's name too
    _check_paths(out, data, start)
    if nproc is not None:
        _check_nproc(nproc, int(train_cfg.get("grad_accum", 1)))
        _launch_torchrun(nproc, device)
        return

    view = _view(None if resume else _unused_flags(settings, train_cfg, samples))
    opts = RunOptions(
        data=data,
        out=out,
        device=device,
        resume=resume,
        force=force,
        init_from=str(start) if start else None,
        preset=preset,
        bpe_dir=str(bpe_dir) if bpe_dir else None,
        text_data=text_data,
        final_eval=final_eval,
        final_eval_tokens=final_eval_tokens or None,
        command=shlex.join(["minigpt-tui", *invocation.args()]),
        on_event=view.handle,
        on_progress=view.final_eval_progress,
        sample=_sampler() if samples else None,
    )
    t0 = time.perf_counter()
    with view:
        result = run_training(model_cfg, train_cfg, opts)
    view.finish(result, time.perf_counter() - t0)
    if result["reason"] == "interrupted":
        raise typer.Exit(130)


def _check_paths(out: Path, data: Path, start: Path | None) -> None:
    """A run written inside what it reads is refused."""
    from model.modeldir import check_not_input

    starts = [start] if start is not None and start.expanduser().exists() else []
    check_not_input(out, [data, *starts])


def _check_nproc(nproc: int, accum: int) -> None:
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if accum % nproc and accum > nproc:
        raise UserError(
            f"--grad-accum ({accum}) must be divisible by --nproc ({nproc}) so that every "
            "process runs the same number of micro-batches"
        )


def _view(notes: list[str] | None) -> TrainView:
    """The training view (rank 0 speaks for the job), with its notes about unused flags (None
    for a resumed run: its settings are its checkpoint's, read later)."""
    import os

    from minigpt_tui.train_view import TrainView

    view = TrainView(quiet=os.environ.get("RANK", "0") != "0")
    for note in notes or []:
        view.note(note)
    return view


def _configs(
    preset: str, config: Path | None, resume: bool, init_from: bool, settings: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and train settings the run asks for: the preset, then the TOML file, then the
    flags. A resumed run keeps its checkpoint's configs: only the file's and the flags' train
    settings change them, and its model settings may only repeat the checkpoint's. A run
    --init-from another model has that model's shape, not the preset's: the file's and the
    flags' model settings may only shorten its block, change its dropout or repeat it."""
    p = resolve_preset(preset)
    if preset == "sft" and not (init_from or resume):
        raise UserError("--preset sft fine-tunes a model: give --init-from MODEL")
    file_model, file_train = _read_toml(config) if config is not None else ({}, {})
    model_over = {k: settings[k] for k in MODEL_FLAGS if settings[k] is not None}
    train_over = {k: settings[k] for k in TRAIN_FLAGS if settings[k] is not None}
    if resume:
        if model_over:
            raise UserError(
                f"--resume keeps the checkpoint's model shape; drop {', '.join(model_over)}"
            )
        return file_model, {**file_train, **train_over}
    if init_from:
        return {**file_model, **model_over}, {**p.train, **file_train, **train_over}
    return {**p.model, **file_model, **model_over}, {**p.train, **file_train, **train_over}


def _unused_flags(settings: dict[str, Any], train_cfg: dict[str, Any], samples: bool) -> list[str]:
    """Flags given on the command line that the run's other settings leave unused: each is
    one note (presets and scripts combine them freely, so they are not refused)."""
    cfg = TrainConfig().to_dict() | train_cfg
    given = {name for name in TRAIN_FLAGS if settings.get(name) is not None}
    notes = []
    constant = "the learning rate is constant (--decay-lr schedules it)"
    if "cooldown" in given and cfg["schedule"] != "trapezoid":
        notes.append("--cooldown is unused: only --schedule trapezoid has a cooldown")
    elif "cooldown" in given and not cfg["decay_lr"]:
        notes.append(f"--cooldown is unused: {constant}")
    if "lr_decay_iters" in given and not cfg["decay_lr"]:
        notes.append(f"--lr-decay-iters is unused: {constant}")
    elif "lr_decay_iters" in given and cfg["time_budget"] is not None:
        notes.append("--lr-decay-iters is unused with --time-budget: the decay spans the budget")
    if "muon_momentum" in given and cfg["optimizer"] != "muon":
        notes.append("--muon-momentum is unused: the optimizer is not muon (--optimizer muon)")
    if "sample_interval" in given and not samples:
        notes.append("--sample-interval is unused with --no-samples")
    return notes


def _setting_parameters() -> list[inspect.Parameter]:
    """One typer option per config field: `--field-name` (or the field's own flag names), of
    the field's type, defaulting to None (not given), in the config's help panel."""
    params = []
    for cls, panel in SETTINGS:
        types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = next(
                t for t in (*typing.get_args(types[f.name]), types[f.name]) if t is not type(None)
            )
            option = typer.Option(
                None, *f.metadata["flags"], help=f.metadata["help"], rich_help_panel=panel
            )
            params.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
                )
            )
    return params


def _with_settings(command: Any) -> Any:
    """Give `command` (which takes **settings) one parameter per config field, for typer."""
    sig = inspect.signature(command)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    extra = _setting_parameters()
    command.__signature__ = sig.replace(parameters=[*fixed, *extra])
    command.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k != "settings"},
        **{p.name: p.annotation for p in extra},
    }
    return command


train = _with_settings(train)


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from model import userfile

    try:
        doc = userfile.read_toml(path, userfile.TOML_MAX_BYTES)
    except (OSError, userfile.UserFileError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    model: dict[str, Any] = dict(doc.pop("model", {}))
    train: dict[str, Any] = dict(doc.pop("train", {}))
    for key, value in doc.items():  # flat keys are allowed too
        if key in MODEL_FLAGS:
            model[key] = value
        elif key in TRAIN_FLAGS:
            train[key] = value
        else:
            raise UserError(f"{path}: unknown key {key!r}")
    return model, train


def _sampler() -> Any:
    """A callback that writes a short sample from the live model, for `watch`."""
    from minigpt_tui.generation import Generation
    from minigpt_tui.sampling import SamplingSettings
    from model.modeldir import ModelInfo
    from model.torch_backend import TorchBackend

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

    args = invocation.args()
    i = args.index("--nproc") if "--nproc" in args else -1
    if i >= 0:
        del args[i : i + 2]
    else:
        args = [a for a in args if not a.startswith("--nproc=")]
    from model.device import resolve_device

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
