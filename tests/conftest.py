"""Shared test setup: one thread per test process (pytest -n 2 runs two of them on 2 cores),
so that OpenMP threads of parallel workers never fight over the cores."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
