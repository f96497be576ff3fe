"""benchmarks/gpu_check.py's profile summary, on made-up profiler rows (no GPU needed)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
gpu_check = pytest.importorskip("gpu_check")


@dataclass
class Row:
    key: str
    device_type: str
    self_device_time_total: float = 0.0
    self_cpu_time_total: float = 0.0
    count: int = 1


class Prof:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def key_averages(self) -> list[Row]:
        return self.rows


def test_kernel_profile_counts_kernels_once_and_names_their_kind() -> None:
    """A CPU op reports its kernels' time as its own: counting it too would double the total
    (the first H200 run's summary did). Triton's fused kernels are not the optimizer's."""
    rows = [
        Row("aten::mm", "DeviceType.CPU", self_device_time_total=600, self_cpu_time_total=50),
        Row("nvjet_sm90_tst_192x192_64x3_2x1_v_bz_coopB_NNN", "DeviceType.CUDA", 600, count=4),
        Row("triton_red_fused__log_softmax_nll_loss_backward_0", "DeviceType.CUDA", 200),
        Row("void multi_tensor_apply_kernel<FusedAdamMathFunctor>", "DeviceType.CUDA", 100),
        Row("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma", "DeviceType.CUDA", 100),
    ]
    p = gpu_check.kernel_profile(Prof(rows), steps=2)
    assert p["source"] == "device kernels"
    assert p["time_ms_per_step"] == pytest.approx(0.5)  # 1000 us of kernels over 2 steps
    assert p["launches_per_step"] == 3.5
    assert p["by_kind_percent"] == {
        "attention": 10.0,
        "matmul": 60.0,
        "optimizer": 10.0,
        "triton (fused elementwise, norms, loss)": 20.0,
    }
    assert p["top"][0]["name"].startswith("nvjet")


def test_kernel_profile_falls_back_to_cpu_ops_without_a_gpu() -> None:
    rows = [
        Row("ProfilerStep#1", "DeviceType.CPU", self_cpu_time_total=900),
        Row("aten::addmm", "DeviceType.CPU", self_cpu_time_total=300),
        Row("aten::native_layer_norm", "DeviceType.CPU", self_cpu_time_total=100),
    ]
    p = gpu_check.kernel_profile(Prof(rows), steps=1)
    assert p["source"] == "cpu ops" and p["time_ms_per_step"] == pytest.approx(0.4)
