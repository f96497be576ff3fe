"""The ONNX inference path runs where PyTorch and the onnx package cannot even be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_onnx import build

# Runs before anything else in the child: importing torch, onnx or onnxscript (the [train]
# extra) raises ImportError, as on a base install without them.
BLOCKER = """
import importlib.abc, sys
BLOCKED = {"torch", "onnx", "onnxscript"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocker())
"""


@pytest.fixture(scope="module")
def onnx_only_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("no-torch")
    model = build(root / "m", block_size=32, sharpen=40.0)
    out = root / "onnx-only"
    export_onnx(model, out, verify=False)
    return out


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )


def test_blocker_really_blocks() -> None:
    res = run_child("import torch")
    assert res.returncode != 0 and "torch is blocked" in res.stderr


def test_generate_cli_without_torch(onnx_only_model: Path) -> None:
    code = f"""
from minigpt_tui.cli import main
try:
    main(["generate", "-m", {str(onnx_only_model)!r}, "-n", "60", "--seed", "1", "--stats",
          "ROMEO:"])
finally:
    bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not bad, bad
"""
    res = run_child(code)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) >= 20  # 60 characters of (random) text
    assert "backend onnx" in res.stderr


def test_engine_without_torch(onnx_only_model: Path) -> None:
    code = f"""
from minigpt_tui.generation import Generation, load_backend
from minigpt_tui.sampling import SamplingSettings
backend = load_backend({str(onnx_only_model)!r})
tok = backend.info.tokenizer()
gen = Generation(backend, tok, tok.encode("JULIET:"), SamplingSettings(temperature=0,
                 max_new_tokens=100))
print(len(gen.generated) if list(gen) else 0, gen.stats.slides)
"""
    res = run_child(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["100", res.stdout.split()[1]]
    assert int(res.stdout.split()[1]) >= 3  # slid past the 32-token window


def test_torch_backend_on_an_onnx_only_model_is_one_line(onnx_only_model: Path) -> None:
    code = f"""
from minigpt_tui.cli import main
main(["generate", "-m", {str(onnx_only_model)!r}, "--backend", "torch", "x"])
"""
    res = run_child(code)
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "error" in res.stderr


def test_score_cli_without_torch(onnx_only_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 3)
    code = f"""
import json
from minigpt_tui.cli import main
try:
    main(["score", {str(text)!r}, "-m", {str(onnx_only_model)!r}, "--json"])
finally:
    bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not bad, bad
"""
    res = run_child(code)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["backend"] == "onnx" and out["windows"] > 1 and out["bits_per_char"] > 0
