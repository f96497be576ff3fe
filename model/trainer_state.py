"""trainer.pt: what a checkpoint holds besides its weights so that --resume continues the run
bit-exactly on CPU. The whole format is here:

    step           optimizer steps taken
    optimizer      the optimizer's state_dict (AdamW's moments, or Muon's and AdamW's)
    scaler         the float16 GradScaler's state_dict, {} when it is off
    rng_torch      every process' torch RNG state (dropout masks), by rank
    rng_data       the batch generator's state (model/batches.py)
    elapsed        seconds of training so far, over all resumes
    best_val_loss  the lowest validation estimate so far

`capture` makes it from the trainer's parts and `write` stores it in a checkpoint being
staged (model/checkpoint.py's `save`); `load` reads it back, tensors and plain containers
only; `check` refuses, in one line, one that does not belong to the model, before any of it
reaches torch; `restore` puts it back into the optimizer, scaler and RNGs.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model import modeldir
from model.device import Dist
from model.errors import TrainingError, first_line
from model.modeldir import ModelDirError, ModelInfo


def capture(
    step: int,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rng_torch: list[Any],
    data_gen: torch.Generator,
    elapsed: float,
    best_val: float,
) -> dict[str, Any]:
    """The state of a run at `step`; rng_torch: every process' RNG state (by rank)."""
    return {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng_torch": rng_torch,
        "rng_data": data_gen.get_state(),
        "elapsed": elapsed,
        "best_val_loss": best_val,
    }


def write(directory: Path, state: dict[str, Any]) -> None:
    """Store `state` as the trainer.pt of a checkpoint directory being written."""
    torch.save(state, directory / modeldir.TRAINER_FILE)


def load(info: ModelInfo) -> dict[str, Any]:
    """A checkpoint's trainer.pt, never unpickling anything but tensors and plain containers."""
    path = info.path / modeldir.TRAINER_FILE
    if not path.is_file():
        raise ModelDirError(f"{info.path} has no {modeldir.TRAINER_FILE}; cannot resume from it")
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickles, advising unsafety
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        reason = first_line(e)
        if "weights_only" in str(e) or "Weights only load failed" in reason:
            reason = "it holds Python objects, not only tensors, and is never unpickled"
        raise ModelDirError(f"cannot load {path}: {reason}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ModelDirError(f"{path} is not a minigpt-tui trainer state")
    return state


def check(state: dict[str, Any], optimizer: torch.optim.Optimizer, where: str) -> None:
    """Refuse, in one line, a trainer.pt that does not belong to this model, before any of it
    reaches torch (one copied from a run of another width made fused AdamW abort in C++): its
    parameter groups, and every optimizer moment's shape, must be this optimizer's, and its
    RNG states must be byte tensors. `where` names the file in the messages."""
    ours = [p.shape for group in optimizer.param_groups for p in group["params"]]
    try:
        groups = state["optimizer"]["param_groups"]
        moments = state["optimizer"]["state"]
        ids = [i for group in groups for i in group["params"]]
        shapes = {
            i: t.shape
            for i, m in moments.items()
            for name, t in m.items()
            if name in ("exp_avg", "exp_avg_sq") and isinstance(t, torch.Tensor)
        }
        rng = [state["rng_data"], *state["rng_torch"]]
        step = state["step"]
    except (KeyError, TypeError, AttributeError) as e:
        raise TrainingError(f"{where} is not a complete trainer state ({e!s})") from None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise TrainingError(f"{where} has no valid step ({step!r})")
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng):
        raise TrainingError(f"{where} holds no valid random-number states")
    fits = len(groups) == len(optimizer.param_groups) and len(ids) == len(ours)
    fits = fits and all(shapes.get(i, shape) == shape for i, shape in zip(ids, ours, strict=False))
    if not fits:
        raise TrainingError(
            f"{where} belongs to a model of another shape (its optimizer holds "
            f"{len(ids)} tensors of other sizes); it cannot resume this checkpoint"
        )


@dataclass
class Restored:
    """The counters a resumed run continues from."""

    step: int
    elapsed: float
    best_val: float


def restore(
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data_gen: torch.Generator,
    dist: Dist,
    seed: int,
    where: str,
) -> Restored:
    """Check `state` and put it back (the counterpart of `capture`): the optimizer's and
    scaler's states, this process' torch RNG and the batch generator."""
    check(state, optimizer, where)
    step = int(state["step"])
    try:  # what the check cannot see (an RNG state of the wrong length) fails in Python
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch_states = state["rng_torch"]  # one per process (dropout masks)
        if len(torch_states) == dist.world_size:
            torch.set_rng_state(torch_states[dist.rank])
        else:  # resumed on a different number of processes: a fresh stream per process
            torch.manual_seed(seed + step + 7919 * dist.rank)
        data_gen.set_state(state["rng_data"])
        elapsed = float(state.get("elapsed", 0.0))
        best_val = float(state.get("best_val_loss", float("inf")))
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise TrainingError(f"cannot resume from {where}: {first_line(e)}") from None
    return Restored(step, elapsed, best_val)
