"""Stopping before a job is killed (retinanet/engine/preemption.py): a signal mid-run saves a checkpoint and exits with
the retry status; the retried job resumes there and ends bitwise equal to an uninterrupted run. Wall time adds up
over the attempts (retinanet/rundir/attempts.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_coco import tiny_config, write_coco

from retinanet.config import dump
from retinanet.engine import checkpoint, preemption
from retinanet.engine.train import train
from retinanet.rundir import attempts

REPO = Path(__file__).resolve().parent.parent

STOPPED = {"data": {"train_min_sizes": [48, 64], "hflip": True, "aspect_grouping": True, "num_workers": 1},
           "solver": {"iterations": 12, "checkpoint_period": 1000, "log_period": 1, "warmup_iters": 2,
                      "steps": [0.5], "base_lr": 0.005}}
"""Augmentation, a data-loader worker, and no periodic checkpoint: the only checkpoint is the one the stop writes."""


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_sigterm_to_the_job_checkpoints_exits_75_and_the_retries_end_bitwise_equal(tmp_path, monkeypatch):
    write_coco(tmp_path / "data", num_images=5, sizes=[(64, 64), (48, 64), (64, 80), (64, 64), (56, 64)])
    cfg = tiny_config(tmp_path / "data", STOPPED)
    config_file, run, last = tmp_path / "run.yaml", tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"
    dump(cfg, config_file)
    reference = train(cfg, tmp_path / "reference")

    # SIGTERM to every process of the job (as SLURM sends it at a time limit or preemption), data worker included
    proc = subprocess.Popen([sys.executable, "-m", "retinanet", "train", "--config", str(config_file), "--out",
                             str(run), "--resume", "auto"], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if (run / "log.jsonl").is_file() and len((run / "log.jsonl").read_text().splitlines()) >= 3:
            os.killpg(proc.pid, signal.SIGTERM)
            break
        time.sleep(0.005)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == preemption.RETRY_EXIT, err
    stopped_at = checkpoint.load(last)["iteration"]
    assert 3 <= stopped_at < 12 and f"stopped by SIGTERM after iteration {stopped_at}" in err
    assert not (run / "result.json").exists() and not (run / "model_final.pt").exists()
    assert [a["end"] for a in attempts.read(run)] == ["stopped by SIGTERM"]

    # the retried job is stopped again by its own deadline (SIGUSR1), one iteration later
    monkeypatch.setenv(preemption.STOP_AT, str(time.time()))
    with pytest.raises(preemption.Stopped) as stop:
        train(cfg, run, resume=True)
    assert stop.value.signal_name == "SIGUSR1" and checkpoint.load(last)["iteration"] == stop.value.iteration
    assert stop.value.iteration > stopped_at
    monkeypatch.delenv(preemption.STOP_AT)

    result = train(cfg, run, resume=True)
    assert result["status"] == "completed" and result["iteration"] == 12 and result["attempts"] == 3
    ends = [(a["from_iteration"], a["to_iteration"], a["end"]) for a in attempts.read(run)]
    assert ends == [(0, stopped_at, "stopped by SIGTERM"), (stopped_at, stop.value.iteration, "stopped by SIGUSR1"),
                    (stop.value.iteration, 12, "completed")]
    assert result["wall_s"] == pytest.approx(attempts.total_seconds(attempts.read(run)))
    assert result["wall_s"] > reference["wall_s"] / 2
    final, ref = checkpoint.load(run / "model_final.pt")["model"], checkpoint.load(tmp_path / "reference" /
                                                                                     "model_final.pt")["model"]
    assert all(torch.equal(final[k], ref[k]) for k in ref)
    assert [r["iteration"] for r in _log(run)] == list(range(1, 13))
    assert [r["loss"] for r in _log(run)] == [r["loss"] for r in _log(tmp_path / "reference")]


def test_the_deadline_is_the_slurm_job_end_minus_the_margin(tmp_path, monkeypatch):
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\necho 2031-05-04T03:02:01\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    end = time.mktime((2031, 5, 4, 3, 2, 1, 0, 0, -1))
    at, why = preemption.deadline({"SLURM_JOB_ID": "12"})
    assert at == pytest.approx(end - preemption.MARGIN_S) and "SLURM job 12 ends" in why
    assert preemption.deadline({"SLURM_JOB_ID": "12", preemption.MARGIN: "60"})[0] == pytest.approx(end - 60)
    assert preemption.deadline({preemption.STOP_AT: "100.5", "SLURM_JOB_ID": "12"})[0] == 100.5
    assert preemption.deadline({}) == (None, "no time limit")
    squeue.write_text("#!/bin/sh\necho UNLIMITED\n")
    assert preemption.deadline({"SLURM_JOB_ID": "12"})[0] is None
