"""What the steering keys do to the sampling settings (the running reply reads them per token)."""

from __future__ import annotations

from minigpt_tui.sampling import SamplingSettings

TOP_K_LADDER = (0, 1, 2, 3, 5, 10, 20, 40, 100, 200, 500, 1000)


def nudge_temperature(settings: SamplingSettings, delta: float) -> str:
    """Temperature up or down by `delta` (never below 0); the change, in words."""
    settings.temperature = round(max(0.0, settings.temperature + delta), 2)
    return f"temperature {settings.temperature:g}"


def step_top_k(settings: SamplingSettings, step: int) -> str:
    """Top-k one rung down (step < 0) or up the ladder (0 is off); the change, in words."""
    k = settings.top_k
    below = [v for v in TOP_K_LADDER if v < k]
    above = [v for v in TOP_K_LADDER if v > k]
    if step < 0 and below:
        settings.top_k = below[-1]
    elif step > 0 and above:
        settings.top_k = above[0]
    return f"top-k {settings.top_k or 'off'}"
