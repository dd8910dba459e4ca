"""workflow/scripts/launch.py counting GPUs: torch's count (no nvidia-smi), CUDA_VISIBLE_DEVICES, and a SLURM job
that sees fewer GPUs than it asked for stops with both numbers instead of training 8x slower."""

from __future__ import annotations

import pytest
import torch

from workflow.scripts import launch


class _Exec(Exception):
    """Raised by the fake os.execve: the command launch.py would have started."""


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replace os.execve; the dict gets the command and environment launch.py would run."""
    seen: dict = {}

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(argv=argv, env=env)
        raise _Exec

    monkeypatch.setattr(launch.os, "execve", fake_execve)
    return seen


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Set what torch.cuda.device_count() returns; no nvidia-smi on PATH; no SLURM or CUDA variables."""
    monkeypatch.setenv("PATH", "/nonexistent")
    for var in ("SLURM_JOB_ID", "SLURM_GPUS_ON_NODE", "SLURM_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES",
                launch.ALLOW_MISSING_GPUS, launch.CPU_PROCESSES):
        monkeypatch.delenv(var, raising=False)

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


def test_visible_gpus_come_from_torch_without_nvidia_smi(gpus):
    gpus(8)
    assert launch.visible_gpus({}) == 8
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == 2  # a cap, whatever torch's count
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    gpus(2)
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}) == 2


@pytest.mark.parametrize(("env", "expected"), [
    ({}, 0),                                                    # not in SLURM: no check
    ({"SLURM_JOB_ID": "7"}, 8),                                 # the plugin's srun left only the job id
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "4"}, 8),      # 4 here of 8 asked: 8
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "16"}, 16),
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS": "a100:16"}, 16),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0,1,2,3,4,5,6,7,8,9"}, 10),
])
def test_expected_gpus_inside_slurm(env, expected):
    assert launch.expected_gpus(8, env) == expected


def test_check_gpus_names_both_numbers():
    assert launch.check_gpus(8, 8, {}) is None and launch.check_gpus(0, 0, {}) is None
    message = launch.check_gpus(8, 2, {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert "asked for 8 GPUs but this process sees 2" in message and "'0,1'" in message
    assert launch.check_gpus(8, 0, {launch.ALLOW_MISSING_GPUS: "1"}).startswith("warning: ")


def test_slurm_job_seeing_fewer_gpus_than_asked_stops(gpus, started, monkeypatch, capsys):
    gpus(2)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert launch.main(["--gpus", "8", "--threads", "2", "--", "train", "--config", "c.yaml"]) == 2
    assert "launch: the SLURM job asked for 8 GPUs but this process sees 2" in capsys.readouterr().err
    assert not started  # nothing was started


def test_slurm_job_with_its_gpus_runs_one_process_per_gpu_without_nvidia_smi(gpus, started, monkeypatch):
    gpus(8)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with pytest.raises(_Exec):
        launch.main(["--gpus", "8", "--threads", "2", "--slurm-cpus", "32", "--", "train", "--config", "c.yaml"])
    assert "--nproc_per_node=8" in started["argv"] and started["env"]["OMP_NUM_THREADS"] == "4"


def test_missing_gpus_may_be_allowed_for_a_fake_gpu_cluster(gpus, started, monkeypatch, capsys):
    gpus(0)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv(launch.ALLOW_MISSING_GPUS, "1")
    with pytest.raises(_Exec):
        launch.main(["--gpus", "8", "--threads", "2", "--", "train", "--config", "c.yaml"])
    assert "torch.distributed.run" not in started["argv"]
    assert "launch: warning: the SLURM job asked for 8 GPUs but this process sees 0" in capsys.readouterr().err


def test_outside_slurm_a_cpu_machine_runs_one_process(gpus, started):
    gpus(0)
    with pytest.raises(_Exec):
        launch.main(["--gpus", "8", "--threads", "2", "--", "train", "--config", "c.yaml"])
    assert started["argv"][1:4] == ["-m", "retinanet", "train"]


def test_only_train_runs_under_torchrun():
    cmd, _ = launch.command(["evaluate", "--run", "r"], gpus=2, threads=8, visible=2, python="py")
    assert cmd == ["py", "-m", "retinanet", "evaluate", "--run", "r"]


def test_a_slurm_evaluate_job_uses_its_allocations_cpus(gpus, started, monkeypatch):
    """evaluate, time and loss_samples start through the launcher too: the allocation's CPUs, one process."""
    gpus(1)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with pytest.raises(_Exec):
        launch.main(["--gpus", "1", "--threads", "2", "--slurm-cpus", "8", "--", "evaluate", "--run", "r"])
    assert started["argv"][1:4] == ["-m", "retinanet", "evaluate"] and started["env"]["OMP_NUM_THREADS"] == "8"


# ----- RETINANET_CPU_PROCESSES: several gloo processes without GPUs (the paper rehearsal) ---------------------------

def test_cpu_processes_start_train_under_torchrun_without_gpus():
    cmd, env = launch.command(["train", "--config", "c.yaml"], gpus=8, threads=2, visible=0, cpu_procs=2,
                              python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "retinanet",
                   "train", "--config", "c.yaml"]
    assert env["OMP_NUM_THREADS"] == "1"  # the job's 2 CPUs shared by the 2 processes
    assert launch.command(["train"], gpus=0, threads=1, visible=0, cpu_procs=1, python="py")[0] == [
        "py", "-m", "retinanet", "train"]  # 1: a plain process, as without the variable
    assert launch.command(["evaluate"], gpus=1, threads=2, visible=0, cpu_procs=4, python="py")[0] == [
        "py", "-m", "retinanet", "evaluate"]  # only train is distributed
    assert "--nproc_per_node=8" in launch.command(["train"], gpus=8, threads=8, visible=8, cpu_procs=2,
                                                  python="py")[0]  # GPUs visible: one process per GPU


@pytest.mark.parametrize(("value", "procs"), [(None, 1), ("", 1), ("1", 1), ("2", 2), (" 4 ", 4)])
def test_cpu_processes_come_from_the_environment(value, procs):
    assert launch.cpu_processes({} if value is None else {launch.CPU_PROCESSES: value}) == procs


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_cpu_process_count_is_refused_by_name(value, gpus, started, monkeypatch, capsys):
    gpus(0)
    monkeypatch.setenv(launch.CPU_PROCESSES, value)
    assert launch.main(["--gpus", "8", "--threads", "2", "--", "train", "--config", "c.yaml"]) == 2
    assert f"launch: {launch.CPU_PROCESSES}={value!r}: expected a positive integer" in capsys.readouterr().err
    assert not started


def test_a_fake_gpu_slurm_job_trains_with_the_asked_cpu_processes(gpus, started, monkeypatch):
    """The rehearsal's train job: 8 fake GPUs asked, none seen (allowed), 2 gloo processes, the allocation's CPUs
    shared between them."""
    gpus(0)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv(launch.ALLOW_MISSING_GPUS, "1")
    monkeypatch.setenv(launch.CPU_PROCESSES, "2")
    with pytest.raises(_Exec):
        launch.main(["--gpus", "8", "--threads", "2", "--slurm-cpus", "4", "--", "train", "--config", "c.yaml"])
    assert started["argv"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert started["env"]["OMP_NUM_THREADS"] == "2"
