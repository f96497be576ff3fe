"""The model itself: exact parameter counts, GPT-2 init, KV cache, and a gpt2-preset step."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import PRESETS, ConfigError, GPTConfig, TrainConfig
from model.gpt import GPT


def preset_config(name: str, vocab_size: int, **over: object) -> GPTConfig:
    return GPTConfig.from_dict({"vocab_size": vocab_size, **PRESETS[name].model, **over})


def test_cpu_preset_matches_reference_table() -> None:
    p = PRESETS["cpu"]
    assert p.model == {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}
    t = TrainConfig.from_dict(p.train)
    assert (t.batch_size, t.learning_rate, t.max_iters) == (12, 3e-4, 4000)
    cfg = preset_config("cpu", 65)
    assert cfg.num_params() == 809_856
    assert GPT(cfg).num_params() == 809_856


def test_gpt2_preset_matches_reference_table() -> None:
    p = PRESETS["gpt2"]
    assert p.model == {
        "block_size": 1024,
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "dropout": 0.0,
    }
    t = TrainConfig.from_dict(p.train)
    assert (t.batch_size, t.learning_rate, t.max_iters) == (12, 6e-4, 600_000)
    assert preset_config("gpt2", 50257).num_params() == 124_439_808


@pytest.mark.parametrize(
    ("name", "params"),
    [("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)],
)
def test_larger_gpt2_shapes(name: str, params: int) -> None:
    assert preset_config(name, 50257).num_params() == params


def test_untied_head_and_no_bias_counts_match_module() -> None:
    cfg = GPTConfig(
        vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=8, bias=False, tie_weights=False
    )
    assert GPT(cfg).num_params() == cfg.num_params()


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=8, n_head=4, n_embd=256)
    m = GPT(cfg)
    assert m.lm_head.weight is m.wte.weight
    std_proj = m.h[0].attn.c_proj.weight.std().item()
    std_fc = m.h[0].mlp.c_fc.weight.std().item()
    assert std_fc == pytest.approx(0.02, rel=0.05)
    assert std_proj == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert m.h[0].attn.c_attn.bias.abs().sum().item() == 0


def test_kv_cache_matches_full_forward() -> None:
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    x = torch.randint(0, 40, (2, 30))
    full, _ = m(x)
    logits, cache = m.forward_cached(x[:, :11])
    steps = [logits]
    for i in range(11, 30):
        logits, cache = m.forward_cached(x[:, i : i + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_causality_future_tokens_do_not_change_the_past() -> None:
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    a = torch.randint(0, 40, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 40
    la, _ = m(a)
    lb, _ = m(b)
    torch.testing.assert_close(la[:, :10], lb[:, :10])


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"n_embd": 130, "n_head": 4}, "divisible"),
        ({"n_layer": 0}, "positive"),
        ({"n_embd": 10**6, "n_layer": 10**6}, "refusing"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_configs_are_refused_before_allocation(over: dict[str, int], message: str) -> None:
    base = {"vocab_size": 65, "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128}
    with pytest.raises(ConfigError, match=message):
        GPTConfig.from_dict({**base, **over})


def test_gpt2_preset_takes_an_optimizer_step_on_cpu() -> None:
    """The real 124M shape, with a shortened block so that it runs on CPU in seconds."""
    torch.manual_seed(0)
    cfg = preset_config("gpt2", 50257, block_size=32)
    m = GPT(cfg)
    opt = torch.optim.AdamW(m.optimizer_groups(0.1), lr=6e-4)  # type: ignore[arg-type]
    x = torch.randint(0, 50257, (1, 32))
    before = m.h[0].mlp.c_fc.weight.detach().clone()
    _, loss = m(x, x)
    assert loss is not None and 9.0 < loss.item() < math.log(50257) + 0.5
    loss.backward()
    opt.step()
    assert not torch.equal(before, m.h[0].mlp.c_fc.weight)


def test_crop_block_size_keeps_what_the_model_computes_within_the_shorter_block() -> None:
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 40, (2, 8))
    before, _ = m(idx)
    m.crop_block_size(8)
    assert m.config.block_size == 8 and tuple(m.wpe.weight.shape) == (8, 16)
    after, _ = m(idx)
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="longer than block_size"):
        m(torch.randint(0, 40, (1, 9)))
    with pytest.raises(ValueError, match="only a shorter context"):
        m.crop_block_size(16)
