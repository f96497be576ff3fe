"""Side by side: one random-weight GPT-2 124M through this project and other CPU engines.

    python benchmarks/decode_bench.py [--work-dir /tmp/decode-bench] [--rounds 3]
        [--threads N[,M...]] [--prompt-tokens 256] [--new-tokens 128] [--engines ...]
        [--context] [--streams 4] [--llama-python PATH]

Issue 25's comparison with llama.cpp, at 1 and 2 threads, in one command:

    python benchmarks/decode_bench.py --engines onnx-int8,llama-q8_0 --threads 1,2 \
        --rounds 5 --context --streams 4 --llama-python /work/llama-venv/bin/python

The same weights (a seeded random transformers GPT2LMHeadModel, saved once in --work-dir and
converted from there) run through:

    torch          this project's PyTorch KV-cache backend (fp32)
    onnx-fp32      this project's ONNX engine, `export onnx --quantize none`
    onnx-int8      the fast path, `export onnx --quantize int8` (weight-only int8 and, by
                   default with it, an int8 KV cache)
    onnx-int8-kvf32  the same with `--kv-cache float32` (the fast path until 2026-12-03)
    onnx-int4      `--quantize int4`
    ct2-int8       CTranslate2, `ct2-transformers-converter --quantization int8`
    hf             Hugging Face transformers, fp32, its own KV cache
    llama-q8_0     llama.cpp (llama-cpp-python) on this project's own `export gguf --type
                   q8_0`, in a subprocess (benchmarks/llama_worker.py) run by --llama-python,
                   a Python with llama_cpp installed (default: this one)

The project's engines run through the one generation loop (Generation, with the sampler) at
temperature 0; CTranslate2 through generate_tokens (greedy); transformers through a plain
forward loop with past_key_values. Every engine gets the same prompt and makes the same
number of tokens, in interleaved rounds (engine A, B, C, then A, B, C again) so that load
from other processes hits them alike; the best round is reported and the median beside it.

Read bandwidth is measured in the same run (numpy sums over a 512 MB buffer, one thread and
all threads) and each engine's limit is bandwidth / (bytes of weights it reads per token);
`share` is its decode tokens/s over that limit. The KV cache it also reads is printed, not
counted. `--context` also times the fast path at positions 256-384 and 900-1000 of the
1024 context (llama.cpp's too, when it runs); `--streams N` times one batched step of N
streams against one stream's step; both take turns a step at a time (--steps of each) and
report median steps. `--paired N` decodes N windows of positions 256-384
with llama.cpp and our int8 exports taking turns every 8 tokens and reports medians: on a VM
whose memory speed moves with other tenants' traffic this is the steadier comparison.
`--threads 1,2` runs it all once per thread count.

CTranslate2 and transformers come from the `bench` extra: pip install minigpt-tui[bench].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minigpt_tui.generation import Backend, Generation, load_backend  # noqa: E402
from minigpt_tui.sampling import SamplingSettings  # noqa: E402
from model import modeldir  # noqa: E402
from model.backend import tune_allocator  # noqa: E402

ENGINES = (
    "torch",
    "onnx-fp32",
    "onnx-int8",
    "onnx-int8-kvf32",
    "onnx-int4",
    "ct2-int8",
    "hf",
    "llama-q8_0",
)
# Our ONNX exports: engine -> (--quantize, --kv-cache)
EXPORTS = {
    "onnx-fp32": ("none", "float32"),
    "onnx-int8": ("int8", "int8"),
    "onnx-int8-kvf32": ("int8", "float32"),
    "onnx-int4": ("int4", "int8"),
}
# (time to first token in s, decode tokens/s, decode tokens per CPU-second of the process,
#  CPU seconds of the process to the first token)
Timing = tuple[float, float, float, float]


def read_bandwidth(
    threads: int,
    size: int = 512 * 2**20,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Bytes/s that numpy sums read from a buffer far larger than the caches (best of N).

    With clock=time.process_time (one thread), per CPU-second of this process: what the
    read costs when the process has a core, whatever else shares the machine."""
    buf = np.ones(size // 8, dtype=np.float64)
    parts = np.array_split(buf, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = clock()
            list(pool.map(np.sum, parts))  # numpy releases the GIL while it sums
            best = max(best, buf.nbytes / (clock() - t0))
    return best


def build_models(work: Path, names: list[str]) -> dict[str, Path]:
    """The random HF model, our model directory with its exports, CTranslate2's copy and the
    q8_0 GGUF file (the last two only when those engines are asked for)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from export.onnx_export import export_onnx
    from model.convert import convert_hf

    work.mkdir(parents=True, exist_ok=True)
    paths = {"hf": work / "hf", "ours": work / "ours", "ct2-int8": work / "ct2-int8"}
    if not (paths["hf"] / "tokenizer.json").exists():
        from transformers import GPT2Tokenizer

        from model.tokenizer import _bpe_dirs

        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(paths["hf"])
        bpe = next(d for d in _bpe_dirs(None) if (d / "encoder.json").is_file())
        tok = GPT2Tokenizer(vocab=str(bpe / "encoder.json"), merges=str(bpe / "vocab.bpe"))
        tok.save_pretrained(paths["hf"])  # CTranslate2's converter reads the vocabulary
    if not (paths["ours"] / modeldir.WEIGHTS_FILE).exists():
        convert_hf(paths["hf"], paths["ours"], force=True)
    for name, (q, kv) in EXPORTS.items():
        paths[name] = work / name
        if name not in names and name != "onnx-int8":  # onnx-int8: the extra checks' model
            continue
        done = paths[name] / modeldir.CONFIG_FILE
        meta = json.loads(done.read_text()).get("onnx", {}) if done.exists() else {}
        if (meta.get("quantize"), meta.get("kv_cache", "float32")) != (q, kv):
            export_onnx(paths["ours"], paths[name], quantize=q, kv_cache=kv, force=True)
    paths["llama-q8_0"] = work / "gpt2-q8_0.gguf"
    if "llama-q8_0" in names and not paths["llama-q8_0"].exists():
        from export.gguf_export import export_gguf

        export_gguf(paths["ours"], paths["llama-q8_0"], type="q8_0", force=True)
    if "ct2-int8" in names and not (paths["ct2-int8"] / "model.bin").exists():
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, ctranslate2.converters as c; "
                "c.TransformersConverter(sys.argv[1]).convert(sys.argv[2], "
                "quantization='int8', force=True)",
                str(paths["hf"]),
                str(paths["ct2-int8"]),
            ],
            check=True,
        )
    return paths


def onnx_weight_bytes(path: Path) -> int:
    """Bytes of the matrices a decode step reads (the position table: one row, not counted)."""
    import onnx

    graph = onnx.load(str(path / modeldir.ONNX_FILE)).graph
    gathered = {n.input[0] for n in graph.node if n.op_type == "Gather"}
    matmul = {n.input[1] for n in graph.node if n.op_type in ("MatMul", "MatMulNBits", "Gemm")}
    total = 0
    for t in graph.initializer:
        if t.name in gathered and t.name not in matmul:
            continue  # an embedding table: one row per token
        total += len(t.raw_data) or 4 * int(np.prod(t.dims))
    return total


class NoEndOfText:
    """The tokenizer without an end-of-text token, so every run makes all its tokens."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    eot = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def ours(backend: Backend) -> Callable[[list[int], int], Timing]:
    def run(prompt: list[int], new: int) -> Timing:
        start = time.process_time()
        tok = NoEndOfText(backend.info.tokenizer())
        gen = Generation(
            backend,
            tok,  # type: ignore[arg-type]
            prompt,
            SamplingSettings(temperature=0, max_new_tokens=new),
        )
        for i, _ in enumerate(gen):
            if i == 0:
                cpu = time.process_time()
        rate = (new - 1) / (time.process_time() - cpu)
        return gen.stats.time_to_first_token, gen.stats.tokens_per_second, rate, cpu - start

    return run


def ct2(path: Path, threads: int) -> Callable[[list[int], int], Timing]:
    import ctranslate2

    gen = ctranslate2.Generator(str(path), device="cpu", intra_threads=threads)

    def run(prompt: list[int], new: int) -> Timing:
        t0, start = time.perf_counter(), time.process_time()
        first = 0.0
        steps = gen.generate_tokens(
            [str(i) for i in prompt], max_length=new, sampling_topk=1, end_token=[]
        )
        for i, _ in enumerate(steps):
            if i == 0:
                first, cpu = time.perf_counter(), time.process_time()
        rate = (new - 1) / (time.process_time() - cpu)
        return first - t0, (new - 1) / (time.perf_counter() - first), rate, cpu - start

    return run


def hf(path: Path) -> Callable[[list[int], int], Timing]:
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(path).eval()

    @torch.inference_mode()
    def run(prompt: list[int], new: int) -> Timing:
        t0, start = time.perf_counter(), time.process_time()
        out = model(torch.tensor([prompt]), use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        first, cpu = time.perf_counter(), time.process_time()
        past = out.past_key_values
        for _ in range(new - 1):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        rate = (new - 1) / (time.process_time() - cpu)
        return first - t0, (new - 1) / (time.perf_counter() - first), rate, cpu - start

    return run


class Llama:
    """llama.cpp in a subprocess (benchmarks/llama_worker.py), one request per run."""

    def __init__(self, python: str, path: Path, threads: int, context: int = 1024) -> None:
        worker = Path(__file__).with_name("llama_worker.py")
        self.proc = subprocess.Popen(
            [python, str(worker), str(path), str(threads), str(context)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reply()  # {"ready": true} once the model is loaded

    def _reply(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"llama.cpp worker exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def __call__(self, prompt: list[int], new: int) -> Timing:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"prompt": prompt, "new": new}) + "\n")
        self.proc.stdin.flush()
        r = self._reply()
        return r["ttft"], r["tps"], r["cpu_rate"], r["cpu_ttft"]

    def more(self, n: int) -> float:
        """Seconds for n more greedy tokens after the last request's."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"more": n}) + "\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def start(self, prompt: list[int]) -> None:
        self(prompt, 1)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def llama_python(choice: str | None) -> str | None:
    """The Python that runs llama.cpp: --llama-python, else this one if it has llama_cpp."""
    if choice:
        return choice
    import importlib.util

    return sys.executable if importlib.util.find_spec("llama_cpp") else None


class OnnxChunks:
    """One of our exports, driven as Llama.start/more drive llama.cpp: a prompt, then greedy
    tokens a chunk at a time (the engine and an argmax; no sampler, as llama_worker)."""

    def __init__(self, path: Path, threads: int) -> None:
        from export.ort_backend import OrtModel

        self.stream = OrtModel.load(modeldir.read(path), threads, spin=True).streams(1)
        self.tok = 0

    def start(self, prompt: list[int]) -> None:
        self.tok = int(self.stream.prefill(0, prompt).argmax())

    def more(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.tok = int(self.stream.decode_one(self.tok).argmax())
        return time.perf_counter() - t0


# Between turns: the last engine's idle workers stop spinning (onnxruntime's pool spins for
# ~35 ms after a run before it sleeps; measured), so that they take no core from the next.
PAUSE = 0.05


def paired_chunks(
    engines: dict[str, OnnxChunks | Llama], windows: int, chunk: int = 8
) -> dict[str, tuple[float, float]]:
    """Decode tokens/s of each engine over positions 256-384, the engines taking turns every
    `chunk` tokens, so that a change in the machine's speed (other tenants' memory traffic
    moves this VM's by up to 1.5x within seconds) hits all of them alike. Returns each
    engine's median tokens/s over its chunks and the median, over turns, of its chunk's rate
    against the first engine's in the same turn."""
    rng = np.random.default_rng(2)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(windows):
        prompt = rng.integers(0, 50257, 256).tolist()
        for engine in engines.values():
            engine.start(prompt)
        for _ in range(128 // chunk):
            for name, engine in engines.items():
                time.sleep(PAUSE)
                seconds[name].append(engine.more(chunk))
    first = next(iter(seconds.values()))
    return {
        name: (
            chunk / statistics.median(times),
            statistics.median(a / b for a, b in zip(first, times, strict=True)),
        )
        for name, times in seconds.items()
    }


def context_rates(
    paths: dict[str, Path], threads: int, steps: int, clock: Callable[[], float]
) -> dict[str, tuple[float, float]]:
    """Each model's decode tokens/s at positions 256-384 and 900-1000: one stream in each
    range, every model's, taking turns a step at a time; the median step of each."""
    from export.ort_backend import OrtModel

    rng = np.random.default_rng(0)
    ranges = [(256, 384), (900, 1000)]
    turns = []  # (model, range index, stream)
    for name, path in paths.items():
        model = OrtModel.load(modeldir.read(path), threads)
        turns += [(name, k, model.streams(1)) for k in range(len(ranges))]
    times: dict[tuple[str, int], list[float]] = {(n, k): [] for n, k, _ in turns}
    for _ in range(steps):
        for name, k, stream in turns:
            start, end = ranges[k]
            if stream.lengths[0] in (0, end):  # (re)start the range, untimed
                stream.prefill(0, rng.integers(0, 50257, start).tolist())
            token = int(rng.integers(0, 50257))
            t0 = clock()
            stream.decode_batch([token])
            times[name, k].append(clock() - t0)
    return {
        n: (1 / statistics.median(times[n, 0]), 1 / statistics.median(times[n, 1])) for n in paths
    }


def stream_costs(
    paths: dict[str, Path], threads: int, n: int, steps: int, clock: Callable[[], float]
) -> dict[str, tuple[float, float]]:
    """Each model's seconds per batched decode step of one stream and of n streams (positions
    256-320, each stream its own): every set takes turns a step at a time; median steps."""
    from export.ort_backend import OrtModel

    rng = np.random.default_rng(1)
    turns = []  # (model, streams in the step, their set)
    for name, path in paths.items():
        model = OrtModel.load(modeldir.read(path), threads)
        turns += [(name, b, model.streams(b)) for b in (1, n)]
    times: dict[tuple[str, int], list[float]] = {(name, b): [] for name, b, _ in turns}
    for _ in range(steps):
        for name, b, streams in turns:
            if streams.lengths[0] in (0, 320):  # (re)start, untimed
                for i in range(b):
                    streams.prefill(i, rng.integers(0, 50257, 256 - 7 * i).tolist())
            tokens = rng.integers(0, 50257, b).tolist()
            t0 = clock()
            streams.decode_batch(tokens)
            times[name, b].append(clock() - t0)
    return {
        name: (statistics.median(times[name, 1]), statistics.median(times[name, n]))
        for name in paths
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/decode-bench"))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--threads",
        default=str(min(os.cpu_count() or 1, 4)),
        help="threads per engine; a list (1,2) runs everything once per count",
    )
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--context", action="store_true", help="also positions 256-384 vs 900-1000")
    ap.add_argument("--streams", type=int, default=0, help="also N streams vs 1, batched")
    ap.add_argument(
        "--steps", type=int, default=300, help="decode steps of each kind for --context/--streams"
    )
    ap.add_argument("--llama-python", default=None, help="a Python with llama_cpp installed")
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        help="also N windows of decode in turns of 8 tokens against llama.cpp (medians)",
    )
    args = ap.parse_args()
    tune_allocator()  # as load_backend does, also for the checks that load OrtModel directly
    paths = build_models(args.work_dir, args.engines.split(","))
    for threads in [int(t) for t in args.threads.split(",")]:
        bench(args, paths, threads)


def bench(args: argparse.Namespace, paths: dict[str, Path], threads: int) -> None:
    """Every engine of --engines at this many threads, interleaved, and the extra checks."""
    import torch

    args.threads = threads
    torch.set_num_threads(args.threads)
    names = args.engines.split(",")
    runners: dict[str, Callable[[list[int], int], Timing]] = {}
    llama: Llama | None = None
    weight_bytes: dict[str, int] = {}
    params = modeldir.read(paths["ours"]).config
    fp32_bytes = 4 * (params.num_params() - params.block_size * params.n_embd)
    for name in names:
        if name == "torch":
            runners[name] = ours(load_backend(paths["ours"], "torch", threads=args.threads))
            weight_bytes[name] = fp32_bytes
        elif name.startswith("onnx-"):
            runners[name] = ours(load_backend(paths[name], "onnx", threads=args.threads, spin=True))
            weight_bytes[name] = onnx_weight_bytes(paths[name])
        elif name == "ct2-int8":
            runners[name] = ct2(paths[name], args.threads)
            weight_bytes[name] = onnx_weight_bytes(paths["onnx-int8"])  # int8 weights too
        elif name == "hf":
            runners[name] = hf(paths["hf"])
            weight_bytes[name] = fp32_bytes
        elif name == "llama-q8_0":
            python = llama_python(args.llama_python)
            if python is None:
                print("llama-q8_0 left out: no llama_cpp here; pass --llama-python")
                continue
            runners[name] = llama = Llama(python, paths[name], args.threads)
            weight_bytes[name] = paths[name].stat().st_size
    prompt = np.random.default_rng(0).integers(0, 50257, args.prompt_tokens).tolist()
    bw = {1: read_bandwidth(1), args.threads: read_bandwidth(args.threads)}
    bw_cpu = read_bandwidth(1, clock=time.process_time)
    results: dict[str, list[Timing]] = {n: [] for n in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            time.sleep(PAUSE)  # the last engine's workers stop spinning first
            results[name].append(run(prompt, args.new_tokens))
    bw = {k: max(v, read_bandwidth(k)) for k, v in bw.items()}  # again, after the rounds
    bw_cpu = max(bw_cpu, read_bandwidth(1, clock=time.process_time))
    by_cpu = args.threads == 1  # CPU-time rates mean something for one thread only

    print(
        f"CPU {_cpu_name()} ({_cpu_flags()}), {os.cpu_count()} logical CPUs, "
        f"{args.threads} threads per engine"
    )
    print(f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(
        f"read bandwidth: {bw[1] / 1e9:.1f} GB/s one thread, "
        f"{bw[args.threads] / 1e9:.1f} GB/s {args.threads} threads"
    )
    c = params.n_embd
    cache = 2 * params.n_layer * (args.prompt_tokens + args.new_tokens // 2) * c * 4
    print(
        f"prompt {args.prompt_tokens}, {args.new_tokens} new tokens, greedy; best of "
        f"{args.rounds} interleaved rounds (median in brackets); the fp32 KV cache read per "
        f"token at the mean position is another {cache / 1e6:.0f} MB, not counted below"
    )
    if by_cpu:
        print(
            f"per CPU-second (one thread; the process's CPU time, so time spent waiting for "
            f"a core on a busy machine is left out): read bandwidth {bw_cpu / 1e9:.1f} GB/s"
        )
    print(
        "| engine | weights read per token (MB) | time to first token (ms) | decode tokens/s "
        "| limit tokens/s | share of limit |"
        + (
            " tokens per CPU-second | limit per CPU-second | share | CPU ms to first token |"
            if by_cpu
            else ""
        )
    )
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if by_cpu else ""))
    best_tps, best_cpu = {}, {}
    for name, rows in results.items():
        ttft = min(r[0] for r in rows)
        tps = max(r[1] for r in rows)
        med = statistics.median(r[1] for r in rows)
        best_tps[name] = tps
        best_cpu[name] = max(r[2] for r in rows)
        limit = bw[args.threads] / weight_bytes[name]
        line = (
            f"| {name} | {weight_bytes[name] / 1e6:.0f} | {ttft * 1e3:.0f} | {tps:.1f} "
            f"({med:.1f}) | {limit:.0f} | {tps / limit:.0%} |"
        )
        if by_cpu:
            limit_cpu = bw_cpu / weight_bytes[name]
            line += f" {best_cpu[name]:.1f} | {limit_cpu:.0f} | {best_cpu[name] / limit_cpu:.0%} |"
            line += f" {min(r[3] for r in rows) * 1e3:.0f} |"
        print(line)
    if "onnx-int8" in best_tps and "ct2-int8" in best_tps:
        print(
            f"onnx-int8 / ct2-int8: {best_tps['onnx-int8'] / best_tps['ct2-int8']:.2f}x"
            + (
                f" ({best_cpu['onnx-int8'] / best_cpu['ct2-int8']:.2f}x per CPU-second)"
                if by_cpu
                else ""
            )
        )
    for ours_name in [n for n in ("onnx-int8", "onnx-int8-kvf32") if n in best_tps]:
        if "llama-q8_0" not in best_tps:
            break
        first = {n: min(r[0] for r in results[n]) for n in (ours_name, "llama-q8_0")}
        print(
            f"{ours_name} / llama-q8_0: decode "
            f"{best_tps[ours_name] / best_tps['llama-q8_0']:.2f}x (target >= 1.15x), time to "
            f"first token {first[ours_name] / first['llama-q8_0']:.2f}x (target <= 0.8x)"
        )
        if by_cpu:
            cpu_first = {n: min(r[3] for r in results[n]) for n in (ours_name, "llama-q8_0")}
            print(
                f"per CPU-second: decode {best_cpu[ours_name] / best_cpu['llama-q8_0']:.2f}x, "
                f"CPU time to first token {cpu_first[ours_name] / cpu_first['llama-q8_0']:.2f}x"
            )
    if args.paired and llama is not None:
        ours_names = [n for n in ("onnx-int8", "onnx-int8-kvf32") if n in names]
        engines: dict[str, OnnxChunks | Llama] = {"llama-q8_0": llama}
        engines |= {n: OnnxChunks(paths[n], args.threads) for n in ours_names}
        for name, (rate, ratio) in paired_chunks(engines, args.paired).items():
            print(
                f"paired turns of 8 tokens, positions 256-384, {args.paired} windows: {name} "
                f"{rate:.1f} tokens/s (median), {ratio:.2f}x llama-q8_0 (median of turns)"
            )
    clock = time.process_time if by_cpu else time.perf_counter
    unit = "per CPU-second" if by_cpu else "wall clock"
    extra = [n for n in ("onnx-int8", "onnx-int8-kvf32") if n in names] or ["onnx-int8"]
    if args.context:
        rates = context_rates({n: paths[n] for n in extra}, args.threads, args.steps, clock)
        for name, (early, late) in rates.items():
            print(
                f"{name} decode at positions 256-384: {early:.1f} tokens/s, 900-1000: "
                f"{late:.1f} tokens/s ({late / early:.0%}; {unit})"
            )
        if llama is not None:  # wall clock: its CPU time is not this process's
            early, late = llama_context_rates(llama, args.rounds)
            print(
                f"llama-q8_0 decode at positions 256-384: {early:.1f} tokens/s, 900-1000: "
                f"{late:.1f} tokens/s ({late / early:.0%}; wall clock)"
            )
    costs = (
        stream_costs({n: paths[n] for n in extra}, args.threads, args.streams, args.steps, clock)
        if args.streams > 1
        else {}
    )
    for name, (one, many) in costs.items():
        print(
            f"{name} batched step: 1 stream {one * 1e3:.1f} ms, {args.streams} streams "
            f"{many * 1e3:.1f} ms ({many / one:.2f}x; {unit})"
        )
    if llama is not None:
        llama.close()


def llama_context_rates(llama: Llama, rounds: int) -> tuple[float, float]:
    """llama.cpp's decode tokens/s over positions 256-384 and 900-1000 (best rounds)."""
    rng = np.random.default_rng(0)
    best = [0.0, 0.0]
    for _ in range(rounds):
        for k, (start, end) in enumerate([(256, 384), (900, 1000)]):
            prompt = rng.integers(0, 50257, start).tolist()
            best[k] = max(best[k], llama(prompt, end - start + 1)[1])
    return best[0], best[1]


def _cpu_flags() -> str:
    """The CPU features the int8 kernels care about, from /proc/cpuinfo."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "flags unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
