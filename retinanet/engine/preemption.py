"""Stop training cleanly before a job is killed: checkpoint at the next iteration, then exit to be retried.

A training process stops on SIGTERM (what SLURM sends every process of a job at its time limit, on preemption and
on ``scancel``, ``KillWait`` seconds before SIGKILL) and on SIGUSR1. Before a SLURM job's time limit it sends
itself SIGUSR1 (:func:`arm_deadline`): the signal handler only sets a flag (:class:`StopRequest`); the training
loop sums the flag over the processes with the iteration's losses, so every rank stops after the same iteration,
saves the checkpoint and exits with :data:`RETRY_EXIT`. Snakemake then retries the job, which resumes from that
checkpoint.

Why not ``sbatch --signal``: under snakemake-executor-plugin-slurm the training process is a grandchild of a
Snakemake process that srun starts as the job step's task. ``--signal=USR1@N`` signals every process of the step,
and that Snakemake process dies of it (SIGUSR1's default action), which ends the step; ``--signal=B:USR1@N``
signals the batch shell, which dies of it, which ends the job. Both were observed on SLURM 22.05 with plugin 2.8.0
(docs/slurm.md). So the deadline comes from SLURM's own record of the job's end time (``squeue -o %e``), read
once at start, and the signal is raised inside the training process.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

RETRY_EXIT = 75
"""Exit status of a training process that stopped on a signal after saving its checkpoint (EX_TEMPFAIL: try
again). Any non-zero status makes Snakemake retry the job; this one says that nothing went wrong."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

MARGIN_S = 300.0
"""How long before a SLURM job's end time training stops by default: time to finish the iteration and write the
checkpoint (paper scale: seconds), with room to spare."""

MARGIN = "RETINANET_STOP_MARGIN_S"
"""Environment variable: another margin in seconds (a file system slow to write checkpoints; a test)."""

STOP_AT = "RETINANET_STOP_AT"
"""Environment variable: a Unix time at which to stop, instead of the SLURM job's end time minus :data:`MARGIN_S`
(another scheduler's limit, or a test)."""


class Stopped(RuntimeError):
    """Training stopped on a signal at ``iteration``, its checkpoint saved; the job should be retried."""

    def __init__(self, signal_name: str, iteration: int) -> None:
        super().__init__(f"stopped by {signal_name} after iteration {iteration}; checkpoint saved, exit "
                         f"{RETRY_EXIT} to be retried")
        self.signal_name = signal_name
        self.iteration = iteration


class StopRequest:
    """Handlers for :data:`STOP_SIGNALS` that record the first signal received; restores the old ones on
    :meth:`close`. Install it before the data loader starts its workers: forked workers inherit the handlers, so
    a SIGTERM sent to every process of the job does not kill them under the main process."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            print(f"train: {self.signal_name} received: stopping after this iteration", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> StopRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WORKER_GRACE_S = 30.0
"""How long a data-loader worker lives on after a stop signal (:func:`worker_stop_signals`)."""


def _worker_stop(signum: int, frame: FrameType | None) -> None:
    timer = threading.Timer(WORKER_GRACE_S, os._exit, (0,))
    timer.daemon = True
    timer.start()


def worker_stop_signals(worker_id: int = 0) -> None:
    """A training data loader's ``worker_init_fn``: on :data:`STOP_SIGNALS` the worker keeps serving for
    :data:`WORKER_GRACE_S` more seconds, then exits. SLURM signals every process of a job at once; PyTorch's own
    SIGTERM handler in a worker ends it at once, and the main process then fails on the dead worker before it has
    finished its iteration and saved the checkpoint. Ignoring the signal instead would hang an interpreter that
    exits with a live loader (multiprocessing terminates its workers with SIGTERM and waits for them)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _worker_stop)


def slurm_end_time(job_id: str, timeout: float = 10.0) -> float | None:
    """The Unix time at which SLURM ends job ``job_id`` (its time limit), from ``squeue``; None if it has none or
    squeue does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip().splitlines()[0].strip() if out.stdout.strip() else ""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()  # the controller's local time, as squeue prints it
    except ValueError:  # N/A, UNLIMITED, NONE, an error message
        return None


def deadline(env: dict[str, str] | None = None) -> tuple[float | None, str]:
    """When to stop (Unix time, or None) and where that came from: :data:`STOP_AT`, else the SLURM job's end time
    minus :data:`MARGIN_S` (or :data:`MARGIN`) inside a SLURM job, else none."""
    env = os.environ if env is None else env
    if env.get(STOP_AT):
        return float(env[STOP_AT]), STOP_AT
    job = env.get("SLURM_JOB_ID")
    if job:
        end = slurm_end_time(job)
        margin = float(env.get(MARGIN) or MARGIN_S)
        if end is not None:
            return end - margin, f"SLURM job {job} ends at {time.ctime(end)}, minus {margin:.0f} s"
        return None, f"SLURM job {job}: no end time from squeue; stopping only on SIGTERM/SIGUSR1"
    return None, "no time limit"


def arm_deadline(at: float) -> threading.Timer:
    """Send SIGUSR1 to this process at Unix time ``at`` (at once if it is past); returns the (daemon) timer."""
    timer = threading.Timer(max(0.0, at - time.time()), os.kill, (os.getpid(), signal.SIGUSR1))
    timer.daemon = True
    timer.start()
    return timer
