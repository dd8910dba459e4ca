"""What a run ran on: git commit, package versions, host, device (written to ``RUNDIR/provenance.json``)."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from retinanet.engine.precision import tf32_state

PACKAGES = ("torch", "torchvision", "numpy", "pycocotools", "pillow", "pyyaml")


def git_state(repo: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository holding this package."""
    repo = repo or Path(__file__).resolve().parents[2]  # the checkout: retinanet/rundir/provenance.py

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], check=False, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: torch.device) -> dict[str, Any]:
    """Device name (GPU model or CPU), count, CUDA/cuDNN versions, threads, the TF32 switches in effect
    (``tf32``: ``{"matmul", "cudnn"}``, :func:`retinanet.engine.precision.tf32_state`; they matter on Ampere and
    newer) and, on CUDA, whether cuDNN autotunes its algorithms (``cudnn_benchmark``)."""
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads(), "tf32": tf32_state()}
    if device.type == "cuda":
        info.update(name=torch.cuda.get_device_name(device), count=torch.cuda.device_count(),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    else:
        info.update(name=_cpu_name(), count=1)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(device: torch.device, **extra: Any) -> dict[str, Any]:
    """The provenance record; ``extra`` adds run-specific entries (batch plan, precision, data report)."""
    return {"time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git": git_state(), "packages": package_versions(),
            "host": {"hostname": socket.gethostname(), "platform": platform.platform()},
            "device": device_info(device), "argv": sys.argv, **extra}
