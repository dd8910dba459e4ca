"""One training job per run folder: an exclusive lock on ``RUNDIR/job.lock``, held for the job's whole life.

Two jobs on one folder (a second Snakemake instance, a SLURM job requeued while the first still runs, a manual
``train`` beside the workflow) would overwrite each other's checkpoints and results. Rank 0 of a training job takes
the lock (:func:`hold`) before it reads the folder; a second job is refused with :class:`RunBusyError`, naming the
folder and the holder's pid, host, SLURM job id and start time (written into the lock file).

The lock is a POSIX record lock (``fcntl.lockf``) on an open file: the kernel releases it when the holder's
process ends, however it ends (SIGKILL, a node's time limit), so there is never a stale lock to clean up. Not
``flock``: a flock is shared with every process forked while it is held (the data loader's workers), so a worker
that outlived its main process, or a loader still alive in the process, would keep the folder locked. POSIX locks
belong to the process and work across nodes on NFS (a dead node's lock expires with its lease); a file system
without lock support (Lustre mounted without ``flock``/``localflock``) makes :func:`hold` warn and go on unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

LOCK = "job.lock"


class RunBusyError(ValueError):
    """The run folder is in use by another training job."""


def holder() -> dict[str, object]:
    """Who holds a lock taken by this process: pid, host, SLURM job id (or None) and start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe(text: str) -> str:
    """A lock file's content as ``pid 123 on host n7, SLURM job 99, since ...`` (or what could be read of it)."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return "holder not recorded yet" if not text.strip() else f"holder: {text.strip()[:200]}"
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ", not a SLURM job"
    return f"pid {info.get('pid')} on host {info.get('host')}{job}, since {info.get('started')}"


def _take(out: Path) -> IO[str] | None:
    """The open, locked lock file of ``out``; None where the file system cannot lock. RunBusyError if held."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / LOCK, "a+")  # not "w": the holder's content must stay readable until we hold the lock
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held by another process
        f.seek(0)
        text = f.read()
        f.close()
        raise RunBusyError(f"{out}: another training job is running in this run folder ({describe(text)}); one job "
                           f"per run folder: wait for it to end, or stop it") from None
    except OSError as exc:
        f.close()
        print(f"train: warning: {out / LOCK}: the file system cannot lock ({exc.strerror}); nothing stops a second "
              f"job on this run folder", file=sys.stderr)
        return None
    f.seek(0)
    f.truncate()
    f.write(json.dumps(holder()) + "\n")
    f.flush()
    return f


@contextlib.contextmanager
def hold(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the duration of the block (RunBusyError if another job holds it)."""
    f = _take(out)
    try:
        yield
    finally:
        if f is not None:
            f.close()  # closing releases the lock
