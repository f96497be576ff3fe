"""Training speed work (issue 7) and MFU (issue 6): what changed behaviour, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from model.config import PRESETS, GPTConfig, TrainConfig
from model.device import peak_flops, resolve_dtype
from model.gpt import GPT, causal_attention
from model.startup import RunOptions
from model.train import train
from tests.helpers import make_data

TINY = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}


def test_cpu_fast_preset_is_valid_and_governed_by_a_time_budget() -> None:
    preset = PRESETS["cpu-fast"]
    GPTConfig.from_dict({"vocab_size": 65, **preset.model})
    cfg = TrainConfig.from_dict(preset.train)
    cfg.validate()
    assert cfg.time_budget is not None and cfg.time_budget > 0
    assert cfg.max_iters >= 10**6  # the budget, not the step count, ends the run
    assert cfg.dtype == "auto"  # bfloat16 only where the CPU has AMX
    assert PRESETS["cpu"].train["learning_rate"] == 3e-4  # the reference preset is unchanged


@pytest.mark.parametrize(("name", "seconds"), [("cpu-fast", 120.0), ("cpu-10min", 600.0)])
def test_budget_presets_use_muon_and_the_trapezoid(name: str, seconds: float) -> None:
    preset = PRESETS[name]
    GPTConfig.from_dict({"vocab_size": 65, **preset.model})
    cfg = TrainConfig.from_dict(preset.train)
    cfg.validate()
    assert cfg.time_budget == seconds and cfg.max_iters >= 10**6
    assert (cfg.optimizer, cfg.schedule, cfg.final_lr) == ("muon", "trapezoid", 0.0)


def test_cpu_preset_keeps_the_reference_table() -> None:
    cpu = PRESETS["cpu"]
    assert cpu.model == dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    train = cpu.train
    assert (train["batch_size"], train["learning_rate"], train["max_iters"]) == (12, 3e-4, 4000)
    assert TrainConfig.from_dict(train).optimizer == "adamw"  # AdamW at a constant lr, as before


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "dtype"),
    [
        (True, False, torch.bfloat16),
        (False, True, torch.bfloat16),
        (False, False, torch.float32),
    ],
)
def test_auto_dtype_on_cpu_is_bfloat16_only_where_the_cpu_multiplies_it(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert resolve_dtype("auto", "cpu") == dtype
    assert resolve_dtype("float32", "cpu") == torch.float32  # an explicit dtype always wins


def test_attention_under_cpu_bfloat16_autocast_runs_in_float32() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 8, 4) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(causal_attention(q, k, v), ref)  # float32: the kernel as is


@pytest.mark.parametrize(
    ("name", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989e12),
        ("NVIDIA H100 PCIe", torch.bfloat16, 756e12),
        ("NVIDIA A100-SXM4-80GB", torch.float32, 156e12),
        ("NVIDIA L40S", torch.bfloat16, 362e12),
        ("NVIDIA L4", torch.float16, 121e12),
        ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165e12),
        ("Some Future GPU", torch.bfloat16, None),
    ],
)
def test_peak_flops_by_device_name(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype, peak: float | None
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops("cuda:0", dtype) == peak
    assert peak_flops("cpu", dtype) is None


def test_train_events_carry_mfu_only_when_the_peak_is_known(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    cfg = {"batch_size": 4, "max_iters": 10, "eval_interval": 10, "eval_iters": 1}
    cfg["log_interval"] = 5
    train(TINY, cfg, RunOptions(data=data, out=tmp_path / "a", device="cpu", final_eval=False))
    train(
        TINY,
        cfg,
        RunOptions(data=data, out=tmp_path / "b", device="cpu", final_eval=False, peak_flops=1e12),
    )

    def events(run: str) -> list[dict[str, Any]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    assert all("mfu" not in e for e in events("a"))
    start, *rest = events("b")
    flops = GPT(GPTConfig.from_dict(start["config"]["model"])).flops_per_token()
    logged = [e for e in rest if e["event"] == "train"]
    assert logged
    for e in logged:
        assert e["mfu"] == pytest.approx(e["tokens_per_sec"] * flops / 1e12)
