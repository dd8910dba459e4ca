"""Torch threads of the evaluate, time and loss_samples jobs follow the job's CPUs, as train's do: the rule's
Snakemake threads locally and the allocation's cpus_per_task inside a SLURM job (both handed to
workflow/scripts/launch.py, which sets OMP_NUM_THREADS), never a fixed number. Checked on the shell commands of a
dry run (`snakemake -n -p`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow.scale import load_scale
from workflow.study import build_study, paths

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())["set-resources"]
RULES = ("train", "evaluate", "time", "loss_samples")


def _jobs(tmp_path: Path, scale: str, *args: str) -> dict[str, dict]:
    """{rule: {"threads", "cpus_per_task", "shell"}} of one run's torch jobs in a dry run at ``scale``."""
    loaded = load_scale({"scale": scale}, ROOT / "config")
    study, p = build_study(loaded), paths(loaded)
    rid = sorted(set(study.loss_samples) & set(study.timed))[0]
    targets = [p["metrics"].format(rid=rid), p["timing"].format(rid=rid), p["loss_samples"].format(rid=rid)]
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
           "--nolock", "-n", "-p", "--cores", "16", "--config", f"scale={scale}", *args]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = {}
    for block in re.split(r"\n(?=rule \w+:)", res.stdout + res.stderr):
        name = re.match(r"rule (\w+):", block)
        if not name or name.group(1) not in RULES:
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        cpus = re.search(r"cpus_per_task=(\d+)", block)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs[name.group(1)] = {"threads": int(threads.group(1)) if threads else 1,
                               "cpus_per_task": int(cpus.group(1)) if cpus else None, "shell": shell.group(1)}
    assert sorted(jobs) == sorted(RULES), res.stdout[-3000:]
    return jobs


def _thread_args(shell: str) -> tuple[int, int]:
    m = re.search(r"workflow\.scripts\.launch .*--threads (\d+) --slurm-cpus (\d+) -- ", shell)
    assert m and "OMP_NUM_THREADS" not in shell, shell
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("set_threads", [(), ("--set-threads", "evaluate=3", "time=5", "loss_samples=4", "train=6")])
def test_paper_jobs_take_the_rules_threads_and_the_allocations_cpus(tmp_path: Path, set_threads):
    jobs = _jobs(tmp_path, "paper", *set_threads)
    job_threads = load_scale({"scale": "paper"}, ROOT / "config")["job_threads"]
    wanted = {rule: int(n) for rule, n in (a.split("=") for a in set_threads[1:])}
    for rule, job in jobs.items():
        assert job["threads"] == wanted.get(rule, job_threads), (rule, job)
        assert _thread_args(job["shell"]) == (job["threads"], PROFILE[rule]["cpus_per_task"]), rule


def test_mini_jobs_keep_their_local_threads(tmp_path: Path):
    """Mini on 2 cores: 1-thread jobs side by side, the timing job with both cores (timing_threads)."""
    jobs = _jobs(tmp_path, "mini")
    scale = load_scale({"scale": "mini"}, ROOT / "config")
    for rule, job in jobs.items():
        threads = scale["timing_threads"] if rule == "time" else scale["job_threads"]
        assert job["threads"] == threads and _thread_args(job["shell"])[0] == threads, (rule, job)
