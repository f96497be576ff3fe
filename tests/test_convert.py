"""`convert hf`: GPT-2 weights in Hugging Face layout give the logits of GPT-2's equations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file
from safetensors.numpy import save_file as save_numpy

from model import checkpoint
from tests.helpers import cli, expect_one_line_error

V, T, C, L, H = 50257, 24, 32, 2, 4  # GPT-2 vocabulary, tiny everything else


def write_hf_gpt2(root: Path, seed: int = 0, prefix: str = "") -> dict[str, np.ndarray]:
    """A random GPT-2 in Hugging Face's layout: Conv1D weights are (in, out)."""
    rng = np.random.default_rng(seed)

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w = {"wte.weight": r(V, C), "wpe.weight": r(T, C), "ln_f.weight": 1 + r(C), "ln_f.bias": r(C)}
    for i in range(L):
        p = f"h.{i}."
        w |= {
            p + "ln_1.weight": 1 + r(C),
            p + "ln_1.bias": r(C),
            p + "attn.c_attn.weight": r(C, 3 * C),
            p + "attn.c_attn.bias": r(3 * C),
            p + "attn.c_proj.weight": r(C, C),
            p + "attn.c_proj.bias": r(C),
            p + "ln_2.weight": 1 + r(C),
            p + "ln_2.bias": r(C),
            p + "mlp.c_fc.weight": r(C, 4 * C),
            p + "mlp.c_fc.bias": r(4 * C),
            p + "mlp.c_proj.weight": r(4 * C, C),
            p + "mlp.c_proj.bias": r(C),
        }
    root.mkdir(parents=True)
    save_file({prefix + k: v for k, v in w.items()}, str(root / "model.safetensors"))
    cfg = {
        "model_type": "gpt2",
        "vocab_size": V,
        "n_positions": T,
        "n_embd": C,
        "n_layer": L,
        "n_head": H,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
    }
    (root / "config.json").write_text(json.dumps(cfg))
    return w


def reference_logits(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """GPT-2's forward pass written out in numpy, independently of model/gpt.py."""

    def ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g + b

    def gelu(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    n = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:n]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(L):
        p = f"h.{i}."
        h = ln(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for j in range(H):
            s = slice(j * C // H, (j + 1) * C // H)
            att = q[:, s] @ k[:, s].T / np.sqrt(C // H) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            heads.append(att @ v[:, s])
        x = x + np.concatenate(heads, -1) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = ln(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = ln(x, w["ln_f.weight"], w["ln_f.bias"])
    return x @ w["wte.weight"].T  # GPT-2's head is the token embedding


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_converted_model_gives_gpt2_logits(tmp_path: Path, prefix: str) -> None:
    w = write_hf_gpt2(tmp_path / "hf", prefix=prefix)
    assert cli("convert", "hf", tmp_path / "hf", "--out", tmp_path / "ours") == 0
    model, info = checkpoint.load(tmp_path / "ours")
    assert info.tokenizer_spec == {"kind": "gpt2"}
    ids = [5, 17, 96, 0, 42, 42, 8, 77, 3, 11]
    with torch.no_grad():
        ours = model.eval()(torch.tensor([ids]))[0][0].numpy()
    np.testing.assert_allclose(ours, reference_logits(w, ids), atol=1e-4, rtol=1e-4)


def test_convert_refuses_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_hf_gpt2(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "n_embd": 48}))
    assert cli("convert", "hf", tmp_path / "hf", "--out", tmp_path / "ours") == 1
    err = capsys.readouterr().err
    assert "shape" in err and "Traceback" not in err
    assert not (tmp_path / "ours").exists()


# GPT2Config values that change what the model computes, which this converter does not
# implement: each is refused in one line naming the key (they were accepted, and the converted
# model's logits then differed from transformers').
UNSUPPORTED = [
    ("activation_function", "gelu"),
    ("activation_function", "relu"),
    ("layer_norm_epsilon", 1e-3),
    ("n_inner", 7),
    ("scale_attn_weights", False),
    ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True),
    ("add_cross_attention", True),
    ("n_ctx", 12),
]


@pytest.mark.parametrize(("key", "value"), UNSUPPORTED, ids=[f"{k}={v}" for k, v in UNSUPPORTED])
def test_config_values_the_converter_does_not_implement_are_refused(
    tmp_path: Path, key: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import expect_one_line_error

    write_hf_gpt2(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, key: value}))
    line = expect_one_line_error(capsys, "convert", "hf", tmp_path / "hf", "--out", tmp_path / "m")
    assert key in line, line
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"n_inner": 4 * C, "activation_function": "gelu_pytorch_tanh", "n_ctx": T},
        {"scale_attn_weights": True, "reorder_and_upcast_attn": False, "resid_pdrop": 0.3},
    ],
    ids=["defaults", "explicit-equivalents", "dropout-only"],
)
def test_what_convert_accepts_gives_transformers_logits(tmp_path: Path, extra: dict) -> None:
    """Every config convert accepts computes what transformers' GPT2LMHeadModel computes."""
    transformers = pytest.importorskip("transformers")
    write_hf_gpt2(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, **extra}))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert cli("convert", "hf", tmp_path / "hf", "--out", tmp_path / "m") == 0
    ours, _ = checkpoint.load(tmp_path / "m")
    ids = torch.tensor([[1, 50256, 7, 300, 2, 9]])
    with torch.no_grad():
        want = hf(ids).logits
        got, _ = ours.eval()(ids, targets=ids)  # targets: logits at every position
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


# ---------------------------------------------- hostile Hugging Face directories


def _hf_weights(change: Callable[[dict[str, np.ndarray]], Any]) -> Callable[[Path], None]:
    def apply(src: Path) -> None:
        w = load_numpy(str(src / "model.safetensors"))
        change(w)
        save_numpy(w, str(src / "model.safetensors"))

    return apply


def _hf_config(**values: Any) -> Callable[[Path], None]:
    def apply(src: Path) -> None:
        cfg = json.loads((src / "config.json").read_text())
        cfg.update(values)
        (src / "config.json").write_text(json.dumps(cfg))

    return apply


def _extra_layer(w: dict[str, np.ndarray]) -> None:
    for k in [k for k in w if k.startswith("h.1.")]:
        w["h.2." + k[4:]] = w[k]


HOSTILE_HF: dict[str, tuple[Callable[[Path], None], str]] = {
    "3-D c_attn.weight": (
        _hf_weights(lambda w: w.update({"h.0.attn.c_attn.weight": np.zeros((2, 32, 96), "f")})),
        "h.0.attn.c_attn.weight has shape (2, 32, 96)",
    ),
    "3 layers of weights, n_layer 2": (_hf_weights(_extra_layer), "h.2.attn.c_attn.bias"),
    "vocab_size 100": (_hf_config(vocab_size=100), "expected (100, 32)"),
    "tie_word_embeddings 'false'": (
        _hf_config(tie_word_embeddings="false"),
        "tie_weights must be true or false",
    ),
    "n_layer 2.7": (_hf_config(n_layer=2.7), "n_layer must be a positive integer, got 2.7"),
    "n_layer true": (_hf_config(n_layer=True), "n_layer must be a positive integer, got True"),
    "n_embd '32'": (_hf_config(n_embd="32"), "n_embd must be a positive integer"),
    "config a list": (lambda s: (s / "config.json").write_text("[]"), "not a GPT-2"),
    "NaN weights": (
        _hf_weights(lambda w: w["h.1.mlp.c_fc.bias"].__setitem__(0, np.nan)),
        "non-finite",
    ),
    "infinite weights": (_hf_weights(lambda w: w["wte.weight"].fill(np.inf)), "non-finite"),
    "integer weights": (
        _hf_weights(lambda w: w.update({"ln_f.bias": np.zeros(32, np.int32)})),
        "not floating point",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HF))
def test_hostile_hugging_face_dirs_are_refused_in_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "hf"
    write_hf_gpt2(src)
    spoil, words = HOSTILE_HF[case]
    spoil(src)
    line = expect_one_line_error(capsys, "convert", "hf", src, "--out", tmp_path / "out")
    assert words in line, line
    assert not (tmp_path / "out").exists()


def test_convert_hf_keeps_an_untied_head_and_ignores_attention_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "hf"
    w = write_hf_gpt2(src)
    _hf_config(tie_word_embeddings=False)(src)
    head = np.random.default_rng(1).standard_normal(w["wte.weight"].shape).astype(np.float32)
    _hf_weights(lambda w: w.update({"lm_head.weight": head, "h.0.attn.bias": np.ones((1, 1))}))(src)
    assert cli("convert", "hf", src, "--out", tmp_path / "out") == 0
    model, info = checkpoint.load(tmp_path / "out")
    assert info.config.tie_weights is False
    assert np.array_equal(model.lm_head.weight.detach().numpy(), head)
