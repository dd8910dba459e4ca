"""The sbatch lines of the paper profile, without a cluster: `snakemake --profile slurm` with the real SLURM executor
plugin and profiles/default, but a stub `sbatch` on PATH that records its command line and refuses the job.

GPU jobs must stay on one node: the plugin turns `gpu: N` into `--gpus=N`, a total for the job that SLURM may
spread over several nodes; the job's `srun -n1 --nodes=1` step and its one torchrun then cannot use them
(docs/slurm.md). `nodes: 1` adds `--nodes=1`.
"""

from __future__ import annotations

import os
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
GPU_RULES = ("train", "evaluate", "time", "loss_samples")

SBATCH = """#!/bin/sh
echo "sbatch $*" >> "$SBATCH_CALLS"
echo "stub sbatch: recorded, not submitted" >&2
exit 1
"""


def test_every_gpu_rule_of_the_paper_profile_stays_on_one_node():
    for rule in GPU_RULES:
        assert PROFILE[rule].get("gpu", 0) >= 1, rule
        assert PROFILE[rule].get("nodes") == 1, f"profiles/default: {rule}: set nodes: 1 (GPUs on one node)"


def _sbatch_calls(tmp_path: Path) -> dict[str, str]:
    """{rule: sbatch command line} of one job per GPU rule of the paper scale, submitted through the plugin."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "sbatch").write_text(SBATCH)
    for name in ("sacct", "sacctmgr", "sshare", "scontrol", "squeue", "sinfo"):  # empty answers: no account etc.
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)

    scale = load_scale({"scale": "paper"}, ROOT / "config")
    study, p = build_study(scale), paths(scale)
    rid = sorted(study.loss_samples)[0]  # a run that is also timed (Table 1e)
    assert rid in study.timed
    work = tmp_path / "wd"
    inputs = [p["run_config"].format(rid=rid), f"{scale['workdir']}/data/coco-layout.json",
              study.runs[rid].model.pretrained]
    for name in [*inputs, p["result"].format(rid=rid)]:  # in this order: the run's result is newer than its inputs
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("{}")
    other = sorted(r for r in study.runs if r != rid and study.runs[r].model.pretrained == inputs[2])[0]
    (work / p["run_config"].format(rid=other)).write_text("{}")
    targets = [p["result"].format(rid=other), p["metrics"].format(rid=rid), p["timing"].format(rid=rid),
               p["loss_samples"].format(rid=rid)]

    calls = tmp_path / "sbatch.calls"
    env = {**os.environ, "SBATCH_CALLS": str(calls),
           "PATH": f"{stubs}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--nolock",
           "--profile", str(ROOT / "slurm"), "--retries", "0", "--slurm-init-seconds-before-status-checks", "1",
           "--allowed-rules", *GPU_RULES]
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "stub sbatch: recorded" in out, out[-3000:]
    lines = calls.read_text().splitlines()
    found = {m.group(1): line for line in lines if (m := re.search(r"--comment rule_([a-z_]+?)_wildcards_", line))}
    assert sorted(found) == sorted(GPU_RULES), out[-3000:]
    return found


@pytest.fixture(scope="module")
def sbatch_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _sbatch_calls(tmp_path_factory.mktemp("sbatch"))


@pytest.mark.parametrize("rule", GPU_RULES)
def test_gpu_jobs_are_submitted_on_one_node_with_their_gpus(sbatch_calls, rule):
    line = sbatch_calls[rule]
    assert re.search(r"--nodes[= ]1(\s|$)", line), line
    assert f"--gpus={PROFILE[rule]['gpu']}" in line.split(), line
    assert f"--cpus-per-task={PROFILE[rule]['cpus_per_task']}" in line.split(), line
    assert "--ntasks" not in line  # one task: one torchrun (train) or one process starts the work


def test_training_asks_for_eight_gpus_on_one_node(sbatch_calls):
    words = sbatch_calls["train"].split()
    assert "--gpus=8" in words and "--nodes=1" in words
    assert words[words.index("-t") + 1] == "2880" and words[words.index("--mem") + 1] == "200000"
