"""Tokenizer training: `data prepare --tokenizer bpe:N` against the tokenizers library's own
trainer on the same text, in time (wall and CPU) and peak memory (each run a child process;
its own rusage from os.wait4).

The corpus is JSON Lines ({"text": ...}), deterministic for a given --size-mb and --seed:
documents of sentences whose words are drawn from a Zipf distribution (s=1.1) over Tiny
Shakespeare's words by frequency (when found, else none) followed by 200k made-up words
of 2-4 syllables, so that BPE has a real long tail to merge. It is built once per size and
kept in --work. Or pass --corpus FILE.jsonl.

Contenders, run interleaved (one of each per round, --repeats rounds):
  prepare     `minigpt-tui data prepare CORPUS --tokenizer bpe:N` as a whole process
              (train the tokenizer, then tokenize and write train.bin/val.bin)
  ours-train  the BPE-training phase alone (model.data.make_tokenizer, as prepare calls it)
  hf-iter     the library's trainer from a Python iterator: the same training split's
              documents read with json.loads, fed as batches of 1,000 (train_from_iterator)
  hf-files    the library's fastest path, Tokenizer.train([train.txt]) on the same
              documents written out as plain text beforehand (not timed)
All train the same model: byte-level BPE, GPT-2's pre-tokenizer pattern, <|endoftext|> as the
one special token, the 256 byte symbols as the initial alphabet, vocab N.

    nice -n 19 python benchmarks/tokenizer_train.py --size-mb 60 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = [ROOT.parent / "shared/data/tinyshakespeare.txt"]
SHAKESPEARE += [ROOT.parents[1] / "shared/data/tinyshakespeare.txt"]
MODES = ("prepare", "ours-train", "hf-iter", "hf-files")
HF_BATCH = 1000


def vocabulary(rng: Any) -> list[str]:
    """Words by rank: Shakespeare's by frequency, then made-up ones."""
    words: list[str] = []
    for path in SHAKESPEARE:
        if path.exists():
            counts: dict[str, int] = {}
            for w in path.read_text(encoding="utf-8").split():
                w = w.strip(".,;:!?'\"-()[]")
                if w:
                    counts[w] = counts.get(w, 0) + 1
            words = sorted(counts, key=lambda w: (-counts[w], w))
            break
    import numpy as np

    onsets = "b c d f g h j k l m n p r s t v w z bl br ch cl cr dr fl gr pl pr sh st th tr".split()
    vowels = "a e i o u ai ea ee ie oa ou".split()
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng"]
    seen = set(words)
    want = len(words) + 200_000
    while len(words) < want:
        n = 400_000
        parts = [
            np.array(onsets, dtype=object)[rng.integers(len(onsets), size=(n, 4))],
            np.array(vowels, dtype=object)[rng.integers(len(vowels), size=(n, 4))],
            np.array(codas, dtype=object)[rng.integers(len(codas), size=(n, 4))],
        ]
        syllables = parts[0] + parts[1] + parts[2]  # (n, 4)
        for row, k in zip(syllables.tolist(), rng.integers(2, 5, size=n).tolist(), strict=True):
            w = "".join(row[:k])
            if w not in seen and len(words) < want:
                seen.add(w)
                words.append(w)
    return words


def make_corpus(path: Path, size_mb: float, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(vocabulary(rng), dtype=object)
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-1.1)
    cdf /= cdf[-1]
    ends = np.array(["", "", "", "", "", "", "", ",", ",", ";", ".", ".", "?", "!", ".\n"])
    limit, done = int(size_mb * 1e6), 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while done < limit:
            n = int(rng.integers(30_000, 60_000))
            picked = words[np.searchsorted(cdf, rng.random(n))]
            tails = ends[rng.integers(len(ends), size=n)]
            lengths = rng.integers(40, 600, size=n // 40)
            at, lines = 0, []
            for k in lengths:
                if at + k > n:
                    break
                doc = " ".join(map(str.__add__, picked[at : at + k], tails[at : at + k]))
                lines.append(json.dumps({"text": doc[:1].upper() + doc[1:]}) + "\n")
                at += k
            block = "".join(lines)
            f.write(block)
            done += len(block.encode("utf-8"))
    tmp.replace(path)


def train_split_docs(corpus: Path, val_fraction: float = 0.1) -> Iterator[str]:
    """The documents that end by the split point (bytes on disk), as data prepare splits."""
    split_at = corpus.stat().st_size * (1 - val_fraction)
    done = 0
    with open(corpus, "rb") as f:
        for line in f:
            done += len(line)
            if done > split_at:
                return
            yield json.loads(line)["text"]


def hf_trainer(vocab: int) -> tuple[Any, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return hf, trainer


def child(mode: str, corpus: Path, vocab: int, out: Path) -> None:
    """One contender, in this process (the parent measures it)."""
    if mode == "ours-train":
        from model.data import make_tokenizer
        from model.tokenizer import BPETokenizer

        split_at = corpus.stat().st_size * 0.9
        tok = make_tokenizer(f"bpe:{vocab}", [corpus], "text", split_at)
        assert isinstance(tok, BPETokenizer)
        (out / "tokenizer.json").write_text(tok.hf_json(), encoding="utf-8")
        return
    hf, trainer = hf_trainer(vocab)
    if mode == "hf-iter":
        docs = train_split_docs(corpus)

        def batches() -> Iterator[list[str]]:
            batch: list[str] = []
            for doc in docs:
                batch.append(doc)
                if len(batch) == HF_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

        hf.train_from_iterator(batches(), trainer)
    else:
        hf.train([str(corpus.with_suffix(".train.txt"))], trainer)
    hf.save(str(out / "tokenizer.json"))


def measure(cmd: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}


def merges(path: Path) -> list[str]:
    return [str(m) for m in json.loads(path.read_text())["model"]["merges"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=600.0)
    ap.add_argument("--corpus", type=Path, help="a JSON Lines corpus to use instead")
    ap.add_argument("--work", type=Path, default=ROOT / "runs/bench-tokenizer-train")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        make_corpus(args.build, args.size_mb, args.seed)
        return
    if args.child:
        child(args.child, args.corpus, args.vocab, args.out)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or args.work / f"corpus-{args.size_mb:g}mb-{args.seed}.jsonl"
    if not corpus.exists():
        t = time.perf_counter()
        # in a child: a process forked from a large parent inherits its peak RSS (ru_maxrss)
        build = [sys.executable, __file__, "--build", str(corpus), "--size-mb", str(args.size_mb)]
        subprocess.run([*build, "--seed", str(args.seed)], check=True)
        print(f"built {corpus} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    train_txt = corpus.with_suffix(".train.txt")
    if not train_txt.exists():
        with open(train_txt, "w", encoding="utf-8") as f:
            f.writelines(doc + "\n" for doc in train_split_docs(corpus))
    modes = args.modes.split(",")
    cli = str(Path(sys.executable).with_name("minigpt-tui"))
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "")
    info = {
        "cpu": cpu or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "corpus_mb": round(corpus.stat().st_size / 1e6, 1),
        "train_txt_mb": round(train_txt.stat().st_size / 1e6, 1),
        "vocab": args.vocab,
        "nice": os.nice(0),
    }
    print(json.dumps(info))
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.repeats):
        for mode in modes:
            out = args.work / f"out-{mode}"
            out.mkdir(exist_ok=True)
            if mode == "prepare":
                cmd = [cli, "data", "prepare", str(corpus), "--tokenizer", f"bpe:{args.vocab}"]
                cmd += ["--out", str(out), "--force"]
            else:
                cmd = [sys.executable, __file__, "--child", mode, "--corpus", str(corpus)]
                cmd += ["--vocab", str(args.vocab), "--out", str(out)]
            load = os.getloadavg()[0]
            m = measure(cmd) | {"load": load}
            results[mode].append(m)
            print(json.dumps({"round": r, "mode": mode} | {k: round(v, 2) for k, v in m.items()}))
    # ours/theirs within each round (run back to back, under the same load)
    for ours in ("prepare", "ours-train"):
        for theirs in ("hf-iter", "hf-files"):
            if ours in results and theirs in results:
                for r, (a, b) in enumerate(zip(results[ours], results[theirs], strict=True)):
                    ratio = {k: round(a[k] / b[k], 2) for k in ("wall", "cpu", "rss_mb")}
                    print(json.dumps({"round": r, "ratio": f"{ours}/{theirs}"} | ratio))
    trained = [m for m in ("ours-train", "prepare", "hf-iter") if m in results]
    if len(trained) >= 2 and "hf-iter" in trained:
        ma = merges(args.work / f"out-{trained[0]}/tokenizer.json")
        mb = merges(args.work / "out-hf-iter/tokenizer.json")
        pairs = zip(ma, mb, strict=False)
        same = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(ma), len(mb)))
        common = len(set(ma) & set(mb))
        found = {"merges": [len(ma), len(mb)], "identical_prefix": same, "common": common}
        print(json.dumps(found))


if __name__ == "__main__":
    main()
