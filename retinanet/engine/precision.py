"""Arithmetic and backend switches set from the run config: TF32, autocast with loss scaling, cuDNN autotuning.

fp32 means fp32. On Ampere and newer NVIDIA GPUs, PyTorch may run fp32 matmuls
(``torch.backends.cuda.matmul.allow_tf32``) and cuDNN convolutions (``torch.backends.cudnn.allow_tf32``, on by
default) in TF32, with a 10-bit mantissa. The paper's fp32 was full fp32: it predates TF32 (introduced with Ampere
in 2020; the paper times on an Nvidia M40, Fig. 2), so ``allow_tf32`` defaults to false and both switches are set
explicitly, whatever torch's defaults are. On CPU they change nothing. The effective values go into each run's
provenance (``device.tf32``).

Mixed precision (``precision``): ``bf16`` autocasts to bfloat16, which has fp32's exponent range, so gradients
need no scaling; ``fp16`` autocasts to float16 (pre-Ampere GPUs: the V100's tensor cores take fp16, not bf16) and
scales the loss (:func:`grad_scaler`): gradients below fp16's smallest subnormal (6e-8) would otherwise flush to zero.
The scaler multiplies the loss by S (65536 at first) before backward and divides the gradients by S before clipping and
the SGD step; a step whose gradients overflow is skipped and S halved (and doubled after 2000 steps without overflow).
The classification and box losses are computed in float32 in every precision (``retinanet/modeling/criterion.py``).

cuDNN autotuning (``cudnn_benchmark``): with ``torch.backends.cudnn.benchmark`` cuDNN times its algorithms for each
new input shape once and keeps the fastest. They compute the same convolution (results differ by float rounding),
so it is on by default; the effective flag is in provenance (``device.cudnn_benchmark``, CUDA only).
"""

from __future__ import annotations

import torch

AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each ``precision`` (None: no autocast)."""


def set_tf32(allow: bool) -> dict[str, bool]:
    """Set both TF32 switches to ``allow`` (process-wide); return their effective values (:func:`tf32_state`)."""
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    return tf32_state()


def tf32_state() -> dict[str, bool]:
    """``{"matmul": bool, "cudnn": bool}``: whether fp32 matmuls / cuDNN convolutions may run as TF32 now."""
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)}


def set_cudnn_benchmark(enabled: bool) -> bool:
    """Set ``torch.backends.cudnn.benchmark`` (process-wide; no effect on CPU); return the effective value."""
    torch.backends.cudnn.benchmark = enabled
    return bool(torch.backends.cudnn.benchmark)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device``'s type (disabled for ``fp32``)."""
    if precision not in AUTOCAST:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(AUTOCAST)}")
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of ``precision``: dynamic scaling for ``fp16``; for ``fp32`` and ``bf16`` a disabled scaler,
    whose ``scale``, ``unscale_``, ``step`` and ``update`` pass through (``optimizer.step()``, nothing else)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
