"""Muon: momentum, orthogonalised by a Newton-Schulz iteration, for the hidden weight matrices.

The idea (Keller Jordan's Muon, 2024; used in the modded-nanogpt speedrun records): for a 2-D
weight W, take the SGD momentum M of its gradient and replace it by the nearest semi-orthogonal
matrix, U V^T from M's SVD U S V^T, before the update. Every direction the gradient points in
then moves at the same rate, instead of the few largest singular directions dominating. The
SVD is too slow, so an odd polynomial iteration X <- a X + b (X X^T) X + c (X X^T)^2 X, run a
few times from X = M / ||M||, pushes every singular value towards ~1 (not exactly 1: the
coefficients trade exactness for speed, which does not hurt training).

Muon suits the matrices inside the Transformer blocks only. The token and position embeddings,
the output head, biases and LayerNorm gains are updated by AdamW, in the same optimizer object
(one state_dict, one GradScaler step, one set of param_groups for the lr schedule):

    groups = muon_groups(model, weight_decay)   # [muon matrices, adamw decay, adamw no-decay]
    opt = Muon(groups, lr=3e-3, betas=(0.9, 0.95))

Both kinds use the same learning rate: Muon's update is rescaled to the RMS of a typical AdamW
update (0.2 * sqrt(max(rows, cols)) times the orthogonal matrix, as in Moonshot AI's "Muon is
scalable for LLM training", 2025), so a learning rate tuned for AdamW is a fair start for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

# Coefficients of the quintic iteration (Keller Jordan's): a steep slope at 0 so small singular
# values grow fast; the values then oscillate in roughly [0.7, 1.2], which is close enough.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
RMS_MATCH = 0.2  # AdamW's typical update RMS, which Muon's update is scaled to


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T. g: (..., m, n); batched over leading dimensions.

    Runs in g's dtype (float32 here; the iteration is also stable in bfloat16).
    """
    a, b, c = NS_COEFFS
    x = g
    tall = g.size(-2) > g.size(-1)
    if tall:  # iterate on the wide orientation: X X^T is then the smaller (m, m) product
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # all singular values <= 1
    for _ in range(steps):
        s = x @ x.mT  # (..., m, m)
        poly = b * s + c * (s @ s)
        x = a * x + poly @ x
    return x.mT if tall else x


def muon_scale(shape: torch.Size) -> float:
    """Factor that brings an orthogonal (rows, cols) update to AdamW's update RMS."""
    return RMS_MATCH * max(shape[-2], shape[-1]) ** 0.5


def muon_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups: Muon for the 2-D weights inside the blocks, AdamW for the rest.

    "Inside the blocks" means parameters named h.<layer>.* (GPT's attention and MLP
    matrices); embeddings and the output head are matrices too but stay with AdamW. Weight
    decay applies to every matrix, never to biases or LayerNorm gains.
    """
    muon, adam_decay, adam_plain = [], [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() == 2 and name.startswith("h."):
            muon.append(p)
        elif p.dim() >= 2:
            adam_decay.append(p)
        else:
            adam_plain.append(p)
    return [
        {"params": muon, "use_muon": True, "weight_decay": weight_decay},
        {"params": adam_decay, "use_muon": False, "weight_decay": weight_decay},
        {"params": adam_plain, "use_muon": False, "weight_decay": 0.0},
    ]


class Muon(torch.optim.Optimizer):
    """Muon for groups with use_muon=True, AdamW for the others. Decoupled weight decay.

    Muon groups: buf <- momentum * buf + grad; update = grad + momentum * buf (Nesterov),
    orthogonalised and scaled by muon_scale. Matrices of the same (wide) shape are
    orthogonalised together in one batched iteration.
    AdamW groups: torch.optim.AdamW's update with bias correction, eps added after the sqrt.
    """

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            ns_steps=ns_steps,
            use_muon=False,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups may only hold 2-D weight matrices")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["use_muon"]:
                self._muon_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _muon_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        updates = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf, grad = state["momentum_buffer"], _grad(p)
            buf.mul_(mu).add_(grad)
            updates.append(grad.add(buf, alpha=mu))
        # Orthogonalise same-shape matrices (transposed to wide) as one batch: (k, m, n).
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, u in enumerate(updates):
            m, n = u.shape
            by_shape.setdefault((min(m, n), max(m, n)), []).append(i)
        for indices in by_shape.values():
            stack = torch.stack([_wide(updates[i]) for i in indices])
            ortho = orthogonalize(stack, group["ns_steps"])
            for k, i in enumerate(indices):
                p = params[i]
                o = ortho[k] if p.size(0) <= p.size(1) else ortho[k].mT
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(o, alpha=-lr * muon_scale(p.shape))

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        grads, exp_avgs, exp_avg_sqs = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            grads.append(_grad(p))
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        # Every parameter of a group is created and stepped together, so they share a count.
        step = float(self.state[params[0]]["step"])
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        bias1 = 1.0 - beta1**step
        bias2_sqrt = (1.0 - beta2**step) ** 0.5
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, -lr / bias1)


def _grad(p: torch.Tensor) -> torch.Tensor:
    assert p.grad is not None  # step() passes only parameters with a gradient
    return p.grad


def _wide(u: torch.Tensor) -> torch.Tensor:
    return u if u.size(0) <= u.size(1) else u.mT
