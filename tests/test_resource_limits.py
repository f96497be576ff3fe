"""No input can make the tool exhaust the machine: thread counts are capped to its CPUs, a config
claiming a huge context is refused from the weights' real shapes, and a batch whose logits
would not fit in memory is refused.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path

import pytest
import torch

from model import modeldir
from model.backend import available_cpus, check_threads
from tests.helpers import cli, expect_one_line_error


def test_thread_counts_are_capped_to_the_machine(
    evil: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cpus = available_cpus()
    assert check_threads(None) == (None, "")
    assert check_threads(cpus) == (cpus, "")
    for huge in (100_000, 99_999_999_999):
        threads, note = check_threads(huge)
        assert threads == cpus and str(huge) in note and f"using {cpus}" in note
    from export.ort_backend import OrtBackend
    from model.torch_backend import TorchBackend

    onnx_engine = OrtBackend(modeldir.read(evil["onnx"]), threads=100_000)
    assert onnx_engine.model.session.get_session_options().intra_op_num_threads == cpus
    TorchBackend(modeldir.read(evil["model"]), threads=99_999_999_999)
    assert torch.get_num_threads() <= cpus
    torch.set_num_threads(1)
    for backend, model in (("onnx", evil["onnx"]), ("torch", evil["model"])):
        argv = ["generate", "-m", model, "--backend", backend, "-n", "3", "--threads"]
        assert cli(*argv, "99999999999", "hi") == 0
        err = capsys.readouterr().err
        assert f"more than the {cpus} CPUs available; using {cpus}" in err and "Trace" not in err
    torch.set_num_threads(1)


def test_a_config_claiming_a_huge_context_is_refused_before_allocating(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "huge"
    shutil.copytree(evil["model"], model)
    meta = json.loads((model / modeldir.CONFIG_FILE).read_text())
    meta["model"]["block_size"] = 10**8  # 1.6e9 parameters: under the cap, 6.4 GB to build
    (model / modeldir.CONFIG_FILE).write_text(json.dumps(meta))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for argv in (
        ["generate", "-m", model, "--backend", "torch", "-n", "2", "hi"],
        ["eval", model, "--data", evil["data"], "--device", "cpu"],
    ):
        line = expect_one_line_error(capsys, *argv)
        assert "wpe.weight has shape (32, 16), config says (100000000, 16)" in line, line
    expect_one_line_error(capsys, "export", "onnx", model, "--out", tmp_path / "o")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024 < 200


def test_eval_refuses_a_batch_whose_logits_exceed_the_memory(
    evil: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["eval", evil["model"], "--data", evil["data"], "--device", "cpu"]
    assert cli(*argv, "--batch-size", "100000000000") == 0  # tiny data: a batch holds it all
    real = os.sysconf
    monkeypatch.setattr(  # a machine of 32 KB: the same batch no longer fits
        os, "sysconf", lambda name: 8 if name == "SC_PHYS_PAGES" else real(name)
    )
    line = expect_one_line_error(capsys, *argv, "--batch-size", "100000000000")
    assert "for the logits alone" in line


def test_a_tuned_allocator_serves_large_arrays_from_the_heap() -> None:
    """After tune_allocator (load_backend calls it), a 1 MB numpy array is not a block of
    fresh pages from the kernel (glibc's mallinfo2 counts those as hblks), so a decode step's
    logits and the sampler's temporaries reuse memory instead of page-faulting every token."""
    import ctypes

    import numpy as np

    from model.backend import is_glibc, tune_allocator

    libc = ctypes.CDLL(None)
    if not is_glibc() or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33 or newer")
    fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in fields.split()]

    libc.mallinfo2.restype = MallInfo2
    for _ in range(2):  # once is enough; again changes nothing
        tune_allocator()
    before = libc.mallinfo2().hblks
    arrays = [np.ones(1 << 17) for _ in range(4)]  # 1 MB each
    assert libc.mallinfo2().hblks == before
    assert sum(float(a.sum()) for a in arrays) == 4 * (1 << 17)
