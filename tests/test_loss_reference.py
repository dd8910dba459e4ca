"""The fused focal-loss kernels (retinanet/modeling/focal_kernels.py) against the paper's formulas as written
(retinanet/modeling/losses.py: focal_loss_reference, focal_star_reference), in value and gradient, in float64 where
the formulas do not saturate."""

from __future__ import annotations

import pytest
import torch

from retinanet.modeling.losses import focal_loss, focal_loss_reference, focal_star_loss, focal_star_reference


def _data(n: int = 3000, scale: float = 3.0):
    """Logits up to |x| ~ 11: the reference's 1 - p_t keeps ~1e-11 relative precision there (it cancels beyond)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g, dtype=torch.float64) * scale
    t = (torch.rand(n, generator=g) < 0.3).double()
    return x, t


def _value_and_grad(fn, x: torch.Tensor, t: torch.Tensor):
    x = x.clone().requires_grad_()
    loss = fn(x, t)
    loss.sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_loss_is_eq5(gamma: float, alpha: float | None) -> None:
    x, t = _data()
    fused, fused_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=alpha), x, t)
    ref, ref_grad = _value_and_grad(lambda a, b: focal_loss_reference(a, b, gamma=gamma, alpha=alpha), x, t)
    torch.testing.assert_close(fused, ref, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(fused_grad, ref_grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize(("gamma", "beta"), [(2.0, 1.0), (4.0, 0.0)])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_star_loss_is_eq8(gamma: float, beta: float, alpha: float | None) -> None:
    x, t = _data()
    fused, fused_grad = _value_and_grad(
        lambda a, b: focal_star_loss(a, b, gamma=gamma, beta=beta, alpha=alpha), x, t)
    ref, ref_grad = _value_and_grad(
        lambda a, b: focal_star_reference(a, b, gamma=gamma, beta=beta, alpha=alpha), x, t)
    torch.testing.assert_close(fused, ref, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(fused_grad, ref_grad, rtol=1e-9, atol=1e-14)
