"""Timing protocol shared by the benchmarks: peer and ours in one process, interleaved, median and spread.

Each repetition calls every variant once; the order alternates between repetitions (A B, B A, ...) so that load
from other processes on the machine and cache/thermal drift hit both variants alike. The reported ratio is
``median(peer) / median(ours)`` (> 1: ours is faster); the spread is the range of the per-repetition ratios
(each repetition's pair ran back to back, so its ratio is the least disturbed by changes in load). On a machine
shared with bursty jobs, the ratio of the minimums is reported too: extra load only ever adds time.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    """Seconds of each repetition of two variants measured in alternation."""

    peer: list[float]
    ours: list[float]

    @property
    def ratio(self) -> float:
        """``median(peer) / median(ours)``."""
        return statistics.median(self.peer) / statistics.median(self.ours)

    @property
    def min_ratio(self) -> float:
        """``min(peer) / min(ours)``: the least disturbed calls of each (load from other processes only adds time)."""
        return min(self.peer) / min(self.ours)

    @property
    def pair_ratios(self) -> list[float]:
        return [p / o for p, o in zip(self.peer, self.ours, strict=True)]

    def summary(self) -> str:
        """``peer a ms, ours b ms, ratio r (pairs lo-hi)``."""
        pr = self.pair_ratios
        return (f"peer {ms(self.peer)}, ours {ms(self.ours)}, ratio {self.ratio:.2f}x, "
                f"of minimums {self.min_ratio:.2f}x "
                f"(per-repetition {min(pr):.2f}-{max(pr):.2f}, n={len(pr)})")


def ms(times: list[float]) -> str:
    """``median ms [min-max]``."""
    return f"{1e3 * statistics.median(times):.1f} ms [{1e3 * min(times):.1f}-{1e3 * max(times):.1f}]"


def interleaved(peer: Callable[[], object], ours: Callable[[], object], *, warmup: int, repeats: int) -> Timing:
    """Time ``repeats`` alternating calls of both after ``warmup`` discarded calls of each."""
    for _ in range(warmup):
        peer()
        ours()
    out = Timing([], [])
    for r in range(repeats):
        order = ((peer, out.peer), (ours, out.ours))
        for fn, times in order if r % 2 == 0 else reversed(order):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return out


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (``/proc/cpuinfo``), e.g. ``Intel(R) Xeon(R) Processor``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line: CPU model, cores, torch and Python versions, OS."""
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
