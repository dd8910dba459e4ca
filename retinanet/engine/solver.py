"""SGD, the effective batch, and the learning-rate schedule (section 5, 'Optimization'; warmup from Detectron).

The paper trains with 16 images per iteration (8 GPUs x 2 images), lr 0.01, divided by 10 at 60k and 80k of
90k iterations. The steps are stored as fractions of the schedule so shorter schedules scale. Detectron
warms up linearly over 500 iterations from lr / 3.

With fewer processes than the paper (``solver.batch_policy``):

- ``accumulate``: each optimizer step sums gradients over ``batch_size / (world_size * images_per_process)``
  forward/backward passes, so the effective batch stays ``batch_size``; lr = base_lr * batch_size /
  reference_batch (the linear scaling rule, identity at the paper's 16 / 16).
- ``scale_lr``: one pass per step, effective batch ``world_size * images_per_process``, lr scaled linearly to it.

Either way the plan is recorded in the run (``provenance.json``, ``result.json``).

Biases (Detectron, not in the paper): every trainable ``*.bias`` parameter trains at ``solver.bias_lr_factor`` (2)
times the lr and without weight decay (``solver.bias_weight_decay: false``), as Detectron's optimizer did; the
schedule scales each parameter group's lr, so the 2:1 ratio holds through warmup and steps.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass

import torch

from retinanet.config import ConfigError, SolverConfig


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is made on this job's processes."""

    policy: str
    world_size: int
    images_per_process: int
    accumulation_steps: int
    effective_batch: int
    lr: float
    """Peak learning rate after batch scaling (before warmup and steps)."""

    def to_dict(self) -> dict:
        return asdict(self)


def plan_batch(cfg: SolverConfig, world_size: int) -> BatchPlan:
    """The accumulation steps, effective batch and lr for ``world_size`` processes (see module docstring)."""
    per_pass = world_size * cfg.images_per_process
    if cfg.batch_policy == "accumulate":
        if cfg.batch_size % per_pass:
            raise ConfigError(f"solver.batch_size: {cfg.batch_size} is not a multiple of world size {world_size} x "
                              f"solver.images_per_process {cfg.images_per_process}; use solver.batch_policy "
                              f"'scale_lr' or change images_per_process")
        steps = cfg.batch_size // per_pass
        effective = cfg.batch_size
    else:
        steps = 1
        effective = per_pass
    return BatchPlan(policy=cfg.batch_policy, world_size=world_size, images_per_process=cfg.images_per_process,
                     accumulation_steps=steps, effective_batch=effective,
                     lr=cfg.base_lr * effective / cfg.reference_batch)


def param_groups(model: torch.nn.Module, cfg: SolverConfig) -> list[dict]:
    """The trainable parameters as SGD parameter groups, each with its ``weight_decay`` and ``lr_factor`` (the
    multiple of the scheduled lr it trains at, :meth:`WarmupMultiStepSchedule.apply`).

    Detectron (``detectron/modeling/optimizer.py``, ``add_single_gpu_param_update_ops``) treated biases apart "to
    match historical impl. details": their gradient was scaled by 2 (= 2x lr under momentum SGD) and got no weight
    decay; every other parameter got lr and ``weight_decay``. Here a bias is a trainable parameter whose name ends in
    ``bias`` (conv and head biases; the affine shift of a trained BN or GN); frozen parameters (``requires_grad``
    False: frozen BN, frozen stages) are left out. With ``bias_lr_factor`` 1 and ``bias_weight_decay`` true (or no
    weight decay at all) there is one group, every parameter at lr with ``weight_decay``.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    bias_decay = cfg.weight_decay if cfg.bias_weight_decay else 0.0
    if cfg.bias_lr_factor == 1.0 and bias_decay == cfg.weight_decay:
        return [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay, "lr_factor": 1.0}]
    groups = [
        {"params": [p for n, p in named if not _is_bias(n)], "weight_decay": cfg.weight_decay, "lr_factor": 1.0},
        {"params": [p for n, p in named if _is_bias(n)], "weight_decay": bias_decay,
         "lr_factor": cfg.bias_lr_factor},
    ]
    return [g for g in groups if g["params"]]


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


def build_optimizer(model: torch.nn.Module, cfg: SolverConfig) -> torch.optim.SGD:
    """SGD with momentum over :func:`param_groups` (weights: lr, ``weight_decay``; biases: Detectron's 2x lr, no
    decay). The lr is set on every group each step by the schedule.

    The update is torch's fused SGD kernel (one pass per parameter; the same update as the default ``foreach``
    form up to float rounding, ~3x faster on CPU: 3 ms instead of 8.5 ms per mini step here).
    """
    groups = param_groups(model, cfg)
    for group in groups:
        group["lr"] = cfg.base_lr * group["lr_factor"]
    return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)


class WarmupMultiStepSchedule:
    """lr(it) = lr * warmup(it) * gamma ** (number of steps <= it), for iterations it = 0 .. iterations - 1.

    warmup(it) = warmup_factor * (1 - it / warmup_iters) + it / warmup_iters for it < warmup_iters, else 1
    (Detectron's linear warmup). Steps at ``round(fraction * iterations)``. A pure function of the iteration,
    so resuming needs only the iteration; :meth:`state_dict` stores the parameters to check they did not change.
    """

    def __init__(self, cfg: SolverConfig, lr: float) -> None:
        self.lr = lr
        self.milestones = [round(f * cfg.iterations) for f in cfg.steps]
        self.gamma = cfg.gamma
        self.warmup_iters = cfg.warmup_iters
        self.warmup_factor = cfg.warmup_factor

    def __call__(self, iteration: int) -> float:
        factor = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            factor = self.warmup_factor * (1.0 - alpha) + alpha
        return self.lr * factor * self.gamma ** bisect_right(self.milestones, iteration)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set ``optimizer``'s lr for ``iteration``: the scheduled lr times each group's ``lr_factor`` (1 when the
        group has none; biases: ``solver.bias_lr_factor``). Return the scheduled lr (the weights' lr)."""
        lr = self(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)
        return lr

    def state_dict(self) -> dict:
        return {"lr": self.lr, "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup_iters": self.warmup_iters, "warmup_factor": self.warmup_factor}

    def load_state_dict(self, state: dict) -> None:
        """Check that a resumed run has the same schedule (it is recomputed from the config, not restored)."""
        if state != self.state_dict():
            raise ConfigError(f"solver: the checkpoint's schedule {state} differs from this run's "
                              f"{self.state_dict()}")
