"""Model and training configuration, and the named presets.

Torch-free on purpose: the inference path (ONNX engine, chat, generate) reads these too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "trapezoid")  # model/schedule.py implements them

# A config that would need more parameters than this is refused before anything is allocated.
MAX_PARAMS = 20_000_000_000


class ConfigError(ValueError):
    """A configuration that cannot describe a working model or run."""


def setting(default: Any, help: str, *flags: str) -> Any:
    """A config field with the help text of its `minigpt-tui train` flag, and the flag's
    names where they differ from --field-name (commands/train.py builds the flags from these)."""
    return field(default=default, metadata={"help": help, "flags": flags})


@dataclass
class GPTConfig:
    vocab_size: int = setting(50257, "Override (pad) the vocabulary size.")
    block_size: int = setting(1024, "Context length.")
    n_layer: int = setting(12, "Transformer blocks.")
    n_head: int = setting(12, "Attention heads.")
    n_embd: int = setting(768, "Embedding width.")
    dropout: float = setting(0.0, "Dropout rate.")
    bias: bool = setting(True, "Biases in Linear/LayerNorm.")  # as in GPT-2
    tie_weights: bool = setting(True, "Tie output head to token embedding.")

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not isinstance(self.dropout, int | float) or isinstance(self.dropout, bool):
            raise ConfigError(f"dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_params() > MAX_PARAMS:
            raise ConfigError(
                f"config describes {self.num_params():,} parameters, over the limit of "
                f"{MAX_PARAMS:,}; refusing to allocate it"
            )

    def num_params(self, non_embedding: bool = False) -> int:
        """Exact parameter count, computed without building the model."""
        c, b = self.n_embd, int(self.bias)
        ln = c + b * c
        block = (
            ln  # ln_1
            + 3 * c * c
            + b * 3 * c  # attention qkv
            + c * c
            + b * c  # attention output projection
            + ln  # ln_2
            + 4 * c * c
            + b * 4 * c  # mlp up
            + 4 * c * c
            + b * c  # mlp down
        )
        total = self.vocab_size * c + self.block_size * c + self.n_layer * block + ln
        if not self.tie_weights:
            total += self.vocab_size * c
        if non_embedding:
            total -= self.block_size * c
        return total

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg


@dataclass
class TrainConfig:
    batch_size: int = setting(12, "Micro-batch size.")
    grad_accum: int = setting(1, "Micro-batches per step (all processes).")
    learning_rate: float = setting(6e-4, "Peak learning rate.", "--learning-rate", "--lr")
    min_lr: float | None = setting(None, "Final learning rate.")  # None: learning_rate / 10
    max_iters: int = setting(600_000, "Optimizer steps.")
    warmup_iters: int = setting(100, "Linear warm-up steps.")
    lr_decay_iters: int | None = setting(  # None: max_iters
        None, "Steps the learning rate decays over (default --max-iters; not with --time-budget)."
    )
    decay_lr: bool = setting(
        True, "Decay as --schedule says, or a constant learning rate.", "--decay-lr/--constant-lr"
    )
    time_budget: float | None = setting(
        None, "Seconds; the learning rate is scheduled over this wall-clock budget."
    )
    weight_decay: float = setting(0.1, "AdamW weight decay (matrices only).")
    beta1: float = setting(0.9, "AdamW beta1.")
    beta2: float = setting(0.95, "AdamW beta2.")
    grad_clip: float = setting(1.0, "Gradient norm clip (0: off).")
    eval_interval: int = setting(500, "Steps between evaluations.")
    eval_iters: int = setting(100, "Batches per evaluation estimate.")
    log_interval: int = setting(10, "Steps between log lines.")
    ckpt_interval: int | None = setting(None, "Steps between checkpoints.")  # None: eval_interval
    keep_checkpoints: int = setting(2, "Checkpoints kept on disk.")
    seed: int = setting(1337, "Random seed.")
    dtype: str = setting("auto", "auto, float32, bfloat16 or float16.")
    compile: bool = setting(False, "torch.compile.", "--compile/--no-compile")
    sample_interval: int = setting(
        0, "Steps between text samples (0: a sample at each evaluation)."
    )
    optimizer: str = setting(
        "adamw", "adamw, or muon (Muon for the blocks' matrices, AdamW for the rest)."
    )
    muon_momentum: float = setting(0.95, "Muon's Nesterov momentum.")
    schedule: str = setting(
        "cosine", "cosine, or trapezoid (warm-up, flat, then linear decay to --min-lr)."
    )
    cooldown: float = setting(0.5, "trapezoid: the final fraction of the run that decays.")
    zero_init: bool = setting(
        False, "Start new models with zeroed output projections.", "--zero-init/--no-zero-init"
    )

    def validate(self) -> None:
        positive = (
            "batch_size",
            "grad_accum",
            "max_iters",
            "eval_interval",
            "eval_iters",
            "log_interval",
            "keep_checkpoints",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (_is_number(self.learning_rate) and 0 < self.learning_rate < math.inf):
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if not _is_int(self.warmup_iters) or self.warmup_iters < 0:
            raise ConfigError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.time_budget is not None and not (
            _is_number(self.time_budget) and 0 < self.time_budget < math.inf
        ):
            raise ConfigError(f"time_budget must be positive, got {self.time_budget}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype}")
        for name in ("min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 <= value < math.inf):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value < 1):
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("ckpt_interval", "lr_decay_iters"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("seed", "warmup_iters"):
            if not _is_int(getattr(self, name)):
                raise ConfigError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not _is_int(self.sample_interval) or self.sample_interval < 0:
            raise ConfigError(f"sample_interval must be >= 0, got {self.sample_interval!r}")
        if not isinstance(self.decay_lr, bool):
            raise ConfigError(f"decay_lr must be true or false, got {self.decay_lr!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true or false, got {self.compile!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not (_is_number(self.cooldown) and 0 <= self.cooldown <= 1):
            raise ConfigError(f"cooldown must be in [0, 1], got {self.cooldown!r}")
        if not (_is_number(self.muon_momentum) and 0 <= self.muon_momentum < 1):
            raise ConfigError(f"muon_momentum must be in [0, 1), got {self.muon_momentum!r}")
        if not isinstance(self.zero_init, bool):
            raise ConfigError(f"zero_init must be true or false, got {self.zero_init!r}")

    @property
    def final_lr(self) -> float:
        return self.min_lr if self.min_lr is not None else self.learning_rate / 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Preset:
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


# The short-CPU-run recipe (benchmarks/RESULTS.md, "A recipe for short CPU runs"): Muon on
# the blocks' matrices at a high learning rate, the trapezoid schedule to 0 over the time
# budget, dtype auto (bfloat16 where the CPU has AMX or AVX-512 BF16; float32 elsewhere:
# bfloat16 autocast ran ~9x slower on an AVX2 AMD EPYC), and few cheap evaluations, since
# they count against the budget. Batch 24, not 12: Muon's orthogonalisation costs as much as a
# batch-12 forward and backward at width 128, and a larger batch spreads it (5,600-5,750
# tokens/s against 4,450-5,000 on one core). The budget governs (max_iters is out of reach);
# --time-budget changes it.
CPU_BUDGET_RECIPE: dict[str, Any] = dict(
    batch_size=24,
    optimizer="muon",
    learning_rate=1.2e-2,
    min_lr=0.0,
    schedule="trapezoid",
    cooldown=0.5,
    max_iters=10_000_000,
    time_budget=120.0,
    warmup_iters=50,
    eval_interval=1000,
    eval_iters=20,
    weight_decay=0.1,
    beta2=0.99,
    dtype="auto",
)


def _gpt2(
    description: str, n_embd: int, n_head: int, n_layer: int, lr: float, min_lr: float
) -> Preset:
    """GPT-2's recipe at one of its sizes: block 1024, 12 x 40 sequences (~0.5M tokens) a
    step, 600k steps, 2k warm-up, cosine from lr down to min_lr."""
    return Preset(
        description,
        model=dict(block_size=1024, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0),
        train=dict(
            batch_size=12,
            grad_accum=40,
            learning_rate=lr,
            max_iters=600_000,
            warmup_iters=2000,
            min_lr=min_lr,
            eval_interval=1000,
            eval_iters=200,
            weight_decay=0.1,
            beta2=0.95,
        ),
    )


SFT_LR, SFT_ITERS = 1e-3, 800

PRESETS: dict[str, Preset] = {
    # The reference CPU configuration: ~0.8M parameters with a 65-character vocabulary.
    "cpu": Preset(
        "reference CPU run: 128/4/4, block 64",
        model=dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
        # The table fixes batch, block, shape, dropout, lr and iterations. For the rest, plain
        # AdamW at a constant 3e-4 measured best: whole-split val 1.797 after 4000 steps, vs 1.832
        # with weight decay 0.1, beta2 0.99 and clipping, and 1.895 with cosine decay as well.
        train=dict(
            batch_size=12,
            learning_rate=3e-4,
            max_iters=4000,
            decay_lr=False,
            warmup_iters=0,
            eval_interval=500,
            eval_iters=100,
            weight_decay=0.0,
            beta2=0.999,
            grad_clip=0.0,
        ),
    ),
    # The lowest validation loss in a short CPU time budget: see CPU_BUDGET_RECIPE.
    "cpu-fast": Preset(
        "lowest val loss in a CPU time budget (120 s): 128/4/4, block 64, Muon lr 1.2e-2",
        model=dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
        train=dict(CPU_BUDGET_RECIPE),
    ),
    # The same recipe for a 10-minute budget, on a wider model with a longer context
    # (benchmarks/RESULTS.md: 1.53 in 600 s on both cores of an AMD EPYC, 1.58 on one).
    "cpu-10min": Preset(
        "the cpu-fast recipe for 10 minutes (600 s): 192 wide, 6 heads, 4 layers, block 128",
        model=dict(block_size=128, n_layer=4, n_head=6, n_embd=192, dropout=0.0),
        train={
            **CPU_BUDGET_RECIPE,
            "learning_rate": 1e-2,
            "time_budget": 600.0,
            "warmup_iters": 100,
        },
    ),
    # Fine-tuning a model (--init-from: its shape, not a preset's) on conversations, measured
    # on the bundled character model fine-tuned on benchmarks/chat_task.py's conversations
    # (README, "Training on conversations").
    "sft": Preset(
        f"fine-tune a model (--init-from) on chat data: lr {SFT_LR:g}, cosine, {SFT_ITERS} steps",
        train=dict(
            batch_size=8,
            learning_rate=SFT_LR,
            min_lr=SFT_LR / 10,
            max_iters=SFT_ITERS,
            warmup_iters=20,
            eval_interval=100,
            eval_iters=20,
            weight_decay=0.0,
            beta2=0.99,
            grad_clip=1.0,
        ),
    ),
    # GPT-2 small (124M with the GPT-2 vocabulary) and the larger GPT-2 shapes.
    "gpt2": _gpt2("GPT-2 small: 768/12/12, block 1024", 768, 12, 12, 6e-4, 6e-5),
    "gpt2-medium": _gpt2("GPT-2 medium shape: 1024/16/24", 1024, 16, 24, 3e-4, 3e-5),
    "gpt2-large": _gpt2("GPT-2 large shape: 1280/20/36", 1280, 20, 36, 2.5e-4, 2.5e-5),
    "gpt2-xl": _gpt2("GPT-2 XL shape: 1600/25/48", 1600, 25, 48, 2e-4, 2e-5),
}


def resolve_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
