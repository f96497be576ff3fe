# ruff: noqa: E501  (the matrix reads best one row per line)
"""The bad-input matrix: every command with missing, empty, wrong-type and out-of-range
arguments ends in ONE `error: ...` line on stderr and a non-zero exit, never a traceback.

Each row is (command, what is wrong, argv). In argv, {model} is a good tiny model directory,
{data} good prepared data for it, {run} a run directory with one checkpoint, {text} a text file,
{binary} a file that is not text, {tmp} a fresh directory per test, {empty} an empty directory.
tests/README.md lists the matrix by command.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from safetensors.numpy import load_file, save_file
from test_convert import write_hf_gpt2

from model import checkpoint, modeldir
from tests.helpers import cli, expect_one_line_error, make_data, make_model

# fmt: off
MATRIX: list[tuple[str, str, list[str]]] = [
    # the program itself
    ("minigpt-tui", "unknown command", ["frobnicate"]),
    ("minigpt-tui", "unknown option", ["--frobnicate"]),
    # data prepare
    ("data prepare", "missing source", ["data", "prepare", "--out", "{tmp}/d"]),
    ("data prepare", "missing --out", ["data", "prepare", "{text}"]),
    ("data prepare", "empty source", ["data", "prepare", "", "--out", "{tmp}/d"]),
    ("data prepare", "source not found", ["data", "prepare", "{tmp}/nope.txt", "--out", "{tmp}/d"]),
    ("data prepare", "source not text", ["data", "prepare", "{binary}", "--out", "{tmp}/d"]),
    ("data prepare", "source not text, bpe", ["data", "prepare", "{binary}", "--out", "{tmp}/d", "--tokenizer", "bpe:300"]),
    ("data prepare", "source empty file", ["data", "prepare", "{tmp}/e.txt", "--out", "{tmp}/d"]),
    ("data prepare", "source dir without text", ["data", "prepare", "{empty}", "--out", "{tmp}/d"]),
    ("data prepare", "unknown tokenizer", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--tokenizer", "bpe"]),
    ("data prepare", "bpe vocabulary too small", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--tokenizer", "bpe:256"]),
    ("data prepare", "bpe vocabulary not a number", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--tokenizer", "bpe:many"]),
    ("data prepare", "include matches nothing", ["data", "prepare", "{empty}", "-o", "{tmp}/d", "--include", "*.parquet"]),
    ("data prepare", "val fraction 1", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--val-fraction", "1"]),
    ("data prepare", "val fraction negative", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--val-fraction", "-0.5"]),
    ("data prepare", "val fraction nan", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--val-fraction", "nan"]),
    ("data prepare", "val fraction not a number", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--val-fraction", "half"]),
    ("data prepare", "out exists", ["data", "prepare", "{text}", "--out", "{data}"]),
    ("data prepare", "out is a file", ["data", "prepare", "{text}", "--out", "{text}"]),
    ("data prepare", "--force over a model", ["data", "prepare", "{text}", "--out", "{model}", "--force"]),
    ("data prepare", "--force over a run", ["data", "prepare", "{text}", "--out", "{run}", "--force"]),
    ("data prepare", "--from-file without shakespeare", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--from-file", "{text}"]),
    ("data prepare", "--bpe-dir without gpt2", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--bpe-dir", "{empty}"]),
    ("data prepare", "--include with a file source", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--include", "*.md"]),
    ("data prepare", "--field with only text files", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--field", "body"]),
    ("data prepare", "--exclude with a file source", ["data", "prepare", "{text}", "-o", "{tmp}/d", "--exclude", "*.txt"]),
    ("data prepare", "chat and plain records mixed", ["data", "prepare", "{mixedchat}", "-o", "{tmp}/d"]),
    ("data prepare", "conversations and a text file mixed", ["data", "prepare", "{chatdir}", "-o", "{tmp}/d"]),
    ("data prepare", "conversations read as text", ["data", "prepare", "{chat}", "-o", "{tmp}/d", "--format", "text"]),
    ("data prepare", "no usable conversation", ["data", "prepare", "{badchat}", "-o", "{tmp}/d"]),
    ("data prepare", "one conversation, no val split", ["data", "prepare", "{onechat}", "-o", "{tmp}/d"]),
    ("data prepare", "unknown --format", ["data", "prepare", "{chat}", "-o", "{tmp}/d", "--format", "xml"]),
    ("data prepare", "--field with conversations", ["data", "prepare", "{chat}", "-o", "{tmp}/d", "--field", "text"]),
    ("data prepare", "chat BPE vocabulary too small", ["data", "prepare", "{chat}", "-o", "{tmp}/d", "--tokenizer", "bpe:260"]),
    ("data prepare", "--tokenizer-from with --tokenizer", ["data", "prepare", "{chat}", "-o", "{tmp}/d", "--tokenizer-from", "{model}", "--tokenizer", "gpt2"]),
    ("data prepare", "--tokenizer-from a missing model", ["data", "prepare", "{chat}", "-o", "{tmp}/d", "--tokenizer-from", "{tmp}/nope"]),
    ("data prepare", "shakespeare from a missing file", ["data", "prepare", "shakespeare", "-o", "{tmp}/d", "--from-file", "{tmp}/nope.txt"]),
    ("data prepare", "a truncated .gz", ["data", "prepare", "{tmp}/cut.txt.gz", "-o", "{tmp}/d"]),
    ("data prepare", "a truncated .zst", ["data", "prepare", "{tmp}/cut.txt.zst", "-o", "{tmp}/d"]),
    ("data prepare", "out is a FIFO", ["data", "prepare", "{text}", "-o", "{tmp}/fifo", "--force"]),
    ("data prepare", "out is /dev/null", ["data", "prepare", "{text}", "-o", "/dev/null", "--force"]),
    # train
    ("train", "missing --data", ["train", "--out", "{tmp}/r"]),
    ("train", "data not found", ["train", "--data", "{tmp}/nope", "--out", "{tmp}/r"]),
    ("train", "data empty dir", ["train", "--data", "{empty}", "--out", "{tmp}/r"]),
    ("train", "data is a model", ["train", "--data", "{model}", "--out", "{tmp}/r"]),
    ("train", "max iters 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--max-iters", "0"]),
    ("train", "max iters not a number", ["train", "--data", "{data}", "--out", "{tmp}/r", "--max-iters", "ten"]),
    ("train", "batch size 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--batch-size", "0"]),
    ("train", "grad accum 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--grad-accum", "0"]),
    ("train", "negative learning rate", ["train", "--data", "{data}", "--out", "{tmp}/r", "--lr", "-1"]),
    ("train", "nan learning rate", ["train", "--data", "{data}", "--out", "{tmp}/r", "--lr", "nan"]),
    ("train", "infinite learning rate", ["train", "--data", "{data}", "--out", "{tmp}/r", "--lr", "inf"]),
    ("train", "negative min lr", ["train", "--data", "{data}", "--out", "{tmp}/r", "--min-lr", "-1"]),
    ("train", "negative warmup", ["train", "--data", "{data}", "--out", "{tmp}/r", "--warmup-iters", "-1"]),
    ("train", "negative weight decay", ["train", "--data", "{data}", "--out", "{tmp}/r", "--weight-decay", "-0.1"]),
    ("train", "beta1 of 1", ["train", "--data", "{data}", "--out", "{tmp}/r", "--beta1", "1"]),
    ("train", "negative grad clip", ["train", "--data", "{data}", "--out", "{tmp}/r", "--grad-clip", "-1"]),
    ("train", "eval interval 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--eval-interval", "0"]),
    ("train", "eval iters 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--eval-iters", "0"]),
    ("train", "log interval 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--log-interval", "0"]),
    ("train", "negative ckpt interval", ["train", "--data", "{data}", "--out", "{tmp}/r", "--ckpt-interval", "-1"]),
    ("train", "keep 0 checkpoints", ["train", "--data", "{data}", "--out", "{tmp}/r", "--keep-checkpoints", "0"]),
    ("train", "negative time budget", ["train", "--data", "{data}", "--out", "{tmp}/r", "--time-budget", "-5"]),
    ("train", "block size 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--block-size", "0"]),
    ("train", "block size over the data", ["train", "--data", "{data}", "--out", "{tmp}/r", "--block-size", "100000", "--n-layer", "1", "--n-embd", "16", "--n-head", "2"]),
    ("train", "heads do not divide width", ["train", "--data", "{data}", "--out", "{tmp}/r", "--n-head", "3", "--n-embd", "16"]),
    ("train", "dropout 1.5", ["train", "--data", "{data}", "--out", "{tmp}/r", "--dropout", "1.5"]),
    ("train", "vocab smaller than the data", ["train", "--data", "{data}", "--out", "{tmp}/r", "--vocab-size", "3"]),
    ("train", "10**12 parameters", ["train", "--data", "{data}", "--out", "{tmp}/r", "--n-layer", "10000", "--n-embd", "3000", "--n-head", "10"]),
    ("train", "unknown dtype", ["train", "--data", "{data}", "--out", "{tmp}/r", "--dtype", "float99"]),
    ("train", "float16 on cpu", ["train", "--data", "{data}", "--out", "{tmp}/r", "--dtype", "float16", "--device", "cpu"]),
    ("train", "unknown device", ["train", "--data", "{data}", "--out", "{tmp}/r", "--device", "tpu"]),
    ("train", "unknown preset", ["train", "--data", "{data}", "--out", "{tmp}/r", "--preset", "gpt5"]),
    ("train", "config not found", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/nope.toml"]),
    ("train", "config not TOML", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{binary}"]),
    ("train", "config is /dev/zero", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "/dev/zero"]),
    ("train", "config is a FIFO", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/fifo"]),
    ("train", "config nested 20000 deep", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/deep.toml"]),
    ("train", "config of 30000 dotted keys", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/dotted.toml"]),
    ("train", "config unknown key", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/unknown.toml"]),
    ("train", "config wrong type", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/wrongtype.toml"]),
    ("train", "config string learning rate", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/strlr.toml"]),
    ("train", "config string bias", ["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/strbias.toml"]),
    ("train", "ckpt interval 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--ckpt-interval", "0"]),
    ("train", "out holds a run", ["train", "--data", "{data}", "--out", "{run}"]),
    ("train", "out is a model", ["train", "--data", "{data}", "--out", "{model}", "--force"]),
    ("train", "out is data", ["train", "--data", "{data}", "--out", "{data}", "--force"]),
    ("train", "out is a FIFO", ["train", "--data", "{data}", "--out", "{tmp}/fifo", "--force", "--max-iters", "1", "--device", "cpu"]),
    ("train", "out inside the data", ["train", "--data", "{data}", "--out", "{data}/run", "--max-iters", "1", "--block-size", "8", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--device", "cpu"]),
    ("train", "out inside the model it starts from", ["train", "--data", "{data}", "--init-from", "{model}", "--out", "{model}/run", "--max-iters", "1", "--device", "cpu"]),
    ("train", "out is a file", ["train", "--data", "{data}", "--out", "{text}", "--max-iters", "1", "--block-size", "8", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--device", "cpu"]),
    ("train", "resume with nothing to resume", ["train", "--data", "{data}", "--out", "{tmp}/r", "--resume"]),
    ("train", "resume with model flags", ["train", "--data", "{data}", "--out", "{run}", "--resume", "--n-layer", "4"]),
    ("train", "resume with a config of another shape", ["train", "--data", "{data}", "--out", "{run}", "--resume", "--config", "{tmp}/shape.toml"]),
    ("train", "negative sample interval", ["train", "--data", "{data}", "--out", "{tmp}/r", "--sample-interval", "-1"]),
    ("train", "init from a missing model", ["train", "--data", "{data}", "--out", "{tmp}/r", "--init-from", "{tmp}/nope"]),
    ("train", "init from with a longer block", ["train", "--data", "{data}", "--out", "{tmp}/r", "--init-from", "{model}", "--block-size", "64"]),
    ("train", "nproc 0", ["train", "--data", "{data}", "--out", "{tmp}/r", "--nproc", "0"]),
    ("train", "negative final eval tokens", ["train", "--data", "{data}", "--out", "{tmp}/r", "--final-eval-tokens", "-1"]),
    ("train", "nproc over the cores", ["train", "--data", "{data}", "--out", "{tmp}/r", "--nproc", "4096", "--device", "cpu"]),
    ("train", "init from non-finite weights", ["train", "--data", "{data}", "--out", "{tmp}/r", "--init-from", "{nanmodel}", "--device", "cpu"]),
    ("train", "sft preset without --init-from", ["train", "--data", "{chatdata}", "--out", "{tmp}/r", "--preset", "sft"]),
    ("train", "chat data from a model of another tokenizer kind", ["train", "--data", "{chatgpt2}", "--out", "{tmp}/r", "--init-from", "{model}", "--device", "cpu"]),
    ("train", "chat data from a model of another vocabulary", ["train", "--data", "{chatdata}", "--out", "{tmp}/r", "--init-from", "{model}", "--device", "cpu"]),
    ("train", "chat data into a plain run", ["train", "--data", "{chatdata}", "--out", "{run}", "--resume"]),
    ("train", "--text-data holding conversations", ["train", "--data", "{chatdata}", "--out", "{tmp}/r", "--text-data", "{chatdata}", "--device", "cpu"]),
    ("train", "--text-data of another tokenizer", ["train", "--data", "{chatdata}", "--out", "{tmp}/r", "--text-data", "{data}", "--device", "cpu"]),
    # eval
    ("eval", "missing model", ["eval", "--data", "{data}"]),
    ("eval", "missing --data", ["eval", "{model}"]),
    ("eval", "model not found", ["eval", "{tmp}/nope", "--data", "{data}"]),
    ("eval", "data not found", ["eval", "{model}", "--data", "{tmp}/nope"]),
    ("eval", "data is a text file", ["eval", "{model}", "--data", "{text}"]),
    ("eval", "unknown split", ["eval", "{model}", "--data", "{data}", "--split", "test"]),
    ("eval", "batch size 0", ["eval", "{model}", "--data", "{data}", "--batch-size", "0"]),
    ("eval", "batch size not a number", ["eval", "{model}", "--data", "{data}", "--batch-size", "many"]),
    ("eval", "unknown dtype", ["eval", "{model}", "--data", "{data}", "--dtype", "float16"]),
    ("eval", "unknown device", ["eval", "{model}", "--data", "{data}", "--device", "tpu"]),
    ("eval", "data of another tokenizer", ["eval", "{model}", "--data", "{otherdata}"]),
    ("eval", "non-finite weights", ["eval", "{nanmodel}", "--data", "{data}", "--device", "cpu"]),
    ("eval", "block size beyond the weights", ["eval", "{hugemodel}", "--data", "{data}", "--device", "cpu"]),
    ("eval", "stride 0", ["eval", "{model}", "--data", "{data}", "--stride", "0"]),
    ("eval", "stride beyond the block size", ["eval", "{model}", "--data", "{data}", "--stride", "100000"]),
    # info
    ("info", "model not found", ["info", "{tmp}/nope"]),
    ("info", "a text file", ["info", "{text}"]),
    ("info", "an empty directory", ["info", "{empty}"]),
    ("info", "unknown bundled name", ["info", "no-such-model"]),
    ("info", "a run whose latest points outside it", ["info", "{tmp}/escaped"]),
    # convert hf
    ("convert hf", "missing source", ["convert", "hf", "--out", "{tmp}/c"]),
    ("convert hf", "missing --out", ["convert", "hf", "{empty}"]),
    ("convert hf", "source not found", ["convert", "hf", "{tmp}/nope", "--out", "{tmp}/c"]),
    ("convert hf", "source without files", ["convert", "hf", "{empty}", "--out", "{tmp}/c"]),
    ("convert hf", "source is our own model", ["convert", "hf", "{model}", "--out", "{tmp}/c"]),
    ("convert hf", "source is a file", ["convert", "hf", "{text}", "--out", "{tmp}/c"]),
    ("convert hf", "config nested 100000 deep", ["convert", "hf", "{tmp}/deep", "--out", "{tmp}/c"]),
    ("convert hf", "out exists", ["convert", "hf", "{model}", "--out", "{model}"]),
    ("convert hf", "--force over data", ["convert", "hf", "{hfgood}", "--out", "{data}", "--force"]),
    ("convert hf", "--force over a run", ["convert", "hf", "{hfgood}", "--out", "{run}", "--force"]),
    ("convert hf", "n_layer 2.7", ["convert", "hf", "{hffloat}", "--out", "{tmp}/c"]),
    ("convert hf", "NaN weights", ["convert", "hf", "{hfnan}", "--out", "{tmp}/c"]),
    ("convert hf", "out inside the source", ["convert", "hf", "{hfgood}", "--out", "{hfgood}/ours", "--force"]),
    ("convert hf", "out is a FIFO", ["convert", "hf", "{hfgood}", "--out", "{tmp}/fifo", "--force"]),
    ("convert hf", "unimplemented activation", ["convert", "hf", "{hfgelu}", "--out", "{tmp}/c"]),
    # generate
    ("generate", "model not found", ["generate", "-m", "{tmp}/nope", "hi"]),
    ("generate", "a run whose latest points outside it", ["generate", "-m", "{tmp}/escaped", "hi"]),
    ("generate", "negative max tokens", ["generate", "-m", "{model}", "-n", "-1", "hi"]),
    ("generate", "max tokens not a number", ["generate", "-m", "{model}", "-n", "lots", "hi"]),
    ("generate", "negative temperature", ["generate", "-m", "{model}", "-t", "-1", "hi"]),
    ("generate", "nan temperature", ["generate", "-m", "{model}", "-t", "nan", "hi"]),
    ("generate", "negative top-k", ["generate", "-m", "{model}", "--top-k", "-1", "hi"]),
    ("generate", "top-p 0", ["generate", "-m", "{model}", "--top-p", "0", "hi"]),
    ("generate", "top-p 1.5", ["generate", "-m", "{model}", "--top-p", "1.5", "hi"]),
    ("generate", "repetition penalty 0", ["generate", "-m", "{model}", "--repetition-penalty", "0", "hi"]),
    ("generate", "negative seed", ["generate", "-m", "{model}", "--seed", "-1", "hi"]),
    ("generate", "seed not a number", ["generate", "-m", "{model}", "--seed", "x", "hi"]),
    ("generate", "unknown backend", ["generate", "-m", "{model}", "--backend", "tpu", "hi"]),
    ("generate", "onnx backend without an export", ["generate", "-m", "{model}", "--backend", "onnx", "hi"]),
    ("generate", "threads 0", ["generate", "-m", "{model}", "--threads", "0", "hi"]),
    ("generate", "unknown --unknown-chars", ["generate", "-m", "{model}", "--unknown-chars", "maybe", "hi"]),
    ("generate", "unknown device", ["generate", "-m", "{model}", "--backend", "torch", "--device", "tpu", "hi"]),
    ("generate", "characters the model lacks", ["generate", "-m", "{model}", "--unknown-chars", "error", "hi ¥"]),
    ("generate", "infinite repetition penalty", ["generate", "-m", "{model}", "--repetition-penalty", "inf", "hi"]),
    ("generate", "non-finite weights", ["generate", "-m", "{nanmodel}", "--backend", "torch", "hi"]),
    ("generate", "block size beyond the weights", ["generate", "-m", "{hugemodel}", "--backend", "torch", "hi"]),
    # chat (every check runs before the full-screen app starts)
    ("chat", "model not found", ["chat", "-m", "{tmp}/nope"]),
    ("chat", "unknown mode", ["chat", "-m", "{model}", "--mode", "poem"]),
    ("chat", "unknown backend", ["chat", "-m", "{model}", "--backend", "tpu"]),
    ("chat", "empty user name", ["chat", "-m", "{model}", "--user", " "]),
    ("chat", "bot name with a colon", ["chat", "-m", "{model}", "--bot", "A:B"]),
    ("chat", "negative temperature", ["chat", "-m", "{model}", "-t", "-0.5"]),
    ("chat", "negative top-k", ["chat", "-m", "{model}", "--top-k", "-3"]),
    ("chat", "top-p 2", ["chat", "-m", "{model}", "--top-p", "2"]),
    ("chat", "negative max tokens", ["chat", "-m", "{model}", "--max-tokens", "-1"]),
    ("chat", "negative seed", ["chat", "-m", "{model}", "--seed", "-7"]),
    ("chat", "temperature not a number", ["chat", "-m", "{model}", "-t", "warm"]),
    ("chat", "stdin and stdout not a terminal", ["chat", "-m", "{model}", "--no-history"]),
    ("chat", "follow a model, not a run", ["chat", "-m", "{model}", "--follow"]),
    ("chat", "follow a missing run", ["chat", "-m", "{tmp}/nope", "--follow"]),
    ("chat", "follow a run without checkpoints", ["chat", "-m", "{tmp}/norun", "--follow"]),
    ("chat", "follow an empty directory", ["chat", "-m", "{empty}", "--follow"]),
    ("chat", "follow a run whose latest points outside it", ["chat", "-m", "{tmp}/escaped", "--follow"]),
    ("chat", "a run whose latest points outside it", ["chat", "-m", "{tmp}/escaped"]),
    # config
    ("config", "unknown subcommand", ["config", "frob"]),
    ("config path", "unexpected argument", ["config", "path", "{text}"]),
    ("config show", "unknown option", ["config", "show", "--all"]),
    ("config edit", "unexpected argument", ["config", "edit", "{text}"]),
    # watch
    ("watch", "missing run", ["watch"]),
    ("watch", "parent not found", ["watch", "{tmp}/nope/nope"]),
    ("watch", "a file that is not metrics", ["watch", "{text}"]),
    ("watch", "stdin and stdout not a terminal", ["watch", "{tmp}"]),

    # score
    ("score", "file not found", ["score", "{tmp}/nope.txt", "-m", "{model}"]),
    ("score", "a binary file", ["score", "{binary}", "-m", "{model}"]),
    ("score", "a directory", ["score", "{empty}", "-m", "{model}"]),
    ("score", "/dev/urandom", ["score", "/dev/urandom", "-m", "{model}"]),
    ("score", "a FIFO", ["score", "{tmp}/fifo", "-m", "{model}"]),
    ("score", "an empty file", ["score", "{emptyfile}", "-m", "{model}"]),
    ("score", "characters the model lacks", ["score", "{odd}", "-m", "{model}"]),
    ("score", "model not found", ["score", "{text}", "-m", "{tmp}/nope"]),
    ("score", "unknown backend", ["score", "{text}", "-m", "{model}", "--backend", "tpu"]),
    ("score", "onnx backend without an export", ["score", "{text}", "-m", "{model}", "--backend", "onnx"]),
    ("score", "threads 0", ["score", "{text}", "-m", "{model}", "--threads", "0"]),
    ("score", "stride 0", ["score", "{text}", "-m", "{model}", "--stride", "0"]),
    ("score", "stride of the block size or more", ["score", "{text}", "-m", "{model}", "--stride", "100000"]),
    # export onnx
    ("export onnx", "out inside the model", ["export", "onnx", "{model}", "--out", "{model}/onnx", "--force"]),
    ("export onnx", "out is a FIFO", ["export", "onnx", "{model}", "--out", "{tmp}/fifo", "--force"]),
    ("export onnx", "missing model", ["export", "onnx"]),
    ("export onnx", "model not found", ["export", "onnx", "{tmp}/nope"]),
    ("export onnx", "unknown quantization", ["export", "onnx", "{model}", "--quantize", "int3", "--out", "{tmp}/x"]),
    ("export onnx", "opset too old", ["export", "onnx", "{model}", "--opset", "7", "--out", "{tmp}/x"]),
    ("export onnx", "opset not a number", ["export", "onnx", "{model}", "--opset", "new"]),
    ("export onnx", "opset newer than the tools run", ["export", "onnx", "{model}", "--opset", "99", "--out", "{tmp}/x"]),
    ("export onnx", "non-finite weights", ["export", "onnx", "{nanmodel}", "--out", "{tmp}/x"]),
    ("export onnx", "out is a file", ["export", "onnx", "{model}", "--out", "{text}"]),
    ("export onnx", "out holds other files", ["export", "onnx", "{model}", "--out", "{data}"]),
    ("export onnx", "out parent missing", ["export", "onnx", "{model}", "--out", "{tmp}/a/b/c"]),
    # export gguf
    ("export gguf", "missing model", ["export", "gguf"]),
    ("export gguf", "model not found", ["export", "gguf", "{tmp}/nope"]),
    ("export gguf", "unknown type", ["export", "gguf", "{model}", "--type", "q4_0", "--out", "{tmp}/x.gguf"]),
    ("export gguf", "out parent missing", ["export", "gguf", "{model}", "--out", "{tmp}/a/b/x.gguf"]),
    ("export gguf", "out is a directory", ["export", "gguf", "{model}", "--out", "{empty}"]),
    ("export gguf", "out exists", ["export", "gguf", "{model}", "--out", "{text}"]),
    ("export gguf", "model is data", ["export", "gguf", "{data}", "--out", "{tmp}/x.gguf"]),
    ("export gguf", "out is the model's own weights", ["export", "gguf", "{model}", "--out", "{model}/model.safetensors", "--force"]),
    ("export gguf", "out inside the model", ["export", "gguf", "{model}", "--out", "{model}/x.gguf", "--force"]),
    ("export gguf", "out is a FIFO", ["export", "gguf", "{model}", "--out", "{tmp}/fifo", "--force"]),
    ("export gguf", "out is a link to a FIFO", ["export", "gguf", "{model}", "--out", "{tmp}/fifolink", "--force"]),
    # export hf
    ("export hf", "missing model", ["export", "hf", "--out", "{tmp}/hf"]),
    ("export hf", "missing --out", ["export", "hf", "{model}"]),
    ("export hf", "model not found", ["export", "hf", "{tmp}/nope", "--out", "{tmp}/hf"]),
    ("export hf", "out parent missing", ["export", "hf", "{model}", "--out", "{tmp}/a/b/hf"]),
    ("export hf", "out is a file", ["export", "hf", "{model}", "--out", "{text}"]),
    ("export hf", "out holds other files", ["export", "hf", "{model}", "--out", "{data}", "--force"]),
    ("export hf", "out is our own model", ["export", "hf", "{model}", "--out", "{run}/step-000001", "--force"]),
    ("export hf", "out inside the model", ["export", "hf", "{model}", "--out", "{model}/hf", "--force"]),
    ("export hf", "out is a FIFO", ["export", "hf", "{model}", "--out", "{tmp}/fifo", "--force"]),
]
# fmt: on


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad-input")
    model = make_model(base)
    run = base / "run"
    shutil.copytree(model, run / "step-000001")
    modeldir.point_latest(run, run / "step-000001")
    (run / "metrics.jsonl").write_text("")
    other = base / "other"
    other.mkdir()
    binary = base / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    nanmodel = make_model(base, name="nan")
    weights = load_file(str(nanmodel / modeldir.WEIGHTS_FILE))
    weights["ln_f.weight"][0] = float("nan")
    save_file(weights, str(nanmodel / modeldir.WEIGHTS_FILE))
    hugemodel = make_model(base, name="huge")  # config.json: a block of 10**8, weights: 32
    meta = json.loads((hugemodel / modeldir.CONFIG_FILE).read_text())
    meta["model"]["block_size"] = 10**8
    (hugemodel / modeldir.CONFIG_FILE).write_text(json.dumps(meta))
    hffloat, hfnan, hfgood = base / "hf-float", base / "hf-nan", base / "hf-good"
    write_hf_gpt2(hfgood)
    write_hf_gpt2(hffloat)
    hf_config = json.loads((hffloat / "config.json").read_text())
    (hffloat / "config.json").write_text(json.dumps({**hf_config, "n_layer": 2.7}))
    hfgelu = base / "hf-gelu"  # the exact GELU, which the converter does not implement
    write_hf_gpt2(hfgelu)
    (hfgelu / "config.json").write_text(json.dumps({**hf_config, "activation_function": "gelu"}))
    write_hf_gpt2(hfnan)
    weights = load_file(str(hfnan / "model.safetensors"))
    weights["h.0.ln_1.bias"][0] = float("nan")
    save_file(weights, str(hfnan / "model.safetensors"))

    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    good = json.dumps({"messages": turns}) + "\n"
    chat = base / "chat.jsonl"
    chat.write_text(good * 5)
    mixedchat = base / "mixed.jsonl"
    mixedchat.write_text(good + json.dumps({"text": "plain"}) + "\n" + good)
    chatdir = base / "chatdir"
    chatdir.mkdir()
    (chatdir / "a.jsonl").write_text(good * 3)
    (chatdir / "b.txt").write_text("plain text")
    badchat = base / "badchat.jsonl"
    badchat.write_text(
        json.dumps({"messages": turns[:1]}) + "\n" + json.dumps({"messages": turns[::-1]}) + "\n"
    )
    onechat = base / "onechat.jsonl"
    onechat.write_text(good)

    odd = base / "odd.txt"
    odd.write_text("ROMEO: ¥ and € are not in the vocabulary", encoding="utf-8")
    empty_file = base / "empty.txt"
    empty_file.write_text("")
    return {
        "nanmodel": nanmodel,
        "hugemodel": hugemodel,
        "hffloat": hffloat,
        "hfnan": hfnan,
        "hfgood": hfgood,
        "hfgelu": hfgelu,
        "model": model,
        "data": make_data(base),
        "otherdata": make_data(other, text="a completely different alphabet: xyz 0123456789" * 40),
        "run": run,
        "text": base / "corpus.txt",
        "binary": binary,
        "odd": odd,
        "emptyfile": empty_file,
        "chat": chat,
        "chatdata": _prepared(chat, base / "chatdata", "char"),
        "chatgpt2": _prepared(chat, base / "chatgpt2", "gpt2"),
        "mixedchat": mixedchat,
        "chatdir": chatdir,
        "badchat": badchat,
        "onechat": onechat,
    }


def _prepared(source: Path, out: Path, tokenizer: str) -> Path:
    from model.data import prepare

    prepare([source], out, tokenizer, val_fraction=0.2)
    return out


def _fill(arg: str, places: dict[str, Path], tmp: Path) -> str:
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    return arg.format(tmp=tmp, empty=empty, **places)


@pytest.mark.parametrize(
    "argv", [row[2] for row in MATRIX], ids=[f"{row[0]}: {row[1]}" for row in MATRIX]
)
def test_bad_input_is_one_line_and_a_nonzero_exit(
    argv: list[str],
    places: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "e.txt").write_text("")
    (tmp_path / "norun").mkdir()
    (tmp_path / "norun" / "metrics.jsonl").write_text("")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "config.json").write_text("[" * 100_000)
    (tmp_path / "deep" / "model.safetensors").write_bytes(b"")
    (tmp_path / "unknown.toml").write_text("[train]\nmax_iters = 5\nlearning_speed = 3\n")
    (tmp_path / "wrongtype.toml").write_text("[train]\nmax_iters = 'five'\n")
    (tmp_path / "strlr.toml").write_text("[train]\nlearning_rate = 'fast'\n")
    (tmp_path / "strbias.toml").write_text("[model]\nbias = 'yes'\n")
    (tmp_path / "shape.toml").write_text("[model]\nn_layer = 4\n")
    os.mkfifo(tmp_path / "fifo")  # opening it to read or write would wait forever
    text = ("ROMEO: to be or not to be\n" * 2000).encode()
    for name, packed in (
        ("cut.txt.gz", gzip.compress(text)),
        ("cut.txt.zst", zstandard.ZstdCompressor().compress(text)),
    ):
        (tmp_path / name).write_bytes(packed[: len(packed) // 2])  # cut in the middle
    (tmp_path / "fifolink").symlink_to(tmp_path / "fifo")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 20_000 + "]" * 20_000 + "\n")
    (tmp_path / "dotted.toml").write_text("a" + ".a" * 30_000 + " = 1\n")
    escaped = tmp_path / "escaped"  # a run whose `latest` resolves to a model elsewhere
    escaped.mkdir()
    (escaped / "metrics.jsonl").write_text("")
    (escaped / "latest").symlink_to(places["model"])
    monkeypatch.setenv("MINIGPT_TUI_DATA_DIR", str(tmp_path / "user-data"))
    monkeypatch.chdir(tmp_path)
    before = _state(places)
    with _deadline(20):  # a bad value that slips through would start real work: fail fast
        expect_one_line_error(capsys, *[_fill(a, places, tmp_path) for a in argv])
    assert _state(places) == before  # nothing the user had was changed


class Hung(BaseException):
    """Not an Exception: nothing in the CLI may catch it and report a tidy error."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds}s: the bad input was not refused")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _state(places: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file and directory under the fixtures."""
    found = {}
    for top in places.values():
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            st = p.lstat()
            found[str(p)] = (st.st_size, st.st_mtime_ns)
    return found


def test_the_matrix_covers_every_command() -> None:
    from minigpt_tui.cli import _register, app

    _register()
    names = {c.name or c.callback.__name__ for c in app.registered_commands}  # type: ignore[union-attr]
    for group in app.registered_groups:
        sub = group.typer_instance
        assert sub is not None
        names |= {f"{group.name} {c.name or c.callback.__name__}" for c in sub.registered_commands}  # type: ignore[union-attr]
    covered = {row[0] for row in MATRIX}
    assert names <= covered, f"commands without bad-input rows: {names - covered}"
    assert len(MATRIX) >= 100


# The settings file (minigpt_tui/config.py): each unusable file is ONE line naming the key.
# `config show` refuses it (error, non-zero exit); `chat` says so in one warning line and
# starts with the defaults (tests/test_config.py checks the chat side).
# fmt: off
CONFIG_FILES: list[tuple[str, bytes, str]] = [
    ("not TOML", b"model = \n", "not valid TOML"),
    ("unknown key", b"colour = 'red'\n", "'colour'"),
    ("unknown sampling key", b"[sampling]\nheat = 1.0\n", "'sampling.heat'"),
    ("unknown binding id", b"[keys]\nfly = 'f9'\n", "'keys.fly'"),
    ("empty key binding", b"[keys]\nsend = ''\n", "'keys.send'"),
    ("string temperature", b"[sampling]\ntemperature = 'hot'\n", "'sampling.temperature'"),
    ("float top_k", b"[sampling]\ntop_k = 2.5\n", "'sampling.top_k'"),
    ("bool seed", b"[sampling]\nseed = true\n", "'sampling.seed'"),
    ("number model", b"model = 3\n", "'model'"),
    ("sampling not a table", b"sampling = 1\n", "[sampling]"),
    ("speakers not a table", b"speakers = 'x'\n", "[speakers]"),
    ("not UTF-8", b"model = '\xff\xfe'\n", "not UTF-8"),
    ("over 1 MiB", b"# " + b"x" * (1024 * 1024) + b"\n", "over 1 MiB"),
    ("nested 20000 deep", b"a = " + b"[" * 20000 + b"]" * 20000 + b"\n", "deeper than"),
    ("30000 dotted keys", b"a" + b".a" * 30000 + b" = 1\n", "deeper than"),
    ("5000 tables", b"[[a]]\n" * 5000, "more than"),
    ("a key name no keyboard has", b"[keys]\nhelp = 'ctrl+bananas'\n", "'keys.help'"),
    ("a modifier no keyboard has", b"[keys]\nhelp = 'shift+wobble+a'\n", "'keys.help'"),
    ("no key left that quits", b"[keys]\nquit = 'hyper+banana'\n", "'keys.quit'"),
    ("send takes quit's key", b"[keys]\nsend = 'ctrl+q'\n", "'keys.send'"),
    ("quit takes send's only key", b"[keys]\nsend = 'f9'\nquit = 'f9'\n", "'keys."),
    ("backend chat rejects", b"backend = 'tpu'\n", "'backend'"),
    ("temperature chat rejects", b"[sampling]\ntemperature = -1\n", "temperature"),
    ("speaker chat rejects", b"[speakers]\nuser = 'A: B'\n", "'speakers.user'"),
    ("theme chat rejects", b"theme = 'no-such-theme'\n", "'theme'"),
]
# fmt: on


@pytest.mark.parametrize(
    ("content", "names"), [r[1:] for r in CONFIG_FILES], ids=[r[0] for r in CONFIG_FILES]
)
def test_bad_config_file_is_one_line(
    content: bytes,
    names: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    monkeypatch.setenv("MINIGPT_TUI_CONFIG", str(path))
    line = expect_one_line_error(capsys, "config", "show")
    assert names in line and str(path) in line
    assert path.read_bytes() == content  # never rewritten


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_config_file_that_is_a_device_or_fifo_is_one_line_at_once(
    special: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/dev/zero used to be read until memory ran out (its stat size is 0), a FIFO blocked."""
    path = Path(special) if special.startswith("/") else tmp_path / special
    if not path.exists():
        os.mkfifo(path)
    monkeypatch.setenv("MINIGPT_TUI_CONFIG", str(path))
    with _deadline(10):
        assert "not a regular file" in expect_one_line_error(capsys, "config", "show")
        monkeypatch.setenv("EDITOR", "true")
        assert "not a regular file" in expect_one_line_error(capsys, "config", "edit")


def test_editor_with_an_unbalanced_quote_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGPT_TUI_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", "vi 'unclosed")
    assert "EDITOR" in expect_one_line_error(capsys, "config", "edit")
    assert not (tmp_path / "config.toml").exists()


def test_config_path_that_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGPT_TUI_CONFIG", str(tmp_path))
    assert "a directory, not a regular file" in expect_one_line_error(capsys, "config", "show")
    monkeypatch.setenv("EDITOR", "true")
    assert "not a regular file" in expect_one_line_error(capsys, "config", "edit")


def test_cosmetic_refusals_and_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = make_model(tmp_path)
    # A huge repetition penalty works without numpy overflow warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            cli(
                "generate",
                "-m",
                tiny,
                "--backend",
                "torch",
                "--repetition-penalty",
                "1e39",
                "-n",
                "20",
                "--seed",
                "1",
                "ROMEO",
            )
            == 0
        )
        assert (
            cli("generate", "-m", tiny, "--backend", "torch", "-t", "1e-300", "-n", "5", "hi") == 0
        )
    line = expect_one_line_error(capsys, "generate", "-m", tiny, "-t", "inf", "hi")
    assert "temperature must be >= 0 and finite, got inf" in line
    # --echo prints the prompt the model was given: without the dropped characters.
    capsys.readouterr()
    assert (
        cli("generate", "-m", tiny, "--echo", "--unknown-chars", "drop", "-n", "0", "hi ¥ROMEO")
        == 0
    )
    assert capsys.readouterr().out == "hi ROMEO"
    # A FIFO config.json is called what it is.
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / modeldir.CONFIG_FILE)
    line = expect_one_line_error(capsys, "info", fifo)
    assert "config.json is a FIFO, not a regular file" in line
    # Weights are written with the usual file mode, like every other file.
    mask = os.umask(0o022)
    try:
        model, info = checkpoint.load(tiny)
        checkpoint.save(tmp_path / "modes", model, info.meta)
    finally:
        os.umask(mask)
    assert (tmp_path / "modes" / modeldir.WEIGHTS_FILE).stat().st_mode & 0o777 == 0o644
    # chat and watch without a terminal: one line, no full-screen app.
    line = expect_one_line_error(capsys, "chat", "-m", tiny, "--no-history")
    assert "needs a terminal" in line
    line = expect_one_line_error(capsys, "watch", tmp_path)
    assert "needs a terminal" in line
