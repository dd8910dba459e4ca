"""Comparisons of tensors computed along different summation orders (other kernels, other vector widths).

A sum of many products has no elementwise relative precision: an entry near zero that is the difference of large
terms (a gradient of ``y.square().sum()`` through a deep network, say) carries the rounding of those terms, which
depends on the order in which a vector unit adds them (AVX-512 against AVX2, Intel against AMD, oneDNN's blocking).
What a correct implementation guarantees is an error small against the tensor's scale, so that is what these
helpers assert. Elementwise functions (the losses) have elementwise precision and keep elementwise tolerances.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALE_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}
"""Allowed ``max |actual - expected|`` as a fraction of ``max |expected|``: about 5000 and 80 units in the last
place of the scale, far below any real error (a missing term is of the order of the scale)."""


def assert_close_at_scale(actual: Tensor, expected: Tensor, *, rtol: float | None = None, msg: str = "") -> None:
    """Assert ``max |actual - expected| <= rtol * max |expected|`` (shapes and dtypes equal, all finite)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{msg}: {tuple(actual.shape)} {actual.dtype} against {tuple(expected.shape)} {expected.dtype}")
    assert torch.isfinite(actual).all() and torch.isfinite(expected).all(), f"{msg}: non-finite values"
    rtol = SCALE_RTOL[expected.dtype] if rtol is None else rtol
    scale = expected.abs().max()
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"{msg}: max abs difference {err:.3g} > {rtol:g} x scale {scale:.3g}"
