"""benchmarks/gpu_check.py at toy sizes on the CPU: every check runs and makes its row; the paper config's loss
falls. (On a GPU the same code runs at full sizes: docs/benchmarks.md, 'On a GPU'.)"""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.slow
def test_gpu_check_runs_every_check_at_toy_size(capsys) -> None:
    assert gpu_check.main(["--toy", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Device: ") and f"torch {torch.__version__}" in lines[0]
    assert lines[1].startswith("Focal loss kernel at paper size: ")
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ") and "---" not in line]
    assert rows == ["check", "train step throughput", "focal loss fwd+bwd time", "focal loss values",
                    "inference incl. post-processing", "paper config, fp32: training loss falls",
                    "paper config, bf16: training loss falls", "paper config, fp16: training loss falls"]
    assert "| ok |" in next(line for line in lines if line.startswith("| focal loss values"))
    assert "skipped: on the CPU" in next(line for line in lines if "fp16: training" in line)


def test_paper_config_loss_falls_and_a_failure_is_reported(monkeypatch) -> None:
    check, curve = gpu_check.check_paper_training(gpu_check.TOY, torch.device("cpu"))
    assert check.ok and len(curve) == gpu_check.TOY.paper_iterations
    assert sum(curve[-3:]) < sum(curve[:3]) and check.verdict == "ok"
    assert "R-18-FPN, 80 classes, lr 0.00125" in check.setting  # the paper's head and lr per image
    failed = gpu_check.Report([], [check, gpu_check.Check("x", "-", "-", "-", "-", ok=False)], {})
    assert not failed.ok and "**FAILED**" in gpu_check.table(failed.checks)
