"""Weight snapshots kept during training, for AP-against-iteration curves.

A run with ``solver.snapshot_period: N`` saves its weights every N iterations before the last one to
``RUNDIR/snapshots/model_<iteration>.pt`` (``{"model", "config", "iteration"}``, like ``model_final.pt``) and keeps
them after the run; ``python -m retinanet evaluate --run RUNDIR --iteration I`` evaluates one. The periodic training
state (``checkpoints/last.pt``) is overwritten and deleted at the end, so it cannot serve. The paper's runs keep no
snapshot (``null``); the study sets it only for the runs whose curves it draws (the regime experiment).
"""

from __future__ import annotations

from pathlib import Path

from retinanet.config import SolverConfig

SNAPSHOT_DIR = "snapshots"


def snapshot_iterations(solver: SolverConfig) -> list[int]:
    """The iterations whose weights a run keeps: multiples of ``snapshot_period`` below ``iterations`` (the last
    iteration's weights are ``model_final.pt``); [] without a period."""
    period = solver.snapshot_period
    return list(range(period, solver.iterations, period)) if period else []


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    """``RUNDIR/snapshots/model_<iteration, 7 digits>.pt``."""
    return Path(run_dir) / SNAPSHOT_DIR / f"model_{iteration:07d}.pt"
