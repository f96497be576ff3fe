"""Learning-rate schedules as pure functions of the step and the run's progress.

Both start with a linear warm-up over `warmup` steps, then follow `progress`, the fraction of
the run done (steps over max_iters, or elapsed seconds over a time budget), in [0, 1]:

cosine:     from peak down to final along half a cosine over the whole run (nanoGPT's).
trapezoid:  warm-up-stable-decay: the peak until the last `cooldown` fraction of the run, then a
            straight line down to final (the modded-nanogpt speedrun's shape). The long flat
            part learns fast; the short decay at the end collects the gain of a small lr.
"""

from __future__ import annotations

import math


def warmup_factor(step: int, warmup: int) -> float:
    """Fraction of the peak lr at `step` during warm-up (1.0 after it)."""
    if step >= warmup:
        return 1.0
    return (step + 1) / (warmup + 1)


def cosine(peak: float, final: float, step: int, warmup: int, progress: float) -> float:
    if step < warmup:
        return peak * warmup_factor(step, warmup)
    p = min(max(progress, 0.0), 1.0)
    return final + 0.5 * (1.0 + math.cos(math.pi * p)) * (peak - final)


def trapezoid(
    peak: float, final: float, step: int, warmup: int, progress: float, cooldown: float
) -> float:
    if step < warmup:
        return peak * warmup_factor(step, warmup)
    p = min(max(progress, 0.0), 1.0)
    start = 1.0 - cooldown
    if cooldown <= 0.0 or p <= start:
        return peak
    return peak + (final - peak) * (p - start) / cooldown
