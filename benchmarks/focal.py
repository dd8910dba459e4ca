"""Focal loss forward + backward: ``retinanet.modeling.losses.focal_loss`` vs ``torchvision.ops.sigmoid_focal_loss``.

Inputs: ``[R, K]`` float32 logits (requires grad) drawn N(0, 3^2) with the prior bias -log(99) added (most
anchors are confident background, as in training) and one-hot targets on ~1% of anchors. Both compute
gamma=2, alpha=0.25, summed, then ``backward()``.

Peak extra memory is measured in a fresh subprocess per variant: after one warm-up call on 2^20 elements (lazy
initialization, and the one-time compilation of our kernel) and once the inputs exist, the kernel's resident-set
high-water mark is reset (``/proc/self/clear_refs``) and one forward + backward is run; extra = ``VmHWM - VmRSS``
before the call. The gradient (``logits.grad``) is part of the extra memory on both sides.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from retinanet.modeling import focal_kernels
from retinanet.modeling.losses import focal_loss

GAMMA, ALPHA = 2.0, 0.25


def inputs(anchors: int, classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(logits [R, K] requiring grad, targets [R, K])``."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(anchors, classes, generator=g) * 3.0 - math.log(99.0)
    targets = torch.zeros(anchors, classes)
    fg = torch.randperm(anchors, generator=g)[: max(1, anchors // 100)]
    targets[fg, torch.randint(0, classes, (fg.numel(),), generator=g)] = 1.0
    return logits.requires_grad_(), targets


def ours(logits: Tensor, targets: Tensor) -> Tensor:
    return focal_loss(logits, targets, gamma=GAMMA, alpha=ALPHA).sum()


def peer(logits: Tensor, targets: Tensor) -> Tensor:
    return sigmoid_focal_loss(logits, targets, alpha=ALPHA, gamma=GAMMA, reduction="sum")


VARIANTS = {"ours": ours, "peer": peer}


def one_pass_bound(logits: Tensor, targets: Tensor) -> Callable[[], tuple[Tensor, Tensor]]:
    """The memory traffic of one fused pass and nothing else: read logits and targets, write two arrays of their
    size (the loss and the gradient) into buffers allocated once. Its time bounds any forward + backward from below
    on this machine (memory bandwidth: 4 arrays x 4 bytes per element)."""
    x, t = logits.detach(), targets
    loss, grad = torch.empty_like(x), torch.empty_like(x)

    def call() -> tuple[Tensor, Tensor]:
        return loss.copy_(x), grad.copy_(t)
    return call


def step(fn, logits: Tensor, targets: Tensor) -> Tensor:
    """One forward + backward; returns the loss."""
    logits.grad = None
    loss = fn(logits, targets)
    loss.backward()
    return loss.detach()


def compare_values(anchors: int, classes: int) -> dict[str, float]:
    """Relative difference of the summed loss and max abs difference of the gradients (where torchvision's is
    finite)."""
    logits, targets = inputs(anchors, classes)
    lo = step(ours, logits, targets)
    go = logits.grad.clone()
    lp = step(peer, logits, targets)
    gp = logits.grad
    finite = torch.isfinite(gp)
    return {"loss_rel_diff": float((lo - lp).abs() / lp.abs()),
            "grad_max_abs_diff": float((go - gp)[finite].abs().max()),
            "grad_max_abs": float(gp[finite].abs().max())}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure_memory(variant: str, anchors: int, classes: int, threads: int) -> int:
    """In this process: peak extra bytes of one forward + backward of ``variant``."""
    torch.set_num_threads(threads)
    fn = VARIANTS[variant]
    # Warm up on an input of 2^20 elements (1/8 of the measured one): torch's lazy initialization (thread pools,
    # dispatch tables) and, for ours, the one-time compilation of its kernel (dynamic shapes: the measured size
    # reuses it). What is measured is the memory of a training step, not start-up; a full-size warm-up would leave
    # its freed pages resident and hide the peer's temporaries.
    step(fn, *inputs(focal_kernels._COMPILE_MIN_ELEMENTS // classes + 1, classes))
    logits, targets = inputs(anchors, classes)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    step(fn, logits, targets)
    return (_status_kib("VmHWM") - before) * 1024


def peak_extra_memory(variant: str, anchors: int, classes: int, threads: int) -> int:
    """Peak extra bytes of one forward + backward, measured in a fresh subprocess."""
    code = (f"import json; from benchmarks.focal import _measure_memory; "
            f"print(json.dumps(_measure_memory({variant!r}, {anchors}, {classes}, {threads})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))
