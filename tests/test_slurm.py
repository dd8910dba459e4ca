"""The workflow through a real SLURM cluster (snakemake-executor-plugin-slurm, `--profile slurm`).

Needs a running cluster: `bash .ci/setup-slurm.sh` (as root, Debian/Ubuntu) starts a single-node one on localhost
with fake GPUs; CI runs it before pytest. Without a cluster every test here is skipped, saying so.

The shipped profile (slurm/config.yaml) is used as it is; a test workflow profile adds what a single test node
needs (docs/slurm.md): `slurm-status-command: squeue` (no accounting database, so sacct would hang), a
2 s first status check, and the partition. The paper-resources test keeps profiles/default's requests (8 GPUs,
32 CPUs, 200 GB for training) and checks them on the allocations SLURM made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _cluster_state() -> tuple[str | None, str]:
    """(default partition, reason): partition None when no usable cluster answers."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return None, "SLURM is not installed (run `bash .ci/setup-slurm.sh` as root to start a test cluster)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None, "sinfo timed out: slurmctld is not running (run `bash .ci/setup-slurm.sh`)"
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    usable = [(p, s) for p, s in rows if s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")]
    if out.returncode or not usable:
        return None, f"no usable SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()}); run .ci/setup-slurm.sh"
    default = [p for p, _ in usable if p.endswith("*")]
    return (default or [usable[0][0]])[0].rstrip("*"), ""


PARTITION, REASON = _cluster_state()
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(PARTITION is None, reason=REASON)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The test node's GPUs are fake: the launcher would refuse a SLURM job that sees fewer GPUs than it asked for.
    # sbatch --export=ALL and the plugin's srun pass this on to the job.
    env["RETINANET_ALLOW_MISSING_GPUS"] = "1"
    return env


def test_profile(tmp_path: Path, *, resources: dict | None = None) -> Path:
    """A workflow profile for the single test node: the shipped slurm profile stays untouched."""
    prof = tmp_path / "test-profile"
    prof.mkdir()
    cfg = {
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "default-resources": [f"slurm_partition={PARTITION}", "runtime=30", "mem_mb=1000"],
        "jobs": 2,  # 2 cores: two 1-thread smoke jobs at a time
        "retries": 0,
        "latency-wait": 5,
    }
    if resources is not None:
        cfg["set-resources"] = resources
    (prof / "config.yaml").write_text(yaml.safe_dump(cfg))
    return prof


test_profile.__test__ = False  # a helper, not a test


def _snakemake(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile", timeout: int = 900):
    cmd = [*SNAKEMAKE, "-s", str(snakefile), "-d", str(workdir), "--profile", str(ROOT / "slurm"), *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=_env())


def _submitted(log: str) -> dict[str, list[int]]:
    """SLURM job ids per rule, from the plugin's 'submitted with SLURM jobid N (log: .../rule_NAME/...)' lines."""
    jobs: dict[str, list[int]] = {}
    for jobid, rule in re.findall(r"SLURM jobid (\d+) \(log: \S*?rule_([A-Za-z0-9_]+)", log):
        jobs.setdefault(rule, []).append(int(jobid))
    return jobs


def _job_fields(jobid: int) -> dict[str, str]:
    """``scontrol show job`` as a dict (kept 10 min after the end: MinJobAge=600 in the test cluster).
    ``TresPerJob=gres:gpu:N`` is the job's GPU request (--gpus=N); the job ran, so SLURM allocated it."""
    out = subprocess.run(["scontrol", "show", "job", str(jobid)], capture_output=True, text=True, timeout=10).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out))


TRIVIAL = """
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    log: "logs/a.log"
    resources: gpu=1
    shell: "echo job=$SLURM_JOB_ID > {output} 2> {log}"

rule b:
    input: "a.txt"
    output: "b.txt"
    log: "logs/b.log"
    shell: "cat {input} > {output}; echo job=$SLURM_JOB_ID >> {output} 2> {log}"
"""


def test_trivial_workflow_goes_through_sbatch(tmp_path: Path):
    (tmp_path / "Snakefile").write_text(TRIVIAL)
    start = time.monotonic()
    res = _snakemake(tmp_path, "--workflow-profile", str(test_profile(tmp_path)), snakefile=tmp_path / "Snakefile",
                     timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = (tmp_path / "b.txt").read_text().split()
    ids = [int(line.split("=")[1]) for line in lines]  # each job saw its own SLURM job id
    assert len(set(ids)) == 2
    jobs = _submitted(res.stderr)
    assert sorted(jobs) == ["a", "b"]
    a = _job_fields(jobs["a"][0])
    assert (a["TresPerJob"], a["JobState"], a["Partition"]) == ("gres:gpu:1", "COMPLETED", PARTITION)
    print(f"trivial 2-job workflow through SLURM: {time.monotonic() - start:.1f} s")


def _engine_ready() -> bool:
    return (ROOT / "retinanet" / "modeling" / "losses.py").is_file() and (ROOT / "analysis" / "report.py").is_file()


@pytest.mark.skipif(not _engine_ready(), reason="the retinanet engine or analysis/report.py is not there yet")
def test_smoke_dag_through_slurm(tmp_path: Path):
    """The whole smoke study, every job submitted with sbatch (CPU resources of profiles/cpu)."""
    cpu = yaml.safe_load((ROOT / "profiles" / "cpu" / "config.yaml").read_text())["set-resources"]
    start = time.monotonic()
    res = _snakemake(tmp_path, "--workflow-profile", str(test_profile(tmp_path, resources=cpu)),
                     "--config", "scale=smoke", timeout=1500)
    wall = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-5000:]
    assert (tmp_path / "results" / "smoke" / "REPORT.md").is_file()
    jobs = _submitted(res.stderr)
    assert {"make_dataset", "train", "evaluate", "time", "loss_samples", "table", "figure", "report"} <= set(jobs)
    assert "run_config" not in jobs and "manifest" not in jobs  # local rules
    print(f"smoke DAG through SLURM: {sum(map(len, jobs.values()))} sbatch jobs, {wall:.0f} s")


@pytest.mark.skipif(not _engine_ready(), reason="the retinanet engine or analysis/report.py is not there yet")
def test_paper_profile_gpu_requests_are_allocated(tmp_path: Path):
    """profiles/default (the paper's resources) on the fake-GPU node: one smoke training run and its Figure 4
    samples, submitted with the paper's requests; SLURM's allocation must show them."""
    paper = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())["set-resources"]
    target = "work/smoke/loss_samples/r101-600-fl-g2-a0.25-s0.npz"
    res = _snakemake(tmp_path, target, "--workflow-profile", str(test_profile(tmp_path, resources=paper)),
                     "--config", "scale=smoke", timeout=900)
    assert res.returncode == 0, res.stderr[-5000:]
    jobs = _submitted(res.stderr)
    train = _job_fields(jobs["train"][0])
    assert (train["TresPerJob"], train["JobState"]) == (f"gres:gpu:{paper['train']['gpu']}", "COMPLETED"), train
    assert train["NumNodes"] == "1" and train["NumTasks"] == "1"  # one torchrun per node, no --ntasks-per-gpu
    assert train["CPUs/Task"] == str(paper["train"]["cpus_per_task"])
    assert train["MinMemoryNode"] == f"{paper['train']['mem_mb']}M"
    assert train["TimeLimit"] == "2-00:00:00"  # runtime 2880 min
    samples = _job_fields(jobs["loss_samples"][0])
    assert samples["TresPerJob"] == "gres:gpu:1"
    log = (tmp_path / "work" / "smoke" / "logs" / "train" / "r101-600-fl-g2-a0.25-s0.log").read_text()
    assert "launch:" in log and "torch.distributed.run" not in log  # no GPU visible: one process
    assert f"launch: warning: the SLURM job asked for {paper['train']['gpu']} GPUs but this process sees 0" in log


@pytest.mark.skipif(not _engine_ready(), reason="the retinanet engine or analysis/report.py is not there yet")
def test_a_train_job_stopped_before_its_time_limit_is_retried_and_resumes(tmp_path: Path):
    """retinanet/engine/preemption.py through the SLURM plugin: each train job reads its end time with squeue from
    inside the job step and stops that long before it (here a margin longer than the job, so at once: after one
    iteration), saves the checkpoint and exits 75; Snakemake retries train (preemptible-retries 3 in slurm/config.yaml)
    and the next job resumes. 3 iterations: 3 jobs, the last one completes. The run's history log keeps every job's
    section and result.json's wall time adds up the attempts."""
    rid = "r50-600-fl-g2-a0.25-s0"
    (tmp_path / "three.yaml").write_text("base: {solver: {iterations: 3, checkpoint_period: 1000}}\n")
    cpu = yaml.safe_load((ROOT / "profiles" / "cpu" / "config.yaml").read_text())["set-resources"]
    env = {**_env(), "RETINANET_STOP_MARGIN_S": "36000"}
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--profile", str(ROOT / "slurm"),
           "--workflow-profile", str(test_profile(tmp_path, resources=cpu)), "--configfile",
           str(tmp_path / "three.yaml"), "--config", "scale=smoke", "--", f"work/smoke/runs/{rid}/result.json"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-5000:]
    jobs = _submitted(res.stderr)["train"]
    run = tmp_path / "work" / "smoke" / "runs" / rid
    attempts = json.loads((run / "attempts.json").read_text())
    assert [a["end"] for a in attempts][-1] == "completed" and len(attempts) == len(jobs) >= 2
    assert all(a["end"] == "stopped by SIGUSR1" for a in attempts[:-1])
    assert [a["slurm_job_id"] for a in attempts] == [str(j) for j in jobs]
    assert [a["from_iteration"] for a in attempts[1:]] == [a["to_iteration"] for a in attempts[:-1]]
    result = json.loads((run / "result.json").read_text())
    assert result["iteration"] == 3 and result["attempts"] == len(jobs)
    assert result["wall_s"] == pytest.approx(sum(a["seconds"] for a in attempts))
    history = (tmp_path / "work" / "smoke" / "logs" / "train" / f"{rid}.history.log").read_text()
    assert [f"SLURM job {j}" in history for j in jobs] == [True] * len(jobs)
    assert history.count("exit 75 to be retried") == len(jobs) - 1
