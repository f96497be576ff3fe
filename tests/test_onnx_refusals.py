"""ONNX exports that cannot work are refused in one line: opsets the installed tools cannot
handle, graphs onnxruntime cannot load, a verification that computes NaN, and an export of
another context than its config's.

tests/README.md lists what each test proves.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from model import checkpoint, modeldir
from tests.helpers import expect_one_line_error


def test_opsets_the_installed_tools_cannot_handle_are_refused_up_front(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.options import newest_opset

    newest = newest_opset()
    assert 23 <= newest <= onnx.defs.onnx_opset_version()
    for opset in (newest + 1, 10**9):
        line = expect_one_line_error(
            capsys, "export", "onnx", evil["model"], "--out", tmp_path / "o", "--opset", str(opset)
        )
        assert f"between 18 and {newest}" in line
    assert not (tmp_path / "o").exists()


def test_a_graph_onnxruntime_cannot_load_is_refused_in_one_line(
    evil: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A graph onnxruntime cannot load (here: stamped with an opset no onnxruntime has) is
    refused, verified or not, and nothing is written."""
    import export.onnx_export as ex

    graph = onnx.load(str(evil["onnx"] / modeldir.ONNX_FILE))
    for o in graph.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 99
    monkeypatch.setattr(ex, "build_graph", lambda model, quantize, opset, kv_cache: graph)
    monkeypatch.setattr(ex, "check_opset", lambda opset: opset)
    for verify in ("--verify", "--no-verify"):
        out = tmp_path / f"o{verify}"
        line = expect_one_line_error(
            capsys, "export", "onnx", evil["model"], "--out", out, "--opset", "22", verify
        )
        assert "onnxruntime cannot load the exported graph" in line
        assert not out.exists()


def test_verification_treats_nan_as_failure(evil: dict[str, Path]) -> None:
    from export.onnx_export import ExportError, verify_export

    model, _ = checkpoint.load(evil["model"])
    with torch.no_grad():
        model.lm_head.weight.fill_(math.nan)  # torch gives NaN; onnxruntime's graph does not
    data = (evil["onnx"] / modeldir.ONNX_FILE).read_bytes()
    with pytest.raises(ExportError, match="verification failed"):
        verify_export(model, data, "none")


def test_an_onnx_export_of_another_context_is_refused_before_generating(
    evil: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m"
    shutil.copytree(evil["onnx"], model)
    meta = json.loads((model / modeldir.CONFIG_FILE).read_text())
    meta["model"]["block_size"] = 64  # exported at 32
    (model / modeldir.CONFIG_FILE).write_text(json.dumps(meta))
    line = expect_one_line_error(capsys, "generate", "-m", model, "-n", "40", "hi")
    assert "past_key_0" in line and "re-export it" in line
    assert capsys.readouterr().out == ""  # refused before a single character
