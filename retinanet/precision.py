"""fp32 means fp32: PyTorch's TF32 switches, set from the run config (``allow_tf32``) by every command.

On Ampere and newer NVIDIA GPUs, PyTorch may run fp32 matmuls (``torch.backends.cuda.matmul.allow_tf32``) and cuDNN
convolutions (``torch.backends.cudnn.allow_tf32``, on by default) in TF32, with a 10-bit mantissa. The paper's
fp32 was full fp32: it predates TF32 (introduced with Ampere in 2020; the paper times on an Nvidia M40, Fig. 2), so
``allow_tf32`` defaults to false and both switches are set explicitly, whatever torch's defaults are. On CPU they
change nothing. The effective values go into each run's provenance (``device.tf32``).
"""

from __future__ import annotations

import torch


def set_tf32(allow: bool) -> dict[str, bool]:
    """Set both TF32 switches to ``allow`` (process-wide); return their effective values (:func:`tf32_state`)."""
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    return tf32_state()


def tf32_state() -> dict[str, bool]:
    """``{"matmul": bool, "cudnn": bool}``: whether fp32 matmuls / cuDNN convolutions may run as TF32 now."""
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)}
