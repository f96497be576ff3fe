"""Loss versus wall-clock time for training runs, from their metrics.jsonl, as one PNG.

    python benchmarks/plot_loss.py RUN_DIR [RUN_DIR ...] --out benchmarks/loss_vs_time.png
    python benchmarks/plot_loss.py cpu=runs/a cpu-fast=runs/b --title "Tiny Shakespeare, CPU"

Each run gives two lines in its colour: the training loss of its log lines (thin) and the
validation-loss estimates of its evaluations (markers), plus the whole-split validation loss
at the end (a star) when the run computed it. The x axis is the run's own training time
(`elapsed`, which excludes start-up and the final whole-split evaluation); an evaluation is
placed at the elapsed time of the log line at or before it. `NAME=DIR` sets a run's label
(default: the directory name). Needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read_events(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl" if run.is_dir() else run
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return events


def curves(events: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(elapsed seconds, loss) points: train, val (estimates), final (whole split)."""
    out: dict[str, list[tuple[float, float]]] = {"train": [], "val": [], "final": []}
    elapsed = 0.0
    for e in events:
        kind = e.get("event")
        if kind == "train":
            elapsed = float(e["elapsed"])
            out["train"].append((elapsed, float(e["loss"])))
        elif kind == "eval" and e.get("val_loss") is not None:
            out["val"].append((elapsed, float(e["val_loss"])))
        elif kind == "end":
            elapsed = float(e.get("elapsed") or elapsed)
            if e.get("val_loss_full") is not None:
                out["final"].append((elapsed, float(e["val_loss_full"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl), NAME=DIR")
    ap.add_argument("--out", type=Path, default=Path("loss_vs_time.png"))
    ap.add_argument("--title", default="Loss versus training time")
    ap.add_argument("--ymax", type=float, default=None, help="clip the y axis (default: auto)")
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_loss.py needs matplotlib: pip install -e '.[bench]'")

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, spec in enumerate(args.runs):
        name, _, path = spec.rpartition("=")
        run = Path(path)
        label = name or run.name
        c = curves(read_events(run))
        colour = f"C{i}"
        if c["train"]:
            xs, ys = zip(*c["train"], strict=True)
            ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.5, label=f"{label}: train (batch)")
        if c["val"]:
            xs, ys = zip(*c["val"], strict=True)
            ax.plot(xs, ys, color=colour, marker="o", ms=4, lw=1.5, label=f"{label}: val")
        for x, y in c["final"]:
            ax.plot([x], [y], color=colour, marker="*", ms=14, ls="none")
            ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(6, 6), color=colour)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(args.title)
    if args.ymax:
        ax.set_ylim(top=args.ymax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
