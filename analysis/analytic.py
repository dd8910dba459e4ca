"""Figures 1, 5, 6 and 7's loss curves, computed with the detector's own losses (``retinanet.modeling.losses``).

A loss curve is a function of x_t = y x (eq. 6), y in {+1, -1}; p_t = sigmoid(x_t). The curves use the unweighted
losses (alpha = None): CE (eq. 1-2, FL with gamma = 0), FL (eq. 4) and FL* (eq. 7-8). Derivatives with respect to
x come from autograd through ``retinanet.modeling.losses`` and are checked against Appendix B (eq. 9-11) by
:func:`check_derivatives`, which raises :class:`DerivativeMismatch` when they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retinanet.modeling.losses import focal_loss, focal_star_loss


@dataclass(frozen=True)
class LossSpec:
    """One curve: ``kind`` is "FL" (gamma 0 = CE) or "FL*"; ``label`` is the legend text."""

    kind: str
    gamma: float
    beta: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "FL" and self.gamma == 0:
            return "CE"
        if self.kind == "FL":
            return f"FL, γ={self.gamma:g}"
        return f"FL*, γ={self.gamma:g}, β={self.beta:g}"


FIG1_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
"""Figure 1's focusing parameters (gamma = 0 is CE)."""
FIG5_SPECS = (LossSpec("FL", 0.0), LossSpec("FL", 2.0), LossSpec("FL*", 2.0, 1.0), LossSpec("FL*", 4.0, 0.0))
"""Figures 5 and 6: CE, FL gamma 2, FL* gamma 2 beta 1 and FL* gamma 4 beta 0 (Appendix A, Table 3)."""


class DerivativeMismatch(AssertionError):
    """Autograd through retinanet.modeling.losses disagrees with the paper's derivatives (eq. 9-11)."""


def _loss(spec: LossSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise loss for logits x [n] and labels y [n] in {0, 1} (0 stands for y = -1)."""
    if spec.kind == "FL":
        return focal_loss(x, y, gamma=spec.gamma, alpha=None)
    if spec.kind == "FL*":
        return focal_star_loss(x, y, gamma=spec.gamma, beta=spec.beta, alpha=None)
    raise ValueError(f"unknown loss kind {spec.kind!r} (expected 'FL' or 'FL*')")


def loss_vs_xt(spec: LossSpec, x_t: torch.Tensor) -> torch.Tensor:
    """Loss as a function of x_t [n] (evaluated at y = +1, where x = x_t) -> [n]."""
    x_t = torch.as_tensor(x_t, dtype=torch.float64)
    return _loss(spec, x_t, torch.ones_like(x_t)).detach()


def loss_vs_pt(gamma: float, p_t: torch.Tensor) -> torch.Tensor:
    """Figure 1: FL (eq. 4; CE at gamma 0) as a function of p_t [n] in (0, 1) -> [n]."""
    p_t = torch.as_tensor(p_t, dtype=torch.float64)
    return loss_vs_xt(LossSpec("FL", gamma), torch.logit(p_t))


def autograd_derivative(spec: LossSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d loss / d x by autograd through retinanet.modeling.losses, for logits x [n] and labels y [n] in {0, 1}."""
    x = torch.as_tensor(x, dtype=torch.float64).detach().clone().requires_grad_(True)
    y = torch.as_tensor(y, dtype=torch.float64)
    (grad,) = torch.autograd.grad(_loss(spec, x, y).sum(), x)
    return grad.detach()


def paper_derivative(spec: LossSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Appendix B: eq. 9 (CE), eq. 10 (FL), eq. 11 (FL*) with y in {+1, -1} (labels y [n] given in {0, 1})."""
    x = torch.as_tensor(x, dtype=torch.float64)
    ypm = 2.0 * torch.as_tensor(y, dtype=torch.float64) - 1.0
    x_t = ypm * x
    if spec.kind == "FL*":
        p_star = torch.sigmoid(spec.gamma * x_t + spec.beta)
        return ypm * (p_star - 1.0)  # eq. 11
    p_t = torch.sigmoid(x_t)
    log_pt = torch.nn.functional.logsigmoid(x_t)
    if spec.gamma == 0:
        return ypm * (p_t - 1.0)  # eq. 9
    return ypm * (1.0 - p_t) ** spec.gamma * (spec.gamma * p_t * log_pt + p_t - 1.0)  # eq. 10


def derivative_vs_xt(spec: LossSpec, x_t: torch.Tensor) -> torch.Tensor:
    """Figure 6: d loss / d x at y = +1 (so x = x_t), by autograd -> [n]."""
    x_t = torch.as_tensor(x_t, dtype=torch.float64)
    return autograd_derivative(spec, x_t, torch.ones_like(x_t))


def check_derivatives(specs, x: torch.Tensor, *, atol: float = 1e-6, rtol: float = 1e-5) -> float:
    """Raise DerivativeMismatch unless autograd equals eq. 9-11 for every spec, at both labels; return max error."""
    x = torch.as_tensor(x, dtype=torch.float64)
    worst = 0.0
    for spec in specs:
        for label in (0.0, 1.0):
            y = torch.full_like(x, label)
            auto, ref = autograd_derivative(spec, x, y), paper_derivative(spec, x, y)
            err = (auto - ref).abs()
            worst = max(worst, float(err.max()))
            bad = err > atol + rtol * ref.abs()
            if bad.any() or not torch.isfinite(auto).all():
                i = int(torch.nonzero(bad | ~torch.isfinite(auto))[0])
                raise DerivativeMismatch(
                    f"{spec.label}, y={'+1' if label else '-1'}: autograd d/dx = {float(auto[i]):.8g} but the "
                    f"paper's eq. {'11' if spec.kind == 'FL*' else ('9' if spec.gamma == 0 else '10')} gives "
                    f"{float(ref[i]):.8g} at x = {float(x[i]):.6g}")
    return worst
