"""Timing shared by the benchmarks: interleaved rounds, so that a burst of load from other
processes on a shared machine hits every variant alike, and ratios come from one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | None) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


def time_once(
    fn: Callable[[], object], device: torch.device | None = None, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds of one call of fn: wall time, or the time of `clock` (time.process_time: the
    CPU time of this process, which load from other processes changes less)."""
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds of each fn over `repeats` rounds; every round calls each fn once."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device, clock))
    return {name: statistics.median(values) for name, values in times.items()}
