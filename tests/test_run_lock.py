"""One training job per run folder (retinanet/rundir/lock.py): a second job is refused while the first one lives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_coco import tiny_config, write_coco

from retinanet.config import dump
from retinanet.engine.train import train
from retinanet.rundir import lock as run_lock
from retinanet.rundir.lock import RunBusyError

REPO = Path(__file__).resolve().parent.parent


def test_a_second_job_on_a_run_folder_is_refused_while_the_first_one_runs(tmp_path):
    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"solver": {"iterations": 100000, "checkpoint_period": 100000,
                                                     "log_period": 1000}})
    config_file, run = tmp_path / "run.yaml", tmp_path / "run"
    dump(cfg, config_file)
    first = subprocess.Popen([sys.executable, "-m", "retinanet", "train", "--config", str(config_file), "--out",
                              str(run), "--resume", "auto"], cwd=REPO, env={**os.environ, "SLURM_JOB_ID": "4242"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "run.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None and (run / "run.json").is_file()
        record = (run / "run.json").read_text()
        holder = f"pid {first.pid} on host {socket.gethostname()}, SLURM job 4242, since "
        with pytest.raises(RunBusyError, match=f"{run}: another training job is running in this run folder "
                                               f"\\({holder}"):
            train(cfg, run, resume=True)
        assert (run / "run.json").read_text() == record  # the refused job touched nothing
    finally:
        first.kill()
        first.wait()
    with run_lock.hold(run):  # the killed job's lock went with its process
        assert json.loads((run / run_lock.LOCK).read_text())["pid"] == os.getpid()
    with run_lock.hold(run):  # and a finished block releases it
        pass


def test_the_holder_is_described_even_when_not_recorded_yet():
    assert run_lock.describe("") == "holder not recorded yet"
    assert run_lock.describe('{"pid": 7, "host": "n1", "slurm_job_id": null, "started": "t"}') == \
        "pid 7 on host n1, not a SLURM job, since t"
