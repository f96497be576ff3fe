"""`minigpt-tui export onnx`: export a model directory to ONNX with a KV cache."""

from __future__ import annotations

from pathlib import Path

import typer

from export.options import QUANTIZE_MODES, check_quantize
from minigpt_tui.errors import UserError
from model.errors import one_of

export_app = typer.Typer(help="Export models for other runtimes.", no_args_is_help=True)


@export_app.command("onnx")
def onnx(
    model: str = typer.Argument(
        ..., help="A model directory, a run directory (its latest checkpoint) or a bundled name."
    ),
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
        help=f"{one_of(QUANTIZE_MODES)} (int8: dynamic quantisation of the weights).",
    ),
    opset: int | None = typer.Option(
        None,
        "--opset",
        help="ONNX opset (default 23, the first with Attention).",
        show_default=False,
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check onnxruntime against PyTorch before writing."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing export."),
) -> None:
    """Export MODEL to ONNX (prefill + decode with a KV cache) for the fast torch-free engine."""
    from rich.console import Console

    from minigpt_tui.models import resolve_model
    from minigpt_tui.safe_text import markup

    check_quantize(quantize)  # before importing torch
    try:
        from export.onnx_export import export_onnx
    except ImportError as e:
        raise UserError(
            f"exporting needs PyTorch, onnx and onnxscript ({e}); install minigpt-tui[train]"
        ) from None
    console = Console(stderr=True, highlight=False)
    with console.status("exporting and verifying" if verify else "exporting"):
        res = export_onnx(
            resolve_model(model), out, quantize=quantize, opset=opset, verify=verify, force=force
        )
    line = (
        f"[green]wrote[/] {markup(res.onnx_path)} ({res.size_bytes / 1e6:.1f} MB, "
        f"opset {res.opset}, {res.quantize}) in {res.seconds:.1f}s"
    )
    console.print(line)
    v = res.verify
    if v is None:
        console.print("not verified (--no-verify)")
    elif res.quantize == "none":
        console.print(
            f"verified on {v['positions']} positions: largest logit difference "
            f"{v['max_logit_diff']:.2e} (tolerance {v['tolerance']:.0e})"
        )
    else:
        console.print(
            f"verified on {v['positions']} positions: mean KL to PyTorch {v['mean_kl']:.2e} "
            f"nats (bound {v['max_mean_kl']}), greedy agreement {v['greedy_agreement']:.1%}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
