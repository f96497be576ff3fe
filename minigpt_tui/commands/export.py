"""`minigpt-tui export onnx|gguf|hf`: a model directory for onnxruntime, llama.cpp or
Hugging Face transformers."""

from __future__ import annotations

from pathlib import Path

import typer

from export.options import check_kv_cache, check_quantize
from minigpt_tui.errors import UserError

export_app = typer.Typer(help="Export models for other runtimes.", no_args_is_help=True)
MODEL_HELP = "A model directory, a run directory (its latest checkpoint) or a bundled name."


@export_app.command("onnx")
def onnx(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write a new model directory (config.json + model.onnx) here. Default: add "
        "model.onnx to MODEL itself.",
        show_default=False,
    ),
    quantize: str = typer.Option(
        "none",
        "--quantize",
        help="none (fp32); int8 (weight-only 8-bit, embedding shared with the head: 3.5x "
        "smaller; bundled model's validation loss +0.0001 nats); int4 (4-bit: +0.026 "
        "nats); int4-mlp (4-bit MLP, 8-bit rest: +0.0047 nats).",
    ),
    kv_cache: str = typer.Option(
        "auto",
        "--kv-cache",
        help="The KV cache's type: float32, or int8 (a quarter of the bytes to read each "
        "step, scales measured at export; with int8 weights the bundled model's validation "
        "loss +0.0003 nats). auto: int8 with --quantize int8/int4/int4-mlp, else float32.",
    ),
    opset: int | None = typer.Option(
        None,
        "--opset",
        help="ONNX opset of the standard operators (default 23).",
        show_default=False,
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check onnxruntime against PyTorch before writing."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing export."),
) -> None:
    """Export MODEL to ONNX (prefill + decode with a KV cache) for the fast torch-free engine."""
    from rich.console import Console

    from minigpt_tui import models
    from minigpt_tui.safe_text import markup

    check_kv_cache(kv_cache, check_quantize(quantize))  # before importing torch
    path = models.resolve_model(model)
    if out is None and path.resolve().is_relative_to(models.BUNDLED_DIR.resolve()):
        raise UserError(f"{model} is a bundled model; export it to a new directory with --out")
    try:
        from export.onnx_export import export_onnx
    except ImportError as e:
        raise UserError(
            f"exporting needs PyTorch and onnx ({e}); install minigpt-tui[train]"
        ) from None
    console = Console(stderr=True, highlight=False)
    with console.status("exporting and verifying" if verify else "exporting"):
        res = export_onnx(
            path, out, quantize=quantize, opset=opset, verify=verify, force=force, kv_cache=kv_cache
        )
    line = (
        f"[green]wrote[/] {markup(res.onnx_path)} ({res.size_bytes / 1e6:.1f} MB, "
        f"opset {res.opset}, {res.quantize}, {res.kv_cache} KV cache) in {res.seconds:.1f}s"
    )
    console.print(line)
    v = res.verify
    if v is None:
        console.print("not verified (--no-verify)")
    elif "tolerance" in v:
        console.print(
            f"verified on {v['positions']} positions: largest logit difference "
            f"{v['max_logit_diff']:.2e} (tolerance {v['tolerance']:.0e})"
        )
    else:
        console.print(
            f"verified on {v['positions']} positions: mean KL to PyTorch {v['mean_kl']:.2e} "
            f"nats (bound {v['max_mean_kl']}), greedy agreement {v['greedy_agreement']:.1%}"
        )


@export_app.command("gguf")
def gguf(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="The .gguf file to write (its directory must exist). Default: ./NAME-TYPE.gguf.",
        show_default=False,
    ),
    type: str = typer.Option(
        "f32", "--type", help="f32 (exact), f16, or q8_0 (8-bit blocks) for the matrices."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Export MODEL as one GGUF file for llama.cpp (its GPT-2 architecture, tokenizer included)."""
    from rich.console import Console

    from minigpt_tui.models import resolve_model

    try:
        from export.gguf_export import export_gguf
    except ImportError as e:
        raise UserError(
            f"exporting to GGUF needs the gguf package ({e}); pip install gguf"
        ) from None
    res = export_gguf(resolve_model(model), out, type=type, force=force)
    console = Console(stderr=True, highlight=False)
    console.print(
        f"[green]wrote[/] {res.path} ({res.size_bytes / 1e6:.1f} MB, {res.type}, "
        f"{res.n_tensors} tensors, {res.tokenizer} tokenizer) in {res.seconds:.1f}s"
    )
    for note in res.notes:
        console.print(f"note: {note}")


@export_app.command("hf")
def hf(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="The directory to write (config.json, model.safetensors, tokenizer files).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export at --out."),
) -> None:
    """Export MODEL as a Hugging Face GPT-2 directory (transformers loads it, no custom code)."""
    from rich.console import Console

    from export.hf_export import export_hf
    from minigpt_tui.models import resolve_model

    res = export_hf(resolve_model(model), out, force=force)
    Console(stderr=True, highlight=False).print(
        f"[green]wrote[/] {res.path} ({', '.join(res.files)}; {res.size_bytes / 1e6:.1f} MB, "
        f"{res.tokenizer} tokenizer) in {res.seconds:.1f}s"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
