"""How the `sft` preset's defaults were chosen: fine-tune one model on conversations at several
learning rates with `minigpt-tui train --preset sft`, and compare the assistant-token loss,
exact-match replies on held-out conversations (greedy, until <|end|>) and the plain-text loss
before and after (forgetting).

    minigpt-tui data prepare train.jsonl --tokenizer-from shakespeare-char --out /tmp/sft/chat
    minigpt-tui data prepare shakespeare --from-file tinyshakespeare.txt \\
        --tokenizer-from shakespeare-char --out /tmp/sft/text
    python benchmarks/sft_preset.py --data /tmp/sft/chat --text-data /tmp/sft/text \\
        --heldout heldout.jsonl --init-from shakespeare-char --lr 3e-4,1e-3 --iters 400

train.jsonl and heldout.jsonl: conversations in the `messages` shape. The README's measurement
used the chat demonstration's generated task (benchmarks/chat_task.py --train 6000 --heldout
200: replies that depend on what the user said; a character model skips the conversations
holding characters it lacks), at --lr 3e-4,1e-3 --iters 400, then --lr 1e-3 --iters 800.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch

from model import chat, checkpoint, modeldir
from model.tokenizer import Tokenizer, TokenizerError


@torch.no_grad()
def exact_match(run: Path, heldout: Path, limit: int = 200) -> tuple[int, int]:
    """Held-out conversations whose last assistant reply the model writes exactly (greedy)."""
    model, info = checkpoint.load(run)
    model.eval()
    tok: Tokenizer = info.tokenizer()
    tokens = chat.chat_tokens(tok)
    right = total = 0
    for line in heldout.read_text().splitlines()[:limit]:
        messages = chat.parse_record(json.loads(line))
        try:
            ids = chat.prompt_ids(tok, messages[:-1])
            want = [*tok.encode(messages[-1].content), tokens.end]
        except TokenizerError:  # characters the vocabulary lacks
            continue
        got: list[int] = []
        x = torch.tensor([ids])
        while len(got) < len(want) + 2 and x.shape[1] < model.config.block_size:
            logits, _ = model(x)
            nxt = int(logits[0, -1].argmax())
            got.append(nxt)
            if nxt == tokens.end:
                break
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
        right += got == want
        total += 1
    return right, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--text-data", type=Path, required=True)
    ap.add_argument("--heldout", type=Path, required=True)
    ap.add_argument("--init-from", default="shakespeare-char")
    ap.add_argument("--lr", default="3e-4,1e-3")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sft-runs"))
    args = ap.parse_args()
    for lr in args.lr.split(","):
        run = args.out / f"lr-{lr}"
        cmd = ["minigpt-tui", "train", "--data", args.data, "--out", run, "--init-from"]
        cmd += [args.init_from, "--preset", "sft", "--lr", lr, "--min-lr", str(float(lr) / 10)]
        cmd += ["--max-iters", str(args.iters), "--block-size", str(args.block_size)]
        cmd += ["--text-data", args.text_data, "--no-samples", "--force"]
        subprocess.run([str(c) for c in cmd], check=True)
        summary = modeldir.read(run).meta["summary"]
        right, total = exact_match(run, args.heldout)
        print(
            f"| {lr} | {summary['val_loss_full']:.4f} | {right}/{total} | "
            f"{summary['text_loss_before']:.4f} -> {summary['text_loss_after']:.4f} |"
        )


if __name__ == "__main__":
    main()
