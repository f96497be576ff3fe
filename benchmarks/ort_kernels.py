"""Two of onnxruntime's kernels against alternatives, alone and in GPT-2 124M (issue 25).

    python benchmarks/ort_kernels.py [--threads 1] [--rounds 5]
    python benchmarks/ort_kernels.py --work-dir /tmp/speed-decode [--steps 200]
        [--quality minigpt_tui/bundled/shakespeare-char DATA_DIR]

1. The export's int8 Linear is MatMulNBits (weights int8 in blocks of 128 along the input axis,
   activations int8 per block: accuracy_level 4). The alternative is DynamicQuantizeMatMul:
   weights int8 per output column, activations quantised to uint8 per tensor at run time
   (MLAS's QGEMM). Timed at 1 row (decode), 4 rows (4 streams in a step) and 256 rows (a
   prefill), on GPT-2 124M's four matrix shapes and its head.
2. GroupQueryAttention's decode step with an int8 against a float32 cache, 1 and 4 streams,
   at positions 256 and 1000.

Alone, each kernel runs on data that stays in the CPU's caches. With --work-dir (decode_bench.py's
random GPT-2 124M, built there if absent) the same question is asked of the model, where a
step reads 129 MB of weights from memory: a variant of the int8 export whose 48 layer matrices
are DynamicQuantizeMatMul (the tied head stays MatMulNBits, shared with the embedding) is
written to WORK/onnx-int8-dqmm and timed against WORK/onnx-int8 in turns: one stream's step,
4 streams' step (as decode_bench --streams) and a 256-token prefill. --quality MODEL DATA also
exports both from MODEL and prints their validation loss against torch (as onnx_quality.py).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from export import onnx_graph  # noqa: E402
from export.onnx_export import DEFAULT_OPSET, export_onnx  # noqa: E402
from export.ort_backend import OrtModel, make_session  # noqa: E402
from model import modeldir  # noqa: E402

MS = onnx_graph.MS
N_EMBD = 768  # GPT-2 124M
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (768, 50257)]  # (K in, N out)


def one_node(node: Any, inputs: list[Any], outputs: list[Any], inits: list[Any]) -> bytes:
    from onnx import helper

    graph = helper.make_graph([node], "kernel", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def per_column_int8(w_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float weights -> (K, N) int8 and the (N,) scales: symmetric, per output column."""
    scale = np.maximum(np.abs(w_nk).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.rint(w_nk / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.T), scale.astype(np.float32)


def matmul_models(k: int, n: int, w_nk: np.ndarray) -> dict[str, bytes]:
    """One-node graphs y = x @ W.T: the export's MatMulNBits and a DynamicQuantizeMatMul."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])
    graph = onnx_graph._Graph.__new__(onnx_graph._Graph)  # for its quantiser alone
    graph.c, graph.inits = N_EMBD, []  # the block size follows n_embd, as in the export
    qw, scales = graph.quantized("w", w_nk, 8)
    block = graph.block_for(8)
    nbits = helper.make_node(
        "MatMulNBits", ["x", qw, scales], ["y"], domain=MS, K=k, N=n, bits=8,
        block_size=block, accuracy_level=onnx_graph.ACCURACY_LEVEL,
    )  # fmt: skip
    q, s = per_column_int8(w_nk)
    dq_inits = [
        numpy_helper.from_array(q, "q"),
        numpy_helper.from_array(s, "s"),
        numpy_helper.from_array(np.zeros(n, np.int8), "zp"),
    ]
    dq = helper.make_node("DynamicQuantizeMatMul", ["x", "q", "s", "zp"], ["y"], domain=MS)
    return {
        f"MatMulNBits (blocks of {block})": one_node(nbits, [x], [y], graph.inits),
        "DynamicQuantizeMatMul": one_node(dq, [x], [y], dq_inits),
    }


def gqa_model(batch: int, int8: bool, heads: int = 12, head: int = 64, cap: int = 1024) -> bytes:
    """One GroupQueryAttention node, decode shape, its cache bound in place by the caller."""
    from onnx import TensorProto, helper, numpy_helper

    ctype = TensorProto.INT8 if int8 else TensorProto.FLOAT
    cache = [batch, heads, cap, head]
    inputs = [
        helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [batch, 1, 3 * heads * head]),
        helper.make_tensor_value_info("pk", ctype, cache),
        helper.make_tensor_value_info("pv", ctype, cache),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [batch]),
        helper.make_tensor_value_info("total", TensorProto.INT32, []),
    ]
    ins = ["qkv", "", "", "pk", "pv", "seqlens_k", "total"]
    attrs: dict[str, Any] = {}
    inits = []
    if int8:
        scale = np.full((1, heads, 1, head), 0.02, np.float32)
        inits = [numpy_helper.from_array(scale, "ks"), numpy_helper.from_array(scale, "vs")]
        ins += ["", "", "", "", "", "ks", "vs"]
        attrs = dict(k_quant_type="PER_CHANNEL", v_quant_type="PER_CHANNEL", kv_cache_bit_width=8)
    node = helper.make_node(
        "GroupQueryAttention", ins, ["out", "pk_out", "pv_out"], domain=MS,
        num_heads=heads, kv_num_heads=heads, **attrs,
    )  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 1, heads * head]),
        helper.make_tensor_value_info("pk_out", ctype, cache),
        helper.make_tensor_value_info("pv_out", ctype, cache),
    ]
    return one_node(node, inputs, outputs, inits)


def take_turns(
    runs: Mapping[str, Callable[[], object]], rounds: int, reps: int
) -> dict[str, float]:
    """Median microseconds a call of each, the callables taking turns `rounds` times."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                run()
            times[name].append((time.perf_counter() - t0) / reps * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def kernels(threads: int, rounds: int) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    print(f"Linear, y = x @ W.T, int8 weights, {threads} thread(s), microseconds a call:")
    for k, n in SHAPES:
        w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
        sessions = {name: make_session(m, threads) for name, m in matmul_models(k, n, w).items()}
        for rows in (1, 4, 256):
            x = rng.standard_normal((rows, k)).astype(np.float32)
            reps = max(2, (4000 if n < 10_000 else 300) // rows)
            runs = {name: functools.partial(s.run, None, {"x": x}) for name, s in sessions.items()}
            us = take_turns(runs, rounds, reps)
            error = {
                name: float(np.abs(s.run(None, {"x": x})[0] - x @ w.T).max())
                for name, s in sessions.items()
            }
            cells = "  ".join(
                f"{name} {us[name]:8.0f} (max error {error[name]:.3f})" for name in us
            )
            print(f"  K {k:5} N {n:6} rows {rows:3}:  {cells}")
    print(f"GroupQueryAttention decode step, 12 heads of 64, {threads} thread(s), microseconds:")
    for batch in (1, 4):
        steps: dict[str, Callable[[], object]] = {}
        for int8 in (False, True):
            session = make_session(gqa_model(batch, int8), threads)
            dtype = np.int8 if int8 else np.float32
            cache = np.zeros((batch, 12, 1024, 64), dtype)
            cache[:] = rng.integers(-100, 100, cache.shape) if int8 else rng.random(cache.shape)
            k_val, v_val = (ort.OrtValue.ortvalue_from_numpy(cache.copy()) for _ in range(2))
            qkv = rng.standard_normal((batch, 1, 3 * 768)).astype(np.float32)
            for pos in (256, 1000):
                io = session.io_binding()
                io.bind_cpu_input("qkv", qkv)
                io.bind_ortvalue_input("pk", k_val)
                io.bind_ortvalue_input("pv", v_val)
                io.bind_ortvalue_output("pk_out", k_val)
                io.bind_ortvalue_output("pv_out", v_val)
                io.bind_cpu_input("seqlens_k", np.full(batch, pos, np.int32))
                io.bind_cpu_input("total", np.array(pos + 1, np.int32))
                io.bind_output("out")
                label = f"{'int8' if int8 else 'float32'} cache, position {pos}"
                steps[label] = functools.partial(session.run_with_iobinding, io)
        us = take_turns(steps, rounds, 100)
        print(f"  {batch} stream(s): " + "  ".join(f"{k} {v:6.1f}" for k, v in us.items()))


class _DqmmGraph(onnx_graph._Graph):
    """The export's graph with DynamicQuantizeMatMul for the layers' int8 Linears."""

    def linear(
        self,
        x: str,
        out: str,
        key: str,
        nbits: int,
        with_bias: bool = True,
        packed: tuple[str, str] | None = None,
        n_k: tuple[int, int] | None = None,
    ) -> None:
        if nbits != 8 or packed is not None:  # the head: as exported
            return super().linear(x, out, key, nbits, with_bias, packed, n_k)
        q, s = per_column_int8(self.w(key))
        zero = self.const(key + ".zp", np.zeros(len(s), np.int8))
        ins = [x, self.const(key + ".i8", q), self.const(key + ".s", s), zero]
        bias = key.removesuffix(".weight") + ".bias"
        if with_bias and bias in self.weights:
            ins.append(self.const(bias, self.w(bias)))
        self.node("DynamicQuantizeMatMul", ins, [out], MS)


def export_dqmm(model_dir: Path, like: Path, out: Path) -> Path:
    """`like` (an int8 export of model_dir, int8 KV cache) with _DqmmGraph's graph, written to
    `out`; the cache's scales are the ones `like` measured."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from model import checkpoint

    model, _ = checkpoint.load(model_dir)
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    inits = onnx.load(str(like / modeldir.ONNX_FILE)).graph.initializer
    arrays = {t.name: t for t in inits if t.name.endswith("_scale")}

    def scale(i: int, kind: str) -> np.ndarray:
        return numpy_helper.to_array(arrays[f"l{i}.{kind}_scale"])

    scales = [(scale(i, "k"), scale(i, "v")) for i in range(model.config.n_layer)]
    graph = _DqmmGraph(model.config, weights, "int8", scales)
    graph.embeddings()
    for i in range(model.config.n_layer):
        graph.layer(i)
    graph.head()
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(like, out)
    data = graph.model(DEFAULT_OPSET).SerializeToString()
    modeldir.atomic_write_bytes(out / modeldir.ONNX_FILE, data)
    return out


def in_model(work: Path, threads: int, steps: int) -> None:
    from decode_bench import build_models, stream_costs

    paths = build_models(work, ["onnx-int8"])
    dqmm = export_dqmm(paths["ours"], paths["onnx-int8"], work / "onnx-int8-dqmm")
    models = {"MatMulNBits": paths["onnx-int8"], "DynamicQuantizeMatMul": dqmm}
    print(f"GPT-2 124M int8, {threads} thread(s), layers' Linears as:")
    costs = stream_costs(models, threads, 4, steps, time.perf_counter)
    rng = np.random.default_rng(2)
    loaded = {name: OrtModel.load(modeldir.read(path), threads) for name, path in models.items()}
    prefill: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(max(3, steps // 20)):
        prompt = rng.integers(0, 50257, 256).tolist()
        for name, model in loaded.items():
            stream = model.streams(1)
            t0 = time.perf_counter()
            stream.prefill(0, prompt)
            prefill[name].append(time.perf_counter() - t0)
    for name, (one, four) in costs.items():
        ms = statistics.median(prefill[name]) * 1e3
        print(
            f"  {name:22} step of 1 stream {one * 1e3:5.2f} ms, of 4 {four * 1e3:5.2f} ms "
            f"({four / one:.2f}x); 256-token prefill {ms:4.0f} ms; "
            f"{(models[name] / modeldir.ONNX_FILE).stat().st_size / 1e6:.0f} MB"
        )


def quality(model_dir: Path, data_dir: Path, threads: int) -> None:
    import tempfile

    from onnx_quality import onnx_split_loss

    from model import checkpoint
    from model.data import load_dataset
    from model.evaluate import split_loss

    info = modeldir.read(model_dir)
    tokens = np.asarray(load_dataset(data_dir).split("val"))
    model, _ = checkpoint.load(info.path)
    torch_loss = split_loss(model, tokens, info.config.block_size)
    with tempfile.TemporaryDirectory(prefix="ort-kernels-") as tmp:
        int8 = export_onnx(info.path, Path(tmp) / "int8", quantize="int8").out_dir
        dqmm = export_dqmm(info.path, int8, Path(tmp) / "dqmm")
        for name, path in (("MatMulNBits", int8), ("DynamicQuantizeMatMul", dqmm)):
            loss = onnx_split_loss(OrtModel.load(modeldir.read(path), threads), tokens)
            print(f"  {name:22} val loss {loss:.5f}, {loss - torch_loss:+.6f} nats against torch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="turns of the kernels alone")
    ap.add_argument("--work-dir", type=Path, help="also time GPT-2 124M there (decode_bench's)")
    ap.add_argument("--steps", type=int, default=200, help="decode steps taking turns")
    ap.add_argument("--quality", nargs=2, type=Path, metavar=("MODEL", "DATA"))
    args = ap.parse_args()
    from model.backend import tune_allocator

    tune_allocator()  # as load_backend does
    kernels(args.threads, args.rounds)
    if args.work_dir:
        in_model(args.work_dir, args.threads, args.steps)
    if args.quality:
        print(f"quality, {args.quality[0]} on {args.quality[1]}:")
        model_dir, data_dir = args.quality
        quality(model_dir, data_dir, args.threads)


if __name__ == "__main__":
    main()
