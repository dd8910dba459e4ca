"""Training loop: run directory contents, overfitting, SIGKILL + resume bitwise, divergence, precision options."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_coco import tiny_config, write_coco

from retinanet.config import dump, load, to_dict
from retinanet.engine import checkpoint
from retinanet.engine.evaluate import evaluate_run, load_run
from retinanet.engine.log_window import LOG_KEYS
from retinanet.engine.precision import set_tf32, tf32_state
from retinanet.engine.solver import WarmupMultiStepSchedule, plan_batch
from retinanet.engine.train import train

REPO = Path(__file__).resolve().parent.parent


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _weights_equal(a: Path, b: Path) -> bool:
    wa, wb = checkpoint.load(a)["model"], checkpoint.load(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_smoke_run_writes_the_run_directory(tmp_path):
    write_coco(tmp_path / "data", num_images=4)
    cfg = tiny_config(tmp_path / "data", {"solver": {"iterations": 4, "warmup_iters": 2, "steps": [0.75]}})
    run = tmp_path / "run"
    set_tf32(True)  # torch's own default has TF32 convolutions: train must apply allow_tf32 (false) itself
    result = train(cfg, run)
    assert result["status"] == "completed" and result["iteration"] == 4 and result["wall_s"] > 0
    assert json.loads((run / "result.json").read_text()) == result
    assert result["batch"] == plan_batch(cfg.solver, 1).to_dict()
    assert load(run / "config.resolved.yaml") == cfg
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["packages"]["torch"] and prov["git"].keys() == {"commit", "dirty"}
    assert {"git", "host", "device", "batch", "precision", "channels_last", "data"} <= set(prov)
    assert prov["device"]["type"] == "cpu" and prov["device"]["name"] and prov["data"]["images"] == 4
    assert prov["device"]["tf32"] == {"matmul": False, "cudnn": False}
    log = _log(run)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    assert all(set(LOG_KEYS) <= set(r) for r in log)
    schedule = WarmupMultiStepSchedule(cfg.solver, 0.01)
    assert [r["lr"] for r in log] == pytest.approx([schedule(i) for i in range(4)])
    assert [r["lr"] for r in log] == pytest.approx([0.01 / 3, 0.01 * (2 / 3), 0.01, 0.001])
    assert all(r["loss"] == pytest.approx(r["loss_cls"] + r["loss_box"]) and r["num_fg"] > 0 for r in log)
    final = checkpoint.load(run / "model_final.pt")
    assert final["iteration"] == 4 and final["config"] == to_dict(cfg)
    assert not (run / "checkpoints" / "last.pt").exists()  # a completed run keeps no training state
    set_tf32(True)
    _, model, _ = load_run(run)  # evaluate, time and loss samples load the run here
    assert not model.training and tf32_state() == {"matmul": False, "cudnn": False}
    # a finished run is not trained again by --resume auto
    assert train(cfg, run, resume=True) == result


def test_overfit_a_handful_of_images(tmp_path):
    """4 images with one object each, 120 steps: the detector must fit them (AP > 50 on the same images)."""
    write_coco(tmp_path / "data", num_images=4, seed=1)
    cfg = tiny_config(tmp_path / "data", {"solver": {"iterations": 120, "warmup_iters": 20, "steps": [0.8],
                                                     "clip_grad_norm": 5.0, "log_period": 20,
                                                     "checkpoint_period": 1000}})
    assert train(cfg, tmp_path / "run")["status"] == "completed"
    metrics = evaluate_run(tmp_path / "run", tmp_path / "eval")
    assert metrics["AP"] > 50.0, metrics
    log = _log(tmp_path / "run")
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]


RESUME = {"data": {"train_min_sizes": [48, 64], "hflip": True, "aspect_grouping": True},
          "solver": {"iterations": 12, "checkpoint_period": 2, "log_period": 1, "warmup_iters": 2, "steps": [0.5],
                     "base_lr": 0.005}}


def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    write_coco(tmp_path / "data", num_images=5, sizes=[(64, 64), (48, 64), (64, 80), (64, 64), (56, 64)])
    cfg = tiny_config(tmp_path / "data", RESUME)
    config_file = tmp_path / "run.yaml"
    dump(cfg, config_file)
    reference = tmp_path / "reference"
    train(cfg, reference)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "retinanet", "train", "--config", str(config_file),
                             "--out", str(killed), "--resume", "auto"], cwd=REPO, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert last.exists() and not (killed / "result.json").exists() and not (killed / "model_final.pt").exists()
    stopped_at = checkpoint.load(last)["iteration"]
    assert 0 < stopped_at < 12

    # a run folder of another scientific config is not resumed: its content moves to RUNDIR.previous and the run
    # trains from scratch (on a copy here; the interrupted run loses nothing)
    shutil.copytree(killed, tmp_path / "other")
    other = tiny_config(tmp_path / "data", {**RESUME, "solver": {**RESUME["solver"], "base_lr": 0.01,
                                                                 "iterations": 2}})
    assert train(other, tmp_path / "other", resume=True)["iteration"] == 2
    assert json.loads((tmp_path / "other" / "provenance.json").read_text())["resumed_from"] == 0
    assert checkpoint.load(tmp_path / "other.previous" / "checkpoints" / "last.pt")["iteration"] == stopped_at
    assert not (tmp_path / "other.previous" / "job.lock").exists()  # the lock stays with the folder's job
    assert checkpoint.load(last)["iteration"] == stopped_at and not (killed / "result.json").exists()

    result = train(load(config_file), killed, resume=True)
    assert result["status"] == "completed" and result["iteration"] == 12
    assert json.loads((killed / "provenance.json").read_text())["resumed_from"] == stopped_at
    assert _weights_equal(reference / "model_final.pt", killed / "model_final.pt")
    assert not last.exists()
    ref_log, res_log = _log(reference), _log(killed)
    assert [r["iteration"] for r in res_log] == list(range(1, 13))
    for key in ("loss", "loss_cls", "loss_box", "lr", "num_fg"):
        assert [r[key] for r in res_log] == [r[key] for r in ref_log], key


def test_divergence_ends_cleanly_with_status_diverged(tmp_path):
    """CE (gamma 0, no alpha) with the plain zero bias init and a high lr: the loss blows up (section 5.1)."""
    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"loss": {"gamma": 0.0, "alpha": None}, "model": {"cls_bias_init": "zero"},
                                          "solver": {"base_lr": 10.0, "iterations": 30, "checkpoint_period": 1}})
    config_file = tmp_path / "run.yaml"
    dump(cfg, config_file)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "retinanet", "train", "--config", str(config_file), "--out",
                           str(run)], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "diverged" and 1 <= result["iteration"] <= 30
    assert not (run / "model_final.pt").exists()
    for row in _log(run):
        assert row["iteration"] < result["iteration"]
    if (run / "checkpoints" / "last.pt").exists():  # only checkpoints of finite weights
        weights = checkpoint.load(run / "checkpoints" / "last.pt")["model"]
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    metrics = evaluate_run(run, tmp_path / "eval")
    assert metrics["status"] == "diverged" and metrics["AP"] == 0.0
    (run / "result.json").unlink()  # as Snakemake does before it reruns the job: the diverged run is not retrained
    assert train(load(config_file), run, resume=True) == result


def test_bf16_and_channels_last_are_applied_and_recorded(tmp_path):
    """256-px inputs: with torch 2.14 on CPU, bf16 autocast gives NaN weight gradients for a stride-2 conv whose
    input is 1 pixel high or wide (P7 on a 64-px image); at 256 px every level is at least 2 x 2."""
    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"precision": "bf16", "channels_last": True, "solver": {"iterations": 2},
                                          "data": {"min_size": 256, "max_size": 256, "size_divisibility": 128}})
    result = train(cfg, tmp_path / "run")
    assert result["status"] == "completed" and result["precision"] == "bf16" and result["channels_last"]
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["precision"] == "bf16" and prov["channels_last"] is True
    weight = checkpoint.load(tmp_path / "run" / "model_final.pt")["model"]["backbone.body.conv1.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    fp32 = tiny_config(tmp_path / "data", {"solver": {"iterations": 2},
                                           "data": {"min_size": 256, "max_size": 256, "size_divisibility": 128}})
    train(fp32, tmp_path / "fp32")
    bf16_loss, fp32_loss = _log(tmp_path / "run")[0]["loss"], _log(tmp_path / "fp32")[0]["loss"]
    assert bf16_loss != fp32_loss and bf16_loss == pytest.approx(fp32_loss, rel=0.05)  # same model, bf16 math
    assert yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())["precision"] == "bf16"


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_a_finished_run_is_reused_unless_its_identity_changes(tmp_path, capsys):
    """A rerun after Snakemake deleted result.json, or with other operational fields (data root, workers,
    checkpoint and log periods, threads), reuses model_final.pt; a scientific field or the training annotations'
    content retrains, and the log names what changed."""
    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"solver": {"iterations": 2}})
    run = tmp_path / "run"
    result = train(cfg, run)
    final = _mtime(run / "model_final.pt")

    (run / "result.json").unlink()  # Snakemake deletes a job's output before rerunning it (--forcerun, params)
    capsys.readouterr()
    assert train(cfg, run, resume=True) == result
    assert "reusing finished run" in capsys.readouterr().err
    assert _mtime(run / "model_final.pt") == final and json.loads((run / "result.json").read_text()) == result

    shutil.copytree(tmp_path / "data", tmp_path / "moved")  # the dataset under another root
    operational = tiny_config(tmp_path / "moved", {"data": {"num_workers": 2}, "threads": 2,
                                                   "solver": {"iterations": 2, "checkpoint_period": 1,
                                                              "log_period": 2}})
    (run / "result.json").unlink()
    assert train(operational, run, resume=True) == result
    assert _mtime(run / "model_final.pt") == final
    assert load(run / "config.resolved.yaml") == operational  # evaluation reads today's data root from here

    capsys.readouterr()
    science = tiny_config(tmp_path / "moved", {"loss": {"alpha": 0.5}, "solver": {"iterations": 2}})
    assert train(science, run, resume=True)["status"] == "completed"
    err = capsys.readouterr().err
    assert "retraining" in err and "loss.alpha: 0.25 -> 0.5" in err and "data.root" not in err
    assert _mtime(run / "model_final.pt") != final and (tmp_path / "run.previous" / "model_final.pt").is_file()

    write_coco(tmp_path / "moved", num_images=2, seed=5)  # same path, other annotations
    capsys.readouterr()
    train(science, run, resume=True)
    assert "content of data.train_annotations: sha256:" in capsys.readouterr().err


def test_a_run_folder_from_before_the_run_record_is_reused(tmp_path, capsys):
    """Folders trained before run.json existed are judged by config.resolved.yaml and result.json."""
    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"solver": {"iterations": 2}})
    run = tmp_path / "run"
    result = train(cfg, run)
    (run / "run.json").unlink()
    final = _mtime(run / "model_final.pt")
    capsys.readouterr()
    assert train(tiny_config(tmp_path / "data", {"solver": {"iterations": 2}, "threads": 2}), run,
                 resume=True) == result
    assert "reusing finished run" in capsys.readouterr().err and _mtime(run / "model_final.pt") == final
    assert json.loads((run / "run.json").read_text())["result"] == result
    # and where Snakemake deleted result.json before rerunning the job, the result is rebuilt from the folder
    (run / "run.json").unlink()
    (run / "result.json").unlink()
    recovered = train(cfg, run, resume=True)
    assert _mtime(run / "model_final.pt") == final
    assert {k: recovered[k] for k in ("status", "iteration", "batch")} == {k: result[k] for k in
                                                                          ("status", "iteration", "batch")}
    assert 0 < recovered["wall_s"] <= result["wall_s"] and "recovered" in recovered
