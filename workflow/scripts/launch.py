"""Start ``python -m retinanet <command> ...`` with one process, or one per GPU under torchrun.

Used by the train rule: ``launch.py --gpus N --threads T -- train --config RUN.yaml --out RUNDIR --resume auto``.
``N`` is the job's ``gpu`` resource (the profile's request); the processes started are min(N, GPUs visible), so a
CPU machine (mini/smoke scale, or a test cluster advertising fake GPUs) runs one plain process whatever the profile
asks. CPU threads: the job's Snakemake threads T locally; inside a SLURM job (SLURM_JOB_ID set) the allocation's
CPUs (``--slurm-cpus``, the profile's cpus_per_task). Torch threads per process = CPUs // processes (at least 1),
given through OMP_NUM_THREADS/MKL_NUM_THREADS (torch's default thread count) rather than the run config: how many
cores a machine lends is not part of a run's identity, and a run resumed on another allocation must match its
checkpoint's config.

Stale runs: ``train ... --resume auto`` resumes from the run folder's last checkpoint. When the run's config file
differs from the folder's ``config.resolved.yaml`` (the study changed the run, so Snakemake retrains it), the old
folder is moved to ``RUNDIR.previous`` first and training starts fresh, instead of failing on the mismatch.
No torch import here: this must start fast and work before CUDA is initialized.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def visible_gpus(env: dict[str, str] | None = None) -> int:
    """GPUs this process may use: ``nvidia-smi -L`` lines, capped by CUDA_VISIBLE_DEVICES when it is set."""
    env = os.environ if env is None else env
    count = 0
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
            count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.TimeoutExpired):
            count = 0
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        count = min(count, len([d for d in cvd.split(",") if d.strip()]))
    return count


def job_threads(threads: int, slurm_cpus: int | None, env: dict[str, str]) -> int:
    """CPU threads the job may use: its SLURM allocation inside a SLURM job, else its Snakemake threads."""
    return slurm_cpus if slurm_cpus and env.get("SLURM_JOB_ID") else threads


def command(args: list[str], *, gpus: int, threads: int, visible: int,
            python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """The command line (``python -m retinanet ARGS`` or its torchrun equivalent) and the thread variables."""
    procs = max(1, min(gpus, visible))
    per_proc = str(max(1, threads // procs))
    env = {"OMP_NUM_THREADS": per_proc, "MKL_NUM_THREADS": per_proc}
    if procs == 1:
        return [python, "-m", "retinanet", *args], env
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "retinanet",
            *args], env


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _identity(path: Path) -> dict:
    from retinanet.config import load, to_dict
    from workflow.study import RUNTIME_FIELDS

    d = to_dict(load(path))
    for key in RUNTIME_FIELDS:
        d.pop(key, None)
    return d


def retire_stale_run(args: list[str]) -> str | None:
    """For ``train --config C --out R``: if R holds a run of another config, move it to ``R.previous``.
    Returns a message saying what was done, or None."""
    config, out = _option(args, "--config"), _option(args, "--out")
    if not args or args[0] != "train" or not config or not out:
        return None
    resolved = Path(out) / "config.resolved.yaml"
    if not resolved.is_file() or _identity(resolved) == _identity(Path(config)):
        return None
    previous = Path(f"{out}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    os.replace(out, previous)
    return f"{out} was trained with another config than {config}: moved to {previous}, training from scratch"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=0, help="GPUs requested for the job (0: none)")
    parser.add_argument("--threads", type=int, required=True, help="CPU threads of the job (Snakemake threads)")
    parser.add_argument("--slurm-cpus", type=int, default=None, help="CPUs of the SLURM allocation, if any")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the retinanet command and its options")
    ns = parser.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if not args:
        parser.error("missing the retinanet command after --")
    threads = job_threads(ns.threads, ns.slurm_cpus, os.environ)
    cmd, env = command(args, gpus=ns.gpus, threads=threads, visible=visible_gpus() if ns.gpus > 1 else 0)
    note = retire_stale_run(args)
    if note:
        print(f"launch: {note}", file=sys.stderr, flush=True)
    print("launch:", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd), file=sys.stderr, flush=True)
    os.execve(cmd[0], cmd, {**os.environ, **env})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
