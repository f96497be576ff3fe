"""Whole-split validation loss of a nanoGPT checkpoint, computed exactly as ours is.

nanoGPT reports the mean loss over eval_iters random batches; our runs report the mean over
every token of the validation split (model.evaluate.split_loss). To compare the two, this loads
nanoGPT's ckpt.pt into our GPT class (the same GPT-2 architecture; only the parameter names
differ), maps our validation text onto nanoGPT's character vocabulary (meta.pkl) and runs
split_loss on it.

    python benchmarks/nanogpt_val.py --ckpt OUT_DIR/ckpt.pt \
        --meta NANOGPT/data/shakespeare_char/meta.pkl \
        --data DIR        # DIR: our prepared data directory (its val split is the one scored)
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.config import GPTConfig
from model.data import load_dataset
from model.evaluate import split_loss
from model.gpt import GPT


def load_nanogpt(path: Path) -> tuple[GPT, int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    args = ckpt["model_args"]
    cfg = GPTConfig(
        vocab_size=args["vocab_size"],
        block_size=args["block_size"],
        n_layer=args["n_layer"],
        n_head=args["n_head"],
        n_embd=args["n_embd"],
        bias=args["bias"],
        dropout=0.0,
    )
    state = {}
    for key, value in ckpt["model"].items():
        key = key.removeprefix("_orig_mod.").removeprefix("transformer.")
        if key.endswith(".attn.bias") and value.dim() == 4:  # the causal-mask buffer, if any
            continue
        state[key] = value
    model = GPT(cfg)
    model.load_state_dict(state)
    return model, int(ckpt["iter_num"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--meta", type=Path, required=True, help="nanoGPT's meta.pkl (stoi)")
    ap.add_argument("--data", type=Path, required=True, help="our prepared data directory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, iters = load_nanogpt(args.ckpt)
    with open(args.meta, "rb") as f:
        stoi = pickle.load(f)["stoi"]
    dataset = load_dataset(args.data)
    text = dataset.tokenizer().decode(dataset.val.tolist())
    tokens = np.array([stoi[ch] for ch in text], dtype=np.int64)
    loss = split_loss(model, tokens, model.config.block_size, batch_size=64)
    print(json.dumps({"ckpt": str(args.ckpt), "iter": iters, "val_loss_full": round(loss, 4)}))


if __name__ == "__main__":
    main()
