"""Hostile files: spoiled model directories, data directories and weights are refused in one line
by every command that reads them, without running or allocating anything.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import json
import math
import random
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from model import checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from tests.helpers import TINY_SHAPE, expect_one_line_error, tiny_train_args


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
    expect_one_line_error(
        capsys, *tiny_train_args(data, tmp_path / "run", *TINY_SHAPE, "--max-iters", "2")
    )
    expect_one_line_error(
        capsys, "train", "--data", data, "--out", tmp_path / "ft", "--init-from", good[0], *ONE_STEP
    )


def test_non_finite_weights_are_refused_by_every_command(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "nan"
    shutil.copytree(evil["model"], model)
    weights = load_numpy(str(model / modeldir.WEIGHTS_FILE))
    weights["ln_f.weight"][:] = np.nan
    save_numpy(weights, str(model / modeldir.WEIGHTS_FILE))
    for argv in (
        ["generate", "-m", model, "--backend", "torch", "-n", "2", "hi"],
        ["eval", model, "--data", evil["data"], "--device", "cpu"],
        ["export", "onnx", model, "--out", tmp_path / "o"],
        [
            "train",
            "--data",
            evil["data"],
            "--out",
            tmp_path / "ft",
            "--init-from",
            model,
            "--max-iters",
            "1",
            "--device",
            "cpu",
        ],
    ):
        line = expect_one_line_error(capsys, *argv)
        assert "non-finite" in line, line
    # An ONNX model that computes NaN: the sampler says so instead of printing garbage.
    from minigpt_tui.sampling import SamplingError, SamplingSettings, distribution

    with pytest.raises(SamplingError, match="not finite"):
        distribution(np.array([0.0, math.nan]), SamplingSettings())
