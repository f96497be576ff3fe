"""ONNX export with a KV cache and the onnxruntime engine, on tiny random models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from export import ort_backend
from export.onnx_export import export_onnx
from export.options import ExportError
from minigpt_tui.cli import main
from minigpt_tui.generation import Generation, load_backend
from minigpt_tui.sampling import SamplingSettings
from model import checkpoint, modeldir
from model.backend import EngineError
from model.config import GPTConfig
from model.gpt import GPT
from model.modeldir import ModelDirError
from model.tokenizer import CharTokenizer
from model.torch_backend import TorchBackend

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nO Romeo!\n"


def build(path: Path, block_size: int, seed: int = 0, sharpen: float = 1.0) -> Path:
    """A tiny random model; `sharpen` scales the embedding so greedy choices are not near-ties."""
    torch.manual_seed(seed)
    tok = CharTokenizer.from_text([TEXT])
    cfg = GPTConfig(
        vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16
    )
    model = GPT(cfg)
    with torch.no_grad():
        model.wte.weight.mul_(sharpen)
    checkpoint.save(path, model, modeldir.make_meta(cfg, tok, name=path.name))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """block 32: fp32 in place and int8 into a new directory; block 256: fp32 in place."""
    root = tmp_path_factory.mktemp("onnx")
    small = build(root / "small", block_size=32, sharpen=40.0)
    export_onnx(small)
    export_onnx(small, root / "small-int8", quantize="int8")
    long = build(root / "long", block_size=256, seed=1)
    export_onnx(long)
    return {"small": small, "int8": root / "small-int8", "long": long}


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_prefill_and_200_decode_steps_match_torch(exported: dict[str, Path]) -> None:
    info = modeldir.read(exported["long"])
    ort, ref = ort_backend.OrtBackend(info), TorchBackend(info)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, info.config.vocab_size, size=40).tolist()
    a, b = ort.prefill(prompt), ref.prefill(prompt)
    assert a.shape == (info.config.vocab_size,) and a.dtype == np.float32
    worst = float(np.abs(a - b).max())
    for _ in range(200):
        tok = int(b.argmax())
        a, b = ort.decode(tok), ref.decode(tok)
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= 1e-4
    assert ort.cache_len == 240


def test_greedy_generation_identical_to_torch_across_window_slides(
    exported: dict[str, Path],
) -> None:
    info = modeldir.read(exported["small"])
    tok = info.tokenizer()
    settings = SamplingSettings(temperature=0.0, max_new_tokens=220)
    runs = []
    for backend in (ort_backend.OrtBackend(info), TorchBackend(info)):
        gen = Generation(backend, tok, tok.encode("ROMEO:\n"), settings)
        text = "".join(e.text for e in gen)
        runs.append((gen.generated, text, gen.stats.slides))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 220 and runs[0][2] >= 5  # it slid the window many times


def test_streams_decode_together_each_at_its_own_position(exported: dict[str, Path]) -> None:
    info = modeldir.read(exported["long"])
    cfg = info.config
    streams = ort_backend.OrtModel.load(info).streams(3)
    refs = [TorchBackend(info) for _ in range(3)]
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in (5, 40, 17)]
    want = np.stack([ref.prefill(p) for ref, p in zip(refs, prompts, strict=True)])
    got = np.stack([streams.prefill(i, p) for i, p in enumerate(prompts)])
    worst = float(np.abs(got - want).max())
    for _ in range(30):
        tokens = want.argmax(-1).tolist()
        got = streams.decode_batch(tokens)
        assert got.shape == (3, cfg.vocab_size) and got.dtype == np.float32
        want = np.stack([ref.decode(t) for ref, t in zip(refs, tokens, strict=True)])
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-4
    assert streams.lengths == [35, 70, 47]
    # A stream restarted on a new prompt leaves the others alone.
    again = streams.prefill(1, prompts[1])
    np.testing.assert_allclose(again, TorchBackend(info).prefill(prompts[1]), atol=1e-4)
    assert streams.lengths == [35, 40, 47]


def test_cache_is_written_in_place(exported: dict[str, Path]) -> None:
    """Each layer's cache is one buffer for the whole block, filled a position per step."""
    info = modeldir.read(exported["small"])
    cfg = info.config
    streams = ort_backend.OrtModel.load(info).streams(2)
    buffers = list(streams._caches)
    assert buffers[0].shape == (2, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
    streams.prefill(0, [1, 2, 3])
    logits = streams.decode_batch([4, 5])  # stream 1 was never prefilled: [5] is its start
    ref = TorchBackend(info)
    np.testing.assert_allclose(logits[0], ref.prefill([1, 2, 3, 4]), atol=1e-4)
    np.testing.assert_allclose(logits[1], ref.prefill([5]), atol=1e-4)
    assert [a is b for a, b in zip(buffers, streams._caches, strict=True)] == [True] * len(buffers)
    filled = np.abs(buffers[0]).sum(axis=(1, 3)) > 0  # (stream, position)
    assert filled[0].tolist() == [True] * 4 + [False] * (cfg.block_size - 4)
    assert filled[1].tolist() == [True] + [False] * (cfg.block_size - 1)


def test_stream_errors_are_one_line(exported: dict[str, Path]) -> None:
    model = ort_backend.OrtModel.load(modeldir.read(exported["small"]))
    with pytest.raises(EngineError, match="streams must be 1 to"):
        model.streams(0)
    streams = model.streams(2)
    with pytest.raises(EngineError, match="one token per stream"):
        streams.decode_batch([1])
    with pytest.raises(EngineError, match="no stream 2"):
        streams.prefill(2, [1])
    streams.prefill(1, [1] * 32)
    with pytest.raises(EngineError, match="cache of stream 1 is full"):
        streams.decode_batch([1, 1])
    assert streams.lengths == [0, 32]  # nothing ran


def test_a_stream_sits_a_step_out(exported: dict[str, Path]) -> None:
    """decode_batch with None for a stream: the others go on, and that stream is untouched,
    even with a full cache; the batched logits are bit-identical to one stream's."""
    model = ort_backend.OrtModel.load(modeldir.read(exported["small"]))
    streams, alone = model.streams(3), [model.streams(1) for _ in range(2)]
    for i, prompt in enumerate(([1, 2, 3], [7, 8])):
        np.testing.assert_array_equal(streams.prefill(i, prompt), alone[i].prefill(0, prompt))
    streams.prefill(2, [4] * 32)  # a full cache
    full = [buf[2].copy() for buf in streams._caches]
    got = streams.decode_batch([5, None, None])
    assert streams.lengths == [4, 2, 32]
    np.testing.assert_array_equal(got[0], alone[0].decode_one(5))
    assert all((buf[2] == kept).all() for buf, kept in zip(streams._caches, full, strict=True))
    got = streams.decode_batch([6, 9, None])  # stream 1 goes on where it stopped
    assert streams.lengths == [5, 3, 32]
    np.testing.assert_array_equal(got[0], alone[0].decode_one(6))
    np.testing.assert_array_equal(got[1], alone[1].decode_one(9))
    with pytest.raises(EngineError, match="cache of stream 2 is full"):
        streams.decode_batch([1, 1, 1])


def test_engine_refuses_overflow_and_decode_before_prefill(exported: dict[str, Path]) -> None:
    backend = ort_backend.OrtBackend(modeldir.read(exported["small"]))
    with pytest.raises(EngineError, match="before prefill"):
        backend.decode(1)
    with pytest.raises(EngineError, match="cannot prefill 33 tokens"):
        backend.prefill([1] * 33)
    backend.prefill([1] * 32)
    with pytest.raises(EngineError, match="cache is full"):
        backend.decode(1)
    with pytest.raises(EngineError, match="onnxruntime failed") as e:
        backend.prefill([backend.config.vocab_size + 5])  # no such token
    assert "\n" not in str(e.value)


def test_int8_export_runs_and_is_recorded(exported: dict[str, Path]) -> None:
    info = modeldir.read(exported["int8"])
    assert info.has_onnx and not info.has_weights  # a self-contained ONNX model directory
    meta = info.meta["onnx"]
    assert meta["quantize"] == "int8" and meta["opset"] == 23
    assert meta["verify"]["mean_kl"] <= meta["verify"]["max_mean_kl"]
    assert meta["inputs"] == ort_backend.input_names(info.config)
    assert meta["tools"]["onnxruntime"]
    g = onnx.load(str(info.onnx_path)).graph
    ops = [n.op_type for n in g.node]
    assert "MatMulNBits" in ops and "GatherBlockQuantized" in ops
    backend = load_backend(exported["int8"])  # auto: the only thing it can run
    assert backend.name == "onnx"
    tok = info.tokenizer()
    gen = Generation(
        backend, tok, tok.encode("JULIET:"), SamplingSettings(max_new_tokens=50, seed=1)
    )
    assert len(list(gen)) >= 50 and gen.text
    fp32 = ort_backend.OrtBackend(modeldir.read(exported["small"])).prefill([3, 4, 5])
    int8 = backend.prefill([3, 4, 5])
    assert np.argmax(fp32) == np.argmax(int8)


def test_fp32_export_is_fused_and_described(exported: dict[str, Path]) -> None:
    info = modeldir.read(exported["small"])
    assert info.has_weights and info.has_onnx  # in place, beside the weights
    meta = info.meta["onnx"]
    assert meta["fused_attention"] == info.config.n_layer
    assert meta["verify"]["max_logit_diff"] <= 1e-4
    ops = [n.op_type for n in onnx.load(str(info.onnx_path)).graph.node]
    assert ops.count("GroupQueryAttention") == info.config.n_layer and "Transpose" not in ops
    assert load_backend(exported["small"]).name == "onnx"  # auto prefers ONNX
    assert load_backend(exported["small"], backend="torch").name == "torch"


def test_refuses_to_overwrite_without_force_and_replaces_with_it(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    model = copy_model(exported["small"], tmp_path / "m")
    before = (model / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_onnx(model, quantize="int8")
    assert (model / "model.onnx").read_bytes() == before
    export_onnx(model, quantize="int8", force=True, verify=False)
    assert (model / "model.onnx").read_bytes() != before
    assert modeldir.read(model).meta["onnx"]["quantize"] == "int8"
    assert not [p.name for p in model.iterdir() if p.name.startswith(".")]  # no temp files
    # A separate export directory: refused without --force, replaced with it.
    out = exported["int8"].parent / "int8-again"
    shutil.copytree(exported["int8"], out)
    with pytest.raises(ExportError, match="already exists"):
        export_onnx(model, out)
    export_onnx(model, out, force=True, verify=False)
    assert modeldir.read(out).meta["onnx"]["quantize"] == "none"
    empty = tmp_path / "empty"  # an existing empty directory is fine without --force
    empty.mkdir()
    export_onnx(model, empty, verify=False)
    assert modeldir.read(empty).has_onnx


def test_failed_verification_writes_nothing(
    exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.onnx_export as ex

    model = copy_model(exported["small"], tmp_path / "m")
    (model / "model.onnx").unlink()
    config_before = (model / "config.json").read_bytes()
    monkeypatch.setattr(ex, "FP32_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match=r"verification failed.*nothing was written"):
        export_onnx(model)
    with pytest.raises(ExportError, match="verification failed"):
        export_onnx(model, tmp_path / "out")
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
    assert (model / "config.json").read_bytes() == config_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_bad_export_requests(
    exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = exported["small"]
    with pytest.raises(ExportError, match="--quantize must be none, int8, int4 or int4-mlp"):
        export_onnx(model, tmp_path / "x", quantize="int3")
    with pytest.raises(ExportError, match="--opset must be between"):
        export_onnx(model, tmp_path / "x", opset=9)
    with pytest.raises(ModelDirError, match="no weights"):
        export_onnx(exported["int8"], tmp_path / "x")
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a model directory"):
        export_onnx(model, tmp_path / "notes", force=True)
    with pytest.raises(ExportError, match="another model's weights"):
        export_onnx(model, exported["long"], force=True)
    # A read-only parent (os.access is faked: the tests may run as root, who can write anyway).
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: Path(p) != ro and real_access(p, m))
    with pytest.raises(ExportError, match="permission denied"):
        export_onnx(model, ro / "x")
    assert list(ro.iterdir()) == []


def test_foreign_and_corrupt_onnx_files_are_one_line_errors(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    model = copy_model(exported["int8"], tmp_path / "m")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(model / "model.onnx"))
    with pytest.raises(EngineError, match="not a minigpt-tui ONNX export") as e:
        load_backend(model)
    assert "\n" not in str(e.value)
    # Our input names, but a model with another width: the shapes give it away.
    other = build(tmp_path / "wide", block_size=32)
    cfg = modeldir.read(other).meta
    cfg["model"]["n_embd"] = 32
    (other / "config.json").write_text(json.dumps(cfg))
    shutil.copy(exported["small"] / "model.onnx", other / "model.onnx")
    with pytest.raises(EngineError, match=r"past_key_0 is tensor\(float\)"):
        load_backend(other, backend="onnx")
    (model / "model.onnx").write_bytes(b"\x08\x07this is not a protobuf")
    with pytest.raises(EngineError, match="cannot load") as e:
        load_backend(model)
    assert "\n" not in str(e.value)


def test_cli_export_and_errors(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    main(["export", "onnx", str(exported["small"]), "--out", str(out), "--no-verify"])
    assert modeldir.read(out).has_onnx
    assert "not verified" in capsys.readouterr().err
    for args, message in [
        (["--quantize", "fp16"], "--quantize must be none, int8, int4 or int4-mlp"),
        ([], "already exists; pass --force"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["export", "onnx", str(exported["small"]), "--out", str(out), *args])
        assert e.value.code != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["export", "onnx", str(tmp_path / "nothing-here")])
    assert e.value.code != 0 and "model not found" in capsys.readouterr().err


def test_export_never_writes_into_a_bundled_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundled model belongs to the installed package: exporting it needs --out."""
    from tests.helpers import cli, expect_one_line_error, make_model

    bundled = tmp_path / "bundled"
    model = make_model(bundled, name="tiny")
    monkeypatch.setattr("minigpt_tui.models.BUNDLED_DIR", bundled)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in model.iterdir())
    for name in ("tiny", str(model)):
        line = expect_one_line_error(capsys, "export", "onnx", name, "--force", "--no-verify")
        assert "bundled" in line and "--out" in line
    assert sorted(p.name for p in model.iterdir()) == before
    assert cli("export", "onnx", "tiny", "--out", tmp_path / "mine", "--no-verify") == 0


def test_quality_benchmark_loss_matches_torch_split_loss(exported: dict[str, Path]) -> None:
    """benchmarks/onnx_quality.py's ONNX loss uses the same windows as model.evaluate."""
    import importlib.util

    from model.evaluate import split_loss

    path = Path(__file__).parent.parent / "benchmarks" / "onnx_quality.py"
    spec = importlib.util.spec_from_file_location("onnx_quality", path)
    assert spec is not None and spec.loader is not None
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    info = modeldir.read(exported["small"])
    tokens = np.random.default_rng(0).integers(0, info.config.vocab_size, 32 * 5 + 8)
    tokens = tokens.astype(np.uint16)
    model, _ = checkpoint.load(info.path)
    want = split_loss(model, tokens, info.config.block_size)
    got = quality.onnx_split_loss(ort_backend.OrtModel.load(info), tokens, batch_size=2)
    assert abs(got - want) < 1e-5


def test_quantized_modes_share_the_embedding_and_stay_close(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    """int8/int4 store the tied embedding once, as the head's quantised matrix."""
    info = modeldir.read(exported["small"])
    v, c = info.config.vocab_size, info.config.n_embd
    sizes = {}
    for q in ("int8", "int4", "int4-mlp"):
        out = exported["int8"] if q == "int8" else tmp_path / q
        if q != "int8":
            res = export_onnx(exported["small"], out, quantize=q)
            assert res.verify is not None and res.verify["mean_kl"] <= res.verify["max_mean_kl"]
        g = onnx.load(str(out / "model.onnx")).graph
        fp32_tables = [
            t.name for t in g.initializer if t.data_type == TensorProto.FLOAT and t.dims == [v, c]
        ]
        assert fp32_tables == []  # no float copy of the (vocab, C) matrix
        gather = next(n for n in g.node if n.op_type == "GatherBlockQuantized")
        head = [n for n in g.node if n.op_type == "MatMulNBits"][-1]
        assert gather.input[0] == head.input[1]  # one matrix, read by both
        sizes[q] = (out / "model.onnx").stat().st_size
        backend = load_backend(out)
        logits = backend.prefill([1, 2, 3])
        assert logits.shape == (v,) and np.isfinite(logits).all()
    assert sizes["int4"] < sizes["int4-mlp"] < sizes["int8"]


def test_an_older_growing_cache_export_is_refused_in_one_line(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    model = copy_model(exported["int8"], tmp_path / "m")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])
    past = helper.make_tensor_value_info("past_key_0", TensorProto.FLOAT, ["b", 2, "p", 8])
    out = helper.make_tensor_value_info("logits", TensorProto.INT64, ["b", "t"])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["logits"])], "g", [ids, past], [out]
    )
    onnx.save(helper.make_model(graph), str(model / "model.onnx"))
    with pytest.raises(EngineError, match="exported by an older minigpt-tui") as e:
        load_backend(model)
    assert "\n" not in str(e.value) and "export onnx --force" in str(e.value)
