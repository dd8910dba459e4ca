"""Training curves of the study's runs: each run's ``log.jsonl`` (iteration, loss_cls, loss_box, loss, lr, ...)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from analysis.plotting import PAPER_COLORS, new_figure
from analysis.study_io import Study, read_json, read_log

LOSS_COLUMNS = ("loss_cls", "loss_box", "loss")


def load_curves(study: Study, runs: list[str] | None = None) -> pd.DataFrame:
    """One row per logged step of each run (``run`` column = run id), from the manifest's ``runs.<id>.dir``.

    Runs whose log does not exist yet are skipped; a diverged run's status is in the ``status`` column.
    """
    frames = []
    for rid, info in study.data.get("runs", {}).items():
        if runs is not None and rid not in runs:
            continue
        run_dir = study.resolve(info["dir"])
        if not (run_dir / "log.jsonl").is_file():
            continue
        df = pd.DataFrame(read_log(run_dir / "log.jsonl"))
        result = run_dir / "result.json"
        df["status"] = read_json(result, "run result").get("status", "?") if result.is_file() else "running"
        df.insert(0, "run", rid)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "iteration"])


def plot_run(curves: pd.DataFrame, run: str) -> Figure:
    """Losses (left) and learning rate (right) of one run against the iteration."""
    df = curves[curves["run"] == run]
    if df.empty:
        raise ValueError(f"no training log for run {run!r}")
    fig, (ax_loss, ax_lr) = new_figure(ncols=2, width=4.5, height=3.2)
    for col, color in zip(LOSS_COLUMNS, PAPER_COLORS):
        if col in df:
            ax_loss.plot(df["iteration"], df[col], color=color, label=col)
    ax_loss.set(xlabel="iteration", ylabel="loss", title=f"{run} ({df['status'].iloc[0]})")
    ax_loss.legend(fontsize=8)
    if "lr" in df:
        ax_lr.plot(df["iteration"], df["lr"], color="black")
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="schedule")
    return fig


def plot_runs(curves: pd.DataFrame, runs: list[str], column: str = "loss") -> Figure:
    """One loss column of several runs on one axis (e.g. a table's rows)."""
    fig, (ax,) = new_figure(width=6.0, height=3.6)
    for i, run in enumerate(runs):
        df = curves[curves["run"] == run]
        if not df.empty:
            ax.plot(df["iteration"], df[column], color=PAPER_COLORS[i % len(PAPER_COLORS)], label=run, lw=1)
    ax.set(xlabel="iteration", ylabel=column, yscale="log")
    ax.legend(fontsize=6, ncol=2)
    return fig
