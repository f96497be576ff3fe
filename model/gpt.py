"""A GPT-2-style Transformer language model, written from scratch.

token + position embeddings -> n_layer x [LayerNorm -> causal self-attention -> residual,
LayerNorm -> GELU MLP -> residual] -> final LayerNorm -> output head (tied to the token
embedding by default).

Shapes: B batch, T sequence length, P cached (past) length, C n_embd, nh heads, hs head size.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from model.config import GPTConfig

# Per layer, the cached keys and values: (B, nh, P, hs) each.
LayerCache = tuple[torch.Tensor, torch.Tensor]
# A target that is not trained (chat data: the system and user turns, the role markers, padding).
IGNORE = -1


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal scaled dot-product attention over (B, nh, T, hs) queries, keys and values.

    On CPU, PyTorch's flash-attention kernel is about 4x slower in bfloat16 than in float32
    at the sizes of small models (benchmarks/RESULTS.md, issue 7), so under bfloat16 autocast
    it runs in float32, which is also the more accurate softmax.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), dropout_p=dropout_p, is_causal=True
            )
        return y.to(torch.bfloat16)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def static_cache_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache, start: torch.Tensor
) -> torch.Tensor:
    """Attention through a static cache: fixed-size (B, nh, block_size, hs) buffers.

    Writes the T new keys and values at positions start..start+T-1 (`start`: a (1,) tensor on
    the device) in place, then query i sees keys 0..start+i. The shapes never depend on how
    much of the cache is filled, so a decode step can be replayed as one CUDA graph. Positions
    past the filled ones hold finite stale values (the buffers start as zeros) and are masked.
    The plain product rather than a fused kernel: for one query row the fused kernels scan all
    block_size keys tile by tile, the slowest kernels of a GPU decode step (benchmarks/RESULTS.md).
    """
    k_all, v_all = cache
    q_pos = start + torch.arange(q.shape[2], device=q.device)  # (T,)
    k_all.index_copy_(2, q_pos, k)
    v_all.index_copy_(2, q_pos, v)
    k_pos = torch.arange(k_all.shape[2], device=q.device)
    mask = k_pos[None, :] <= q_pos[:, None]  # (T, block_size)
    att = (q @ k_all.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, block_size)
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return att @ v_all  # (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None, cache_pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if past is None:
            y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        elif cache_pos is not None:  # a static cache, see GPT.static_cache
            y = static_cache_attention(q, k, v, past, cache_pos)
            k, v = past
        else:
            k = torch.cat((past[0], k), dim=2)  # (B, nh, P+T, hs)
            v = torch.cat((past[1], v), dim=2)
            # Query i sits at absolute position P+i and sees keys 0..P+i.
            n_keys = k.shape[2]
            q_pos = torch.arange(T, device=x.device) + (n_keys - T)
            k_pos = torch.arange(n_keys, device=x.device)
            mask = k_pos[None, :] <= q_pos[:, None]  # (T, P+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None, cache_pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        a, present = self.attn(self.ln_1(x), past, cache_pos)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights count once

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training/eval pass. idx, targets: (B, T). Returns logits (B, T, V) and the loss: the
        mean cross-entropy over the targets that are not IGNORE (0 when all are)."""
        T = idx.shape[1]
        if self.config.block_size < T:
            raise ValueError(
                f"sequence of {T} tokens is longer than block_size {self.config.block_size}"
            )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x, _ = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            flat = targets.reshape(-1)
            total = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                flat,
                ignore_index=IGNORE,
                reduction="sum",
            )
            loss = total / (flat != IGNORE).sum().clamp(min=1)
        return logits, loss

    def forward_cached(
        self,
        idx: torch.Tensor,
        past: list[LayerCache] | None = None,
        last_only: bool = False,
        cache_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Inference pass with a KV cache. idx: (B, T) new tokens following the P cached ones.

        Returns logits (B, T, V), or (B, 1, V) for the last position only when `last_only`
        (saves the output head over the prompt), and the cache extended to P+T positions.
        With `cache_pos` (a (1,) tensor holding P), `past` is a static cache (`static_cache`),
        written in place and returned as is.
        """
        T = idx.shape[1]
        if cache_pos is None:
            P = 0 if past is None else past[0][0].shape[2]
            pos = torch.arange(P, P + T, device=idx.device)
        else:
            pos = cache_pos + torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        present = []
        for i, block in enumerate(self.h):
            layer_past = past[i] if past is not None else _empty_cache(x, self)
            x, layer_cache = block(x, layer_past, cache_pos)
            present.append(layer_cache)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        return self.lm_head(self.ln_f(x)), present

    def crop_block_size(self, block_size: int) -> None:
        """Shorten the context to `block_size` positions, keeping the first position
        embeddings (to fine-tune a model with a shorter block than it was trained with)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(
                f"cannot crop block_size {self.config.block_size} to {block_size}: "
                "only a shorter context is possible"
            )
        self.config = dataclasses.replace(self.config, block_size=block_size)
        self.wpe.weight = nn.Parameter(self.wpe.weight.detach()[:block_size].clone())
        self.wpe.num_embeddings = block_size

    @torch.no_grad()
    def grow_vocab(self, new_ids: range) -> None:
        """Make room for the tokens a chat tokenizer adds after the ones trained so far (ids
        `new_ids`): the token embedding, and the output head with it (tied, or its own
        rows), grows to new_ids.stop rows when it has fewer (a padded vocabulary keeps its
        size), and the new ids' rows start at the mean of the rows before them, plus a little
        noise (a hundredth of their spread) so that the new tokens differ from one another."""
        rows = max(self.config.vocab_size, new_ids.stop)
        gen = torch.Generator().manual_seed(0)  # the same start for every run

        def grown(weight: torch.Tensor) -> nn.Parameter:
            old = weight.detach()
            w = old.new_zeros(rows, old.shape[1])
            w[: old.shape[0]] = old
            known = old[: new_ids.start].float()
            noise = torch.randn(len(new_ids), old.shape[1], generator=gen) * known.std(0) * 0.01
            w[new_ids.start : new_ids.stop] = (known.mean(0) + noise.to(known.device)).to(w.dtype)
            return nn.Parameter(w, requires_grad=weight.requires_grad)

        self.wte.weight = grown(self.wte.weight)
        self.wte.num_embeddings = rows
        if self.config.tie_weights:
            self.lm_head.weight = self.wte.weight
        else:
            self.lm_head.weight = grown(self.lm_head.weight)
        self.lm_head.out_features = rows
        self.config = dataclasses.replace(self.config, vocab_size=rows)

    def static_cache(self, batch: int = 1) -> list[LayerCache]:
        """A fixed-size KV cache for `forward_cached(..., cache_pos=...)`: per layer, zeroed
        (batch, nh, block_size, hs) keys and values on the model's device, in its dtype."""
        cfg, p = self.config, self.lm_head.weight
        shape = (batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        return [(p.new_zeros(shape), p.new_zeros(shape)) for _ in range(cfg.n_layer)]

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, object]]:
        """Weight decay on matrices (Linear weights, embeddings); none on biases and norms."""
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix."""
        cfg = self.config
        n = self.num_params() - cfg.block_size * cfg.n_embd
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def zero_init_projections(model: GPT) -> None:
    """Zero the residual output projections (attention and MLP c_proj weights).

    Each block then starts as the identity on the residual stream and its first updates add
    only what the gradient asks for (the modded-nanogpt speedrun's initialisation). Only the
    starting point changes: the architecture and every export stay GPT-2's.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                p.zero_()


def _empty_cache(x: torch.Tensor, model: GPT) -> LayerCache:
    cfg = model.config
    shape = (x.shape[0], cfg.n_head, 0, cfg.n_embd // cfg.n_head)
    empty = x.new_zeros(shape)
    return empty, empty
