"""CUDA paths: the model, the KV-cache engine and the sampler agree with the CPU; mixed precision,
fused AdamW, --compile, checkpoints and exact resume work through the real train command.

Marked `gpu` and skipped where CUDA is absent (CI runs on CPU). `benchmarks/gpu_check.py` runs
them on a GPU machine (`pytest -m gpu tests/test_gpu.py`). MINIGPT_GPU_TESTS_DEVICE=cpu runs the
same tests with the CPU in place of the GPU (float16 excepted), to check the tests themselves.

Bounds: float32 with TF32 off, GPU against CPU, the largest logit difference is under 1e-4
(different kernels sum in different orders; the tiny models' logits are O(1)); the greedy tokens
and the seeded samples of a whole generation are the same on both.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from minigpt_tui.generation import Generation
from minigpt_tui.sampling import SamplingSettings
from model import checkpoint, modeldir, trainer_state
from model.torch_backend import TorchBackend
from tests.helpers import TEXT, cli, make_data, make_model

# Deterministic cuBLAS for the bit-exact resume test; read when cuBLAS starts, so set it first.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

DEVICE = os.environ.get("MINIGPT_GPU_TESTS_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs CUDA"),
]

LOGIT_TOL = 1e-4
TINY = ["--block-size", "32", "--n-layer", "2", "--n-head", "2", "--n-embd", "32"]
QUICK = [
    "--batch-size", "8", "--max-iters", "30", "--eval-interval", "10", "--eval-iters", "2",
    "--log-interval", "1", "--warmup-iters", "5", "--learning-rate", "3e-3",
    "--no-final-eval",
]  # fmt: skip


@pytest.fixture
def exact_float32() -> Iterator[None]:
    """No TF32 while comparing against the CPU (training turns it on for the process)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def train_cli(data: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    """`minigpt-tui train --device DEVICE` on the tiny model; returns the metrics events."""
    code = cli("train", "--data", data, "--out", out, "--device", DEVICE, *TINY, *QUICK, *extra)
    assert code == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").open()]


def losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "train"]


def saved_state(run: Path) -> dict[str, Any]:
    info = modeldir.read(run)
    return trainer_state.load(info)


def test_model_forward_on_gpu_matches_cpu(tmp_path: Path, exact_float32: None) -> None:
    model_cpu, _ = checkpoint.load(make_model(tmp_path, block_size=32))
    model_gpu, _ = checkpoint.load(tmp_path / "tiny", device=DEVICE)
    idx = torch.randint(0, model_cpu.config.vocab_size, (4, 32), generator=torch.Generator())
    with torch.no_grad():
        ref, ref_loss = model_cpu(idx, idx)
        got, got_loss = model_gpu(idx.to(DEVICE), idx.to(DEVICE))
    assert got.device.type == DEVICE.split(":")[0]
    assert (got.cpu() - ref).abs().max().item() < LOGIT_TOL
    assert got_loss is not None and ref_loss is not None
    assert abs(got_loss.item() - ref_loss.item()) < LOGIT_TOL


def test_kv_cache_engine_on_gpu_matches_cpu(tmp_path: Path, exact_float32: None) -> None:
    """Prefill and decode through the cache, past the context (the engine slides its window).

    On CUDA the backend uses the static cache and replays each decode step as a CUDA graph;
    the CPU uses the growing cache, so this also checks the graph against the eager path."""
    info = modeldir.read(make_model(tmp_path, block_size=32))
    cpu, gpu = TorchBackend(info, device="cpu"), TorchBackend(info, device=DEVICE)
    assert gpu.static_cache is gpu.cuda_graph is ON_CUDA and not cpu.static_cache
    prompt = info.tokenizer().encode("ROMEO:\nBut soft")
    diff = float(np.abs(cpu.prefill(prompt) - gpu.prefill(prompt)).max())
    for tok in prompt[:10]:
        diff = max(diff, float(np.abs(cpu.decode(tok) - gpu.decode(tok)).max()))
    assert diff < LOGIT_TOL

    def run(backend: TorchBackend, settings: SamplingSettings) -> list[int]:
        gen = Generation(backend, info.tokenizer(), prompt, settings)
        for _ in gen:
            pass
        return gen.generated

    greedy = SamplingSettings(temperature=0.0, max_new_tokens=60)
    assert run(gpu, greedy) == run(cpu, greedy)
    sampled = SamplingSettings(temperature=0.9, top_k=20, top_p=0.95, max_new_tokens=60, seed=3)
    assert run(gpu, sampled) == run(cpu, sampled)


def test_bfloat16_autocast_trains_without_nans(tmp_path: Path) -> None:
    """With the text samples and the whole-split validation loss a real run makes."""
    events = train_cli(make_data(tmp_path), tmp_path / "run", "--dtype", "bfloat16", "--final-eval")
    start = events[0]
    assert start["dtype"] == "bfloat16" and start["device"].startswith(DEVICE.split(":")[0])
    curve = losses(events)
    assert len(curve) == 30 and all(math.isfinite(x) for x in curve)
    assert curve[-1] < curve[0] - 0.5
    val = [e["val_loss"] for e in events if e["event"] == "eval" and "val_loss" in e]
    assert val and all(math.isfinite(v) for v in val)
    assert math.isfinite(events[-1]["val_loss_full"])
    assert [e for e in events if e["event"] == "sample" and e["text"]]


@pytest.mark.skipif(not ON_CUDA, reason="float16 training is CUDA-only")
def test_float16_with_the_gradient_scaler_trains_without_nans(tmp_path: Path) -> None:
    run = tmp_path / "run"
    events = train_cli(make_data(tmp_path), run, "--dtype", "float16")
    assert events[0]["dtype"] == "float16"
    curve = losses(events)
    assert all(math.isfinite(x) for x in curve) and curve[-1] < curve[0] - 0.5
    scaler = saved_state(run)["scaler"]
    assert scaler and scaler["scale"] > 0  # the scaler ran and is saved for --resume


def test_adamw_is_fused_and_its_state_lives_on_the_device(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_cli(make_data(tmp_path), run, "--max-iters", "5")
    optim = saved_state(run)["optimizer"]
    assert all(group["fused"] for group in optim["param_groups"])
    state = next(iter(optim["state"].values()))
    assert torch.isfinite(state["exp_avg"]).all() and state["exp_avg"].abs().sum() > 0


def test_compile_trains_like_eager(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    few = ("--max-iters", "5", "--dtype", "float32")
    eager = losses(train_cli(data, tmp_path / "eager", *few))
    compiled = losses(train_cli(data, tmp_path / "compiled", *few, "--compile"))
    assert all(math.isfinite(x) for x in compiled)
    # Same weights and batches; fused kernels round differently (TF32 is on while training).
    assert compiled == pytest.approx(eager, rel=2e-2)


def test_resume_on_gpu_is_bit_exact(tmp_path: Path) -> None:
    """A run stopped at step 10 and resumed to 30 ends with the weights of a straight run."""
    data = make_data(tmp_path)
    schedule = ("--lr-decay-iters", "30", "--ckpt-interval", "10", "--dtype", "bfloat16",
                "--no-samples")  # fmt: skip
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        train_cli(data, tmp_path / "straight", *schedule)
        train_cli(data, tmp_path / "split", *schedule, "--max-iters", "10")
        assert cli("train", "--data", data, "--out", tmp_path / "split", "--resume",
                   "--device", DEVICE, "--max-iters", "30", "--no-samples",
                   "--no-final-eval") == 0  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(deterministic)
    a = modeldir.resolve(tmp_path / "straight") / modeldir.WEIGHTS_FILE
    b = modeldir.resolve(tmp_path / "split") / modeldir.WEIGHTS_FILE
    assert modeldir.read(tmp_path / "split").path.name == "step-000030"
    assert a.read_bytes() == b.read_bytes()


def test_gpu_checkpoint_loads_on_cpu_and_exports_to_onnx(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_cli(make_data(tmp_path), run, "--max-iters", "10")
    model, info = checkpoint.load(run, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert info.meta["training"]["device"].startswith(DEVICE.split(":")[0])
    state = saved_state(run)  # optimizer state saved from the GPU, read back on the CPU
    assert next(iter(state["optimizer"]["state"].values()))["exp_avg"].device.type == "cpu"
    assert cli("export", "onnx", run, "--out", tmp_path / "onnx") == 0  # verified against torch
    onnx_info = modeldir.read(tmp_path / "onnx")
    assert onnx_info.has_onnx and onnx_info.meta["onnx"]["verify"]["max_logit_diff"] < 1e-4
    # And it generates: the CPU engine continues a prompt from the GPU-trained weights.
    backend = TorchBackend(info, device="cpu")
    logits = backend.prefill(info.tokenizer().encode(TEXT[:20]))
    assert np.isfinite(logits).all()
