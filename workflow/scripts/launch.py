"""Start ``python -m retinanet <command> ...`` with one process, or one per GPU under torchrun.

Used by the train rule, ``launch.py --gpus N --threads T --slurm-cpus C -- train --config RUN.yaml --out RUNDIR
--resume auto``, and the same way by the evaluate, time and loss_samples rules.
``N`` is the job's ``gpu`` resource (the profile's request). GPUs visible: ``torch.cuda.device_count()`` (which
honours CUDA_VISIBLE_DEVICES), capped by CUDA_VISIBLE_DEVICES; no ``nvidia-smi`` needed. The processes started
for ``train`` are min(N, GPUs visible), so a local CPU machine (mini/smoke scale) runs one plain process whatever
the profile asks; the other commands always run as one process.

Inside a SLURM job (SLURM_JOB_ID set) the job's GPUs are max(N, the count SLURM states: SLURM_GPUS_ON_NODE,
SLURM_GPUS or SLURM_JOB_GPUS, where the step still has them; the SLURM plugin's srun removes most SLURM_*
variables, hence N from the rule). Seeing fewer GPUs than that is an error naming both numbers: the run would
otherwise train with fewer processes and more gradient accumulation (8x slower with one GPU of eight, or on the
CPU with none), silently. ``RETINANET_ALLOW_MISSING_GPUS=1`` runs anyway (a test cluster with fake GPUs).

CPU processes: ``RETINANET_CPU_PROCESSES=P`` (P >= 1) starts ``train`` as P processes under torchrun when no GPU
is visible; they join one gloo process group on the CPU (retinanet.engine.distributed picks gloo there), standing in
for a multi-GPU job: the paper rehearsal's training jobs (docs/study.md, "Rehearsal"). Unset, a CPU machine runs one
plain process; with GPUs visible it is ignored (one process per GPU).

CPU threads: the job's Snakemake threads T locally; inside a SLURM job the allocation's CPUs (``--slurm-cpus``,
the profile's cpus_per_task). Torch threads per process = CPUs // processes (at least 1), given through
OMP_NUM_THREADS/MKL_NUM_THREADS (torch's default thread count) rather than the run config: how many cores a machine
lends is not part of a run's identity, and a run resumed on another allocation must match its checkpoint's config.

What a run folder holds (a finished run to reuse, a checkpoint to resume, a run of another identity to retire to
``RUNDIR.previous``) is decided by ``train --resume auto`` itself (:func:`retinanet.rundir.record.decide`), on its
scientific fields only, so that a changed operational field (the data root, workers...) never retrains a run.
torch is imported only to count GPUs, where a count is needed; ``device_count`` does not initialize CUDA in this
process, which ``execve`` replaces by the command anyway.
"""

from __future__ import annotations

import argparse
import os
import sys

ALLOW_MISSING_GPUS = "RETINANET_ALLOW_MISSING_GPUS"
CPU_PROCESSES = "RETINANET_CPU_PROCESSES"
"""Environment variable: how many torchrun processes ``train`` starts on a machine without GPUs (default 1)."""
DISTRIBUTED_COMMANDS = ("train",)
"""retinanet commands that run under torchrun with one process per GPU; the others run as one process."""


def _torch_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def visible_gpus(env: dict[str, str] | None = None) -> int:
    """GPUs this process may use: ``torch.cuda.device_count()``, capped by CUDA_VISIBLE_DEVICES when it is set."""
    env = os.environ if env is None else env
    count = _torch_gpus()
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        count = min(count, len([d for d in cvd.split(",") if d.strip()]))
    return count


def slurm_gpus(env: dict[str, str]) -> int:
    """GPUs SLURM says this job has on this node, 0 when no variable says it: SLURM_GPUS_ON_NODE (a count),
    SLURM_GPUS (the --gpus request, ``[type:]N``) or SLURM_JOB_GPUS (a list of indices)."""
    on_node = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit():
        return int(on_node)
    gpus = env.get("SLURM_GPUS", "").strip().rsplit(":", 1)[-1]
    if gpus.isdigit():
        return int(gpus)
    job_gpus = [g for g in env.get("SLURM_JOB_GPUS", "").split(",") if g.strip()]
    return len(job_gpus)


def expected_gpus(requested: int, env: dict[str, str]) -> int:
    """GPUs the job must see: inside a SLURM job, max(the rule's request, SLURM's count); else 0 (no check)."""
    if not env.get("SLURM_JOB_ID"):
        return 0
    return max(requested, slurm_gpus(env))


def check_gpus(expected: int, visible: int, env: dict[str, str]) -> str | None:
    """The error message when a SLURM job sees fewer GPUs than it asked for, else None. With
    RETINANET_ALLOW_MISSING_GPUS=1 the message is returned as a warning prefixed ``warning:``."""
    if visible >= expected:
        return None
    message = (f"the SLURM job asked for {expected} GPUs but this process sees {visible} (torch.cuda.device_count(), "
               f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}); it would run on fewer GPUs "
               f"(train: fewer processes, more gradient accumulation) or on the CPU, silently slower. Check the GPU "
               f"request (all on one node: resource nodes=1) and the CUDA setup, or set {ALLOW_MISSING_GPUS}=1 to "
               f"run anyway")
    return f"warning: {message}" if env.get(ALLOW_MISSING_GPUS) == "1" else message


def cpu_processes(env: dict[str, str]) -> int:
    """``RETINANET_CPU_PROCESSES`` (processes of a distributed command without GPUs): 1 when unset; ValueError
    naming the variable when it is not a positive integer."""
    text = env.get(CPU_PROCESSES, "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{CPU_PROCESSES}={env[CPU_PROCESSES]!r}: expected a positive integer (processes of "
                         f"train on a machine without GPUs)")
    return int(text)


def job_threads(threads: int, slurm_cpus: int | None, env: dict[str, str]) -> int:
    """CPU threads the job may use: its SLURM allocation inside a SLURM job, else its Snakemake threads."""
    return slurm_cpus if slurm_cpus and env.get("SLURM_JOB_ID") else threads


def command(args: list[str], *, gpus: int, threads: int, visible: int, cpu_procs: int = 1,
            python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """The command line (``python -m retinanet ARGS`` or its torchrun equivalent) and the thread variables.
    ``cpu_procs``: processes of a distributed command when no GPU is visible (:data:`CPU_PROCESSES`)."""
    procs = 1
    if args[:1] and args[0] in DISTRIBUTED_COMMANDS:
        procs = max(1, min(gpus, visible)) if visible else max(1, cpu_procs)
    per_proc = str(max(1, threads // procs))
    env = {"OMP_NUM_THREADS": per_proc, "MKL_NUM_THREADS": per_proc}
    if procs == 1:
        return [python, "-m", "retinanet", *args], env
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "retinanet",
            *args], env


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
    try:
        cpu_procs = cpu_processes(os.environ)
    except ValueError as exc:
        print(f"launch: {exc}", file=sys.stderr, flush=True)
        return 2
    threads = job_threads(ns.threads, ns.slurm_cpus, os.environ)
    expected = expected_gpus(ns.gpus, os.environ)
    visible = visible_gpus() if expected or ns.gpus > 1 or cpu_procs > 1 else 0
    problem = check_gpus(expected, visible, os.environ)
    if problem:
        print(f"launch: {problem}", file=sys.stderr, flush=True)
        if not problem.startswith("warning:"):
            return 2
    cmd, env = command(args, gpus=ns.gpus, threads=threads, visible=visible, cpu_procs=cpu_procs)
    print("launch:", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd), file=sys.stderr, flush=True)
    os.execve(cmd[0], cmd, {**os.environ, **env})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
