"""The training log's lines (``log.jsonl`` in a run folder): each the mean over the steps since the previous line.

Losses arrive per step as sums over the step's forward/backward passes (accumulation steps x processes); a line
divides by those passes, and ``num_fg`` by the effective batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from retinanet.engine.solver import BatchPlan

LOG_KEYS = ("iteration", "loss_cls", "loss_box", "loss", "lr", "num_fg", "s_per_iter", "images_per_s")
"""Each log line: ``iteration`` (completed steps), the losses and ``num_fg`` (foreground anchors per image) as means
over the steps since the previous line and over the effective batch, ``lr`` of the last step, ``s_per_iter`` (mean
wall time per step) and ``images_per_s`` (effective batch / s_per_iter)."""


class LogWindow:
    """The steps since the last log line: each step's summed losses and fg count, and when the window began."""

    def __init__(self, plan: BatchPlan, world_size: int) -> None:
        self.plan, self.passes = plan, plan.accumulation_steps * world_size
        self.sums: list[torch.Tensor] = []
        self.started = time.perf_counter()

    def add(self, sums: torch.Tensor) -> None:
        self.sums.append(sums[:3].cpu())

    def line(self, done: int, lr: float) -> dict[str, Any]:
        """The log line after step ``done`` (:data:`LOG_KEYS`); the next window starts now."""
        now = time.perf_counter()
        mean = torch.stack(self.sums).mean(0)
        s_per_iter = (now - self.started) / len(self.sums)
        passes, batch = self.passes, self.plan.effective_batch
        line = {"iteration": done, "loss_cls": mean[0].item() / passes, "loss_box": mean[1].item() / passes,
                "loss": (mean[0].item() + mean[1].item()) / passes, "lr": lr, "num_fg": mean[2].item() / batch,
                "s_per_iter": s_per_iter, "images_per_s": batch / s_per_iter}
        self.sums, self.started = [], now
        return line
