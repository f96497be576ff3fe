"""trainer.pt (model/trainer_state.py): never unpickled, and one that is hostile, broken or from
another model is refused in one line before any of it reaches torch.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from model import modeldir, trainer_state
from tests.helpers import cli, expect_one_line_error, make_data, make_model, train_argv

ROOT = Path(__file__).resolve().parents[1]


class PickleBomb:
    """Runs a shell command when unpickled, if anything ever unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


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


def test_a_raw_pickle_trainer_state_is_one_plain_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    tiny = make_model(tmp_path)
    data = make_data(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tiny, run / "step-000005")
    modeldir.point_latest(run, run / "step-000005")
    (run / "step-000005" / modeldir.TRAINER_FILE).write_bytes(
        pickle.dumps({"step": 5, "x": os.sep})
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = expect_one_line_error(capsys, "train", "--data", data, "--out", run, "--resume")
    assert not caught, [str(w.message) for w in caught]  # no advice to unpickle it unsafely
    assert "trainer.pt" in line and "weights_only" not in line


def test_trainer_state_of_another_shape_is_refused_before_torch_sees_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(tmp_path)
    for width in (16, 32):
        out = tmp_path / f"w{width}"
        assert cli(*train_argv(data, out, "--max-iters", "2", width=width)) == 0
    narrow = tmp_path / "w16" / "step-000002" / modeldir.TRAINER_FILE
    wide = tmp_path / "w32" / "step-000002" / modeldir.TRAINER_FILE
    shutil.copyfile(narrow, wide)
    line = expect_one_line_error(capsys, *train_argv(data, tmp_path / "w32", "--resume"))
    assert "belongs to a model of another shape" in line
    state = torch.load(narrow, weights_only=True)
    state["rng_data"] = torch.zeros(3, dtype=torch.uint8)  # an RNG state of the wrong length
    torch.save(state, tmp_path / "w16" / "step-000002" / modeldir.TRAINER_FILE)
    line = expect_one_line_error(capsys, *train_argv(data, tmp_path / "w16", "--resume"))
    assert "cannot resume from trainer.pt" in line
