"""Every attempt at a run, in ``RUNDIR/attempts.json``: the run's wall time is their sum.

An attempt is one training job's life in the run folder: the first start, and each resume after a time limit,
a preemption or a crash. Each entry says where it ran, which iterations it covered, how long it took and how it
ended (``completed``, ``diverged``, ``stopped by SIGUSR1`` ...). It is rewritten at the start, at every checkpoint
and at the end, so an attempt that was killed outright (SIGKILL, a node failure) keeps the time up to its last
checkpoint and is marked ``killed or crashed`` by the next one. ``result.json``'s ``wall_s`` is the sum over the
attempts: what the run cost, start-ups and work lost after a last checkpoint included, not only the last job's time
(which is all that Snakemake's benchmark file of the job holds).

Rank 0 writes the file; a reused finished run adds no attempt.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from retinanet import atomic

FILE = "attempts.json"
RUNNING = "running"
"""``end`` of the current attempt until it ends."""
KILLED = "killed or crashed"
"""``end`` of an attempt that a later one found still ``running``: it ended without recording how."""


def read(out: Path) -> list[dict[str, Any]]:
    """The attempts recorded in run folder ``out`` (empty without a file or with an unreadable one)."""
    try:
        data = json.loads((out / FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    return data if isinstance(data, list) else []


def total_seconds(attempts: list[dict[str, Any]]) -> float:
    """Wall seconds of all attempts together."""
    return float(sum(a.get("seconds", 0.0) for a in attempts))


class Attempt:
    """This process's attempt at the run in ``out``, from ``start_iteration`` on ``world_size`` processes; its clock
    starts at ``started`` (``time.perf_counter()``, default now)."""

    def __init__(self, out: Path, start_iteration: int, world_size: int, started: float | None = None) -> None:
        self.out = out
        self.started = time.perf_counter() if started is None else started
        self.history = [{**a, "end": KILLED} if a.get("end") == RUNNING else a for a in read(out)]
        self.entry: dict[str, Any] = {
            "attempt": len(self.history) + 1, "start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "world_size": world_size,
            "from_iteration": start_iteration, "to_iteration": start_iteration, "seconds": 0.0, "end": RUNNING}
        self.record(start_iteration)

    def record(self, iteration: int, end: str = RUNNING) -> float:
        """Rewrite the file with this attempt at ``iteration`` (ending as ``end``); return all attempts' seconds."""
        self.entry.update(to_iteration=iteration, seconds=time.perf_counter() - self.started, end=end)
        attempts = [*self.history, self.entry]
        atomic.write_json(self.out / FILE, attempts)
        return total_seconds(attempts)
