"""The int8 KV cache of ONNX exports: what export writes, how the engine runs it, how close
it stays to PyTorch, and the --kv-cache option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from export import ort_backend
from export.kv_scales import kv_scales
from export.onnx_export import export_onnx
from export.options import ExportError
from minigpt_tui.generation import Generation
from minigpt_tui.sampling import SamplingSettings
from model import checkpoint, modeldir
from model.torch_backend import TorchBackend
from tests.helpers import cli, expect_one_line_error
from tests.test_onnx import build


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A block-256 model, and its int8 (default cache), int8 + float32 cache and float32 +
    int8 cache exports."""
    root = tmp_path_factory.mktemp("kv")
    src = build(root / "src", block_size=256, seed=3, sharpen=8.0)
    export_onnx(src, root / "int8", quantize="int8")
    export_onnx(src, root / "int8-f32", quantize="int8", kv_cache="float32")
    export_onnx(src, root / "f32-int8", kv_cache="int8")
    return {"src": src, **{k: root / k for k in ("int8", "int8-f32", "f32-int8")}}


def cache_type(path: Path) -> int:
    graph = onnx.load(str(path / modeldir.ONNX_FILE)).graph
    types = {i.type.tensor_type.elem_type for i in graph.input if "_key_" in i.name}
    types |= {o.type.tensor_type.elem_type for o in graph.output if "_value_" in o.name}
    assert len(types) == 1
    return types.pop()


def test_int8_weights_get_an_int8_cache_unless_asked_otherwise(models: dict[str, Path]) -> None:
    assert cache_type(models["int8"]) == TensorProto.INT8
    assert cache_type(models["int8-f32"]) == TensorProto.FLOAT
    assert cache_type(models["f32-int8"]) == TensorProto.INT8
    for name, kv in (("int8", "int8"), ("int8-f32", "float32"), ("f32-int8", "int8")):
        info = modeldir.read(models[name])
        assert info.meta["onnx"]["kv_cache"] == kv
        streams = ort_backend.OrtModel.load(info).streams(2)
        assert {b.dtype for b in streams._caches} == {
            np.dtype(np.int8 if kv == "int8" else np.float32)
        }
    graph = onnx.load(str(models["int8"] / modeldir.ONNX_FILE)).graph
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in attention[0].attribute}
    assert attrs["k_quant_type"] == attrs["v_quant_type"] == b"PER_CHANNEL"
    assert attrs["kv_cache_bit_width"] == 8
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    cfg = modeldir.read(models["src"]).config
    for i in range(cfg.n_layer):
        for kind in ("k", "v"):
            s = scales[f"l{i}.{kind}_scale"]
            assert s.shape == (1, cfg.n_head, 1, cfg.n_embd // cfg.n_head) and (s > 0).all()


def test_an_int8_cache_follows_torch_across_the_whole_block(models: dict[str, Path]) -> None:
    """fp32 weights with an int8 cache against PyTorch, from a prompt to the block's end."""
    info = modeldir.read(models["f32-int8"])
    ort, ref = ort_backend.OrtBackend(info), TorchBackend(modeldir.read(models["src"]))
    prompt = np.random.default_rng(0).integers(0, info.config.vocab_size, size=30).tolist()
    a, b = ort.prefill(prompt), ref.prefill(prompt)
    kls, agree = [], []
    for _ in range(info.config.block_size - len(prompt)):
        p, q = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in (b, a))
        kls.append(float((p * np.log(p / q)).sum()))
        agree.append(a.argmax() == b.argmax())
        tok = int(b.argmax())
        a, b = ort.decode(tok), ref.decode(tok)
    assert ort.cache_len == info.config.block_size
    assert np.mean(kls) < 1e-3 and max(kls) < 2e-2
    assert np.mean(agree) >= 0.97


def test_int8_weights_and_cache_generate_as_torch_does(models: dict[str, Path]) -> None:
    """Greedy text through the int8 export (weights and cache) against the float32 weights."""
    texts = []
    for path in (models["int8"], models["src"]):
        info = modeldir.read(path)
        backend = ort_backend.OrtBackend(info) if path != models["src"] else TorchBackend(info)
        tok = info.tokenizer()
        settings = SamplingSettings(temperature=0.0, max_new_tokens=120)
        gen = Generation(backend, tok, tok.encode("ROMEO:\n"), settings)
        texts.append("".join(e.text for e in gen))
    same = next((i for i, (x, y) in enumerate(zip(*texts, strict=True)) if x != y), len(texts[0]))
    assert len(texts[0]) >= 100 and same >= 60  # greedy paths part only at a near-tie


def test_a_stream_sits_out_with_its_int8_cache_untouched(models: dict[str, Path]) -> None:
    model = ort_backend.OrtModel.load(modeldir.read(models["int8"]))
    streams, alone = model.streams(2), model.streams(1)
    np.testing.assert_array_equal(streams.prefill(0, [1, 2, 3]), alone.prefill(0, [1, 2, 3]))
    streams.prefill(1, [4] * 256)  # a full cache
    full = [buf[1].copy() for buf in streams._caches]
    got = streams.decode_batch([5, None])
    np.testing.assert_array_equal(got[0], alone.decode_one(5))
    assert all((buf[1] == kept).all() for buf, kept in zip(streams._caches, full, strict=True))
    assert streams.lengths == [4, 256]


def test_scales_hold_what_the_model_writes_without_wasting_range(
    models: dict[str, Path],
) -> None:
    """On text the calibration never saw, no key or value is clipped (|x| <= 127 x scale),
    and the largest is at least half the range (the rounding step stays fine)."""
    model, _ = checkpoint.load(models["src"])
    scales = kv_scales(model)
    ids = torch.randint(
        0, model.config.vocab_size, (4, 256), generator=torch.Generator().manual_seed(9)
    )
    with torch.inference_mode():
        _, cache = model.forward_cached(ids)
    for (k_scale, v_scale), (k, v) in zip(scales, cache, strict=True):
        for scale, x in ((k_scale, k), (v_scale, v)):
            top = x.abs().amax(dim=(0, 2)).numpy()  # (n_head, head_size)
            assert (top <= 127 * scale).all()
            assert (top >= 0.5 * 127 * scale).mean() > 0.9


def test_kv_cache_option_and_its_errors(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ExportError, match="--kv-cache must be auto, float32 or int8, got 'int4'"):
        export_onnx(models["src"], tmp_path / "x", kv_cache="int4")
    assert not (tmp_path / "x").exists()
    out = tmp_path / "cli"
    line = expect_one_line_error(
        capsys, "export", "onnx", models["src"], "--out", out, "--kv-cache", "fp16"
    )
    assert line == "error: --kv-cache must be auto, float32 or int8, got 'fp16'"
    assert not out.exists()
    code = cli("export", "onnx", models["src"], "--out", out, "--kv-cache", "int8")
    err = capsys.readouterr().err
    assert code == 0 and "none, int8 KV cache" in err and "mean KL to PyTorch" in err
    assert cache_type(out) == TensorProto.INT8
