"""The int8 KV cache's scales: how large each channel of each layer's keys and values gets.

onnxruntime's GroupQueryAttention keeps an int8 cache with static scales (one per channel of
each head, fixed in the graph), so they are measured here once, at export, on two kinds of
text the model will see:

    - the model's own samples (temperature 1), the text it decodes over;
    - random tokens at every position of the block, for prompts unlike anything it made
      and for the positions the samples do not reach.

scale = largest |value| seen x MARGIN / 127: a value up to MARGIN times beyond what was seen
still fits, and the rounding error is at most scale / 2.
"""

from __future__ import annotations

import numpy as np
import torch

from model.gpt import GPT

MARGIN = 1.5  # room above the largest value seen (clipped beyond it)
SAMPLES = 8  # the model's own text: sequences
SAMPLE_TOKENS = 64  # and tokens in each (more cost export time: GPT-2 124M, 35 ms a token)
RANDOM_ROWS = 4  # sequences of random tokens filling the block


@torch.inference_mode()
def kv_scales(model: GPT, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, the key and value scales, each (n_head, head_size) float32."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    hs = cfg.n_embd // cfg.n_head
    top = [(np.zeros((cfg.n_head, hs)), np.zeros((cfg.n_head, hs))) for _ in range(cfg.n_layer)]

    def see(cache: list) -> None:
        for (k_top, v_top), (k, v) in zip(top, cache, strict=True):  # k, v: (B, nh, T, hs)
            np.maximum(k_top, k.float().abs().amax(dim=(0, 2)).numpy(), out=k_top)
            np.maximum(v_top, v.float().abs().amax(dim=(0, 2)).numpy(), out=v_top)

    random_ids = torch.randint(0, cfg.vocab_size, (RANDOM_ROWS, cfg.block_size), generator=gen)
    for rows in random_ids.split(2):  # two at a time: a whole block's attention is T x T
        see(model.forward_cached(rows, last_only=True)[1])
    ids = torch.randint(0, cfg.vocab_size, (SAMPLES, 1), generator=gen)
    logits, cache = model.forward_cached(ids, last_only=True)
    for _ in range(min(SAMPLE_TOKENS, cfg.block_size) - 1):
        probs = torch.softmax(logits[:, -1].float(), dim=-1)
        ids = torch.multinomial(probs, 1, generator=gen)
        logits, cache = model.forward_cached(ids, cache, last_only=True)
    see(cache)
    return [
        tuple(np.maximum(t * MARGIN / 127, 1e-8).astype(np.float32) for t in pair)  # type: ignore[misc]
        for pair in top
    ]
