"""DDP under torchrun (2 CPU processes, gloo) equals 1 process with gradient accumulation; device choice."""

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

from retinanet.config import ConfigError, dump
from retinanet.engine import checkpoint
from retinanet.engine.distributed import resolve_device
from retinanet.engine.train import seed_everything, train
from retinanet.modeling.detector import build_model

REPO = Path(__file__).resolve().parent.parent


def test_two_gloo_processes_match_one_process_with_accumulation(tmp_path):
    """Effective batch 4: 2 processes x 2 images vs 1 process x 2 images x 2 accumulation steps.

    GroupNorm keeps each image's forward independent of its batch-mates; the per-process loss normalizer
    (Detectron's) is the same in both layouts because each micro-batch holds the same 2 images.
    """
    write_coco(tmp_path / "data", num_images=6, seed=4)
    cfg = tiny_config(tmp_path / "data", {"solver": {"batch_size": 4, "reference_batch": 4, "iterations": 3,
                                                     "checkpoint_period": 1000, "log_period": 1}})
    config_file = tmp_path / "run.yaml"
    dump(cfg, config_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "retinanet", "train", "--config", str(config_file), "--out"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, str(tmp_path / "ddp")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    train(cfg, tmp_path / "single")  # in this process (one torch thread, like the workers)

    results = {name: json.loads((tmp_path / name / "result.json").read_text()) for name in ("ddp", "single")}
    assert results["ddp"]["batch"]["world_size"] == 2 and results["ddp"]["batch"]["accumulation_steps"] == 1
    assert results["single"]["batch"]["world_size"] == 1 and results["single"]["batch"]["accumulation_steps"] == 2
    a = checkpoint.load(tmp_path / "ddp" / "model_final.pt")["model"]
    b = checkpoint.load(tmp_path / "single" / "model_final.pt")["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    logs = {name: [json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("ddp", "single")}
    for x, y in zip(logs["ddp"], logs["single"], strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4) and x["num_fg"] == pytest.approx(y["num_fg"])
    # the weights did move: the comparison is not trivially between two initializations
    seed_everything(cfg.seed)
    fresh = build_model(cfg).state_dict()
    moved = sum(not torch.equal(fresh[k], b[k]) for k in b if b[k].is_floating_point())
    assert moved > 0


def test_a_run_checkpointed_by_two_processes_resumes_on_one(tmp_path):
    """A run of 2 gloo processes stopped by SIGTERM to torchrun (which passes it on to its workers, each in its own
    session; they save the checkpoint and exit) resumes in 1 process (2 accumulation steps, rank 0's RNG state)
    and ends where an uninterrupted 1-process run ends (to DDP's rounding, as above)."""
    write_coco(tmp_path / "data", num_images=6, seed=4)
    cfg = tiny_config(tmp_path / "data", {"solver": {"batch_size": 4, "reference_batch": 4, "iterations": 10,
                                                     "checkpoint_period": 2, "log_period": 1}})
    config_file, run = tmp_path / "run.yaml", tmp_path / "run"
    dump(cfg, config_file)
    last = run / "checkpoints" / "last.pt"
    with open(tmp_path / "ddp.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", "-m", "retinanet", "train", "--config", str(config_file), "--out", str(run),
                                 "--resume", "auto"], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    state = checkpoint.load(last)
    assert len(state["rng"]["ranks"]) == 2 and 0 < state["iteration"] < 10, (tmp_path / "ddp.log").read_text()
    assert "exit 75 to be retried" in (tmp_path / "ddp.log").read_text()

    result = train(cfg, run, resume=True)
    assert result["status"] == "completed" and result["batch"]["world_size"] == 1
    assert json.loads((run / "provenance.json").read_text())["resumed_from"] == state["iteration"]
    train(cfg, tmp_path / "single")
    a = checkpoint.load(run / "model_final.pt")["model"]
    b = checkpoint.load(tmp_path / "single" / "model_final.pt")["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device: 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device: 'cuda' requested but CUDA is not available"):
            resolve_device("cuda")
