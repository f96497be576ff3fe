"""Muon optimizer, learning-rate schedules and zero-init of the output projections."""

from __future__ import annotations

import io

import pytest
import torch

from model.config import GPTConfig
from model.gpt import GPT, zero_init_projections
from model.muon import Muon, muon_groups, muon_scale, orthogonalize
from model.schedule import cosine, trapezoid, warmup_factor


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))


@pytest.mark.parametrize("shape", [(16, 16), (16, 48), (64, 16), (3, 32, 8)])
def test_orthogonalize_keeps_shape_and_flattens_singular_values(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    # g = U diag(s) V^T with singular values spread over a factor of 30.
    *batch, m, n = shape
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(*batch, m, k))
    v, _ = torch.linalg.qr(torch.randn(*batch, n, k))
    g = u @ torch.diag_embed(torch.logspace(-1.5, 0, k).expand(*batch, k)) @ v.mT
    o = orthogonalize(g)
    assert o.shape == g.shape and o.dtype == g.dtype
    s = torch.linalg.svdvals(o)
    # The quintic iteration lands every singular value in a band around 1 (not exactly 1).
    assert s.min() > 0.5 and s.max() < 1.25, s
    # Same singular vectors as g: o is close to U V^T, far closer than g itself.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    exact = u @ vh
    assert torch.linalg.matrix_norm(o - exact).max() < 0.5 * torch.linalg.matrix_norm(exact).min()


def test_orthogonal_input_is_a_near_fixed_point() -> None:
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(32, 32))
    s = torch.linalg.svdvals(orthogonalize(q))
    assert (s - 1).abs().max() < 0.3


def test_groups_put_block_matrices_on_muon_and_the_rest_on_adamw() -> None:
    model = tiny_gpt()
    muon, decay, plain = muon_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert muon["use_muon"] and not decay["use_muon"] and not plain["use_muon"]
    assert {names[id(p)] for p in muon["params"]} == {
        f"h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert {names[id(p)] for p in decay["params"]} == {"wte.weight", "wpe.weight"}  # head tied
    assert all(p.dim() == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0
    total = sum(len(g["params"]) for g in (muon, decay, plain))
    assert total == len(list(model.parameters()))


def test_muon_update_is_orthogonal_and_scaled() -> None:
    torch.manual_seed(2)
    w = torch.nn.Parameter(torch.zeros(16, 64))
    opt = Muon([{"params": [w], "use_muon": True}], lr=0.1, momentum=0.0)
    w.grad = torch.randn(16, 64)
    opt.step()
    update = -w.detach() / (0.1 * muon_scale(w.shape))
    s = torch.linalg.svdvals(update)
    assert s.min() > 0.5 and s.max() < 1.25
    # Sign of the update follows the gradient: a descent direction.
    assert float((update * w.grad).sum()) > 0


def test_adamw_part_matches_torch_adamw() -> None:
    torch.manual_seed(3)
    a = torch.nn.Parameter(torch.randn(5, 7))
    b = torch.nn.Parameter(a.detach().clone())
    ours = Muon([{"params": [a], "use_muon": False}], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(5, 7)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_muon_rejects_non_matrices() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Muon([{"params": [torch.nn.Parameter(torch.zeros(4))], "use_muon": True}])


def _steps(model: GPT, opt: torch.optim.Optimizer, n: int, seed: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n):
        x = torch.randint(11, (4, 8), generator=gen)
        _, loss = model(x, (x + 1) % 11)  # a learnable rule: next token = token + 1
        assert loss is not None
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def test_state_dict_round_trip_resumes_exactly() -> None:
    model = tiny_gpt()
    opt = Muon(muon_groups(model, 0.1), lr=3e-3, weight_decay=0.1)
    _steps(model, opt, 3, seed=5)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    expected = _steps(model, opt, 4, seed=6)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    again = tiny_gpt(seed=99)
    again.load_state_dict(saved["model"])
    opt2 = Muon(muon_groups(again, 0.1), lr=3e-3, weight_decay=0.1)
    opt2.load_state_dict(saved["opt"])
    assert _steps(again, opt2, 4, seed=6) == expected  # bit for bit
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_tiny_model_learns_with_muon() -> None:
    model = tiny_gpt()
    opt = Muon(muon_groups(model, 0.0), lr=1e-2)
    losses = _steps(model, opt, 60, seed=7)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_warmup_then_cosine() -> None:
    assert warmup_factor(0, 10) == pytest.approx(1 / 11)
    assert warmup_factor(10, 10) == 1.0
    assert cosine(1.0, 0.1, 0, 10, 0.0) == pytest.approx(1 / 11)
    assert cosine(1.0, 0.1, 10, 10, 0.0) == pytest.approx(1.0)
    assert cosine(1.0, 0.1, 50, 10, 0.5) == pytest.approx(0.55)
    assert cosine(1.0, 0.1, 99, 10, 1.0) == pytest.approx(0.1)


def test_trapezoid_is_flat_then_linear_to_final() -> None:
    lr = [trapezoid(1.0, 0.0, 100, 10, p / 10, cooldown=0.4) for p in range(11)]
    assert lr[:7] == [1.0] * 7  # flat until 60% of the run
    assert lr[7:] == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert trapezoid(1.0, 0.0, 3, 10, 0.0, cooldown=0.4) == pytest.approx(4 / 11)  # warm-up
    assert trapezoid(1.0, 0.2, 100, 10, 1.5, cooldown=0.4) == pytest.approx(0.2)  # clamped
    assert trapezoid(1.0, 0.2, 100, 10, 0.99, cooldown=0.0) == 1.0  # no cooldown: constant


def test_zero_init_projections() -> None:
    model = tiny_gpt()
    zero_init_projections(model)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert not p.any()
        elif name.endswith("c_fc.weight") or name.endswith("c_attn.weight"):
            assert p.abs().sum() > 0
    # Every block is then the identity on the residual stream.
    x = torch.randint(11, (2, 8))
    emb = model.wte(x) + model.wpe(torch.arange(8))
    h = emb
    for block in model.h:
        h, _ = block(h)
    torch.testing.assert_close(h, emb)
