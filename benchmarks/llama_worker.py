"""llama.cpp's side of benchmarks/decode_bench.py, run as a subprocess in llama.cpp's own venv.

    /path/to/llama-venv/bin/python benchmarks/llama_worker.py MODEL.gguf THREADS CONTEXT

It loads the GGUF file once and then answers one JSON line per request line on stdin:
{"prompt": [ids], "new": N} -> {"ttft": s, "tps": tokens/s, "cpu_rate": tokens/CPU-s,
"cpu_ttft": CPU-s to the first token}: the
prompt evaluated in one batch, then N - 1 greedy tokens one at a time (argmax of llama.cpp's
logits), timed as decode_bench times this project's engines. {"more": N} -> {"seconds": s}:
N more greedy tokens after the last request's, for decode_bench's paired chunks. Only
llama_cpp and numpy are imported, so it runs in a venv without this project.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def main() -> None:
    path, threads, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = Llama(
        model_path=path,
        n_ctx=context,
        n_batch=context,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    vocab = llm.n_vocab()

    def next_token() -> int:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))
        return int(logits.argmax())

    print(json.dumps({"ready": True}), flush=True)
    tok = 0
    for line in sys.stdin:
        request = json.loads(line)
        if "more" in request:
            t0 = time.perf_counter()
            for _ in range(request["more"]):
                llm.eval([tok])
                tok = next_token()
            print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
            continue
        prompt, new = request["prompt"], request["new"]
        llm.reset()
        t0, start = time.perf_counter(), time.process_time()
        llm.eval(prompt)
        tok = next_token()
        first, cpu = time.perf_counter(), time.process_time()
        for _ in range(new - 1):
            llm.eval([tok])
            tok = next_token()
        wall, cpu_s = time.perf_counter() - first, time.process_time() - cpu
        reply = {
            "ttft": first - t0,
            "tps": (new - 1) / wall,
            "cpu_rate": (new - 1) / cpu_s,
            "cpu_ttft": cpu - start,
        }
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
