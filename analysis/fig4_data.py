"""Figure 4's data: focal losses of a converged model's positive and negative samples, and their CDFs.

Section 5.1: for each gamma, compute FL of every sample (the model was trained with gamma = 2; other gammas are
only re-scorings), separately for positives and negatives; alpha is left out because it is constant within each
set and cancels in the normalization.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.cdf import cdf_at, fraction_for_share, hardest_share
from retinanet.modeling.losses import focal_loss

FIG4_GAMMAS = (0.0, 0.5, 1.0, 2.0)
HARDEST_FRACTION = 0.2
"""The paper's reading of Fig. 4: about 20% of the hardest positives carry about half of the positive loss."""
HALF = 0.5


def sample_losses(logits: np.ndarray, positive: bool, gamma: float) -> np.ndarray:
    """FL (eq. 4; CE at gamma 0) of binary samples with logits [n], all positive or all negative -> [n]."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.ones_like(x) if positive else torch.zeros_like(x)
    return focal_loss(x, y, gamma=gamma, alpha=None).detach().numpy()


def cdf_curves(pos: np.ndarray, neg: np.ndarray, gammas=FIG4_GAMMAS, points: int = 1001) -> dict:
    """``{"x": [points], "pos": {gamma: cdf [points]}, "neg": {gamma: cdf [points]}}``."""
    x = np.linspace(0.0, 1.0, points)
    return {"x": x,
            "pos": {g: cdf_at(sample_losses(pos, True, g), x) for g in gammas},
            "neg": {g: cdf_at(sample_losses(neg, False, g), x) for g in gammas}}


def hardest_shares(pos: np.ndarray, neg: np.ndarray, gammas=FIG4_GAMMAS,
                   fraction: float = HARDEST_FRACTION) -> dict[str, dict[float, float]]:
    """Share of each set's loss carried by its hardest ``fraction`` of samples, per gamma (claim C8)."""
    return {"pos": {g: hardest_share(sample_losses(pos, True, g), fraction) for g in gammas},
            "neg": {g: hardest_share(sample_losses(neg, False, g), fraction) for g in gammas}}


def half_loss_fractions(pos: np.ndarray, neg: np.ndarray, gammas=FIG4_GAMMAS) -> dict[str, dict[float, float]]:
    """Fraction of the hardest samples that carries half of each set's loss, per gamma (claim C8)."""
    return {"pos": {g: fraction_for_share(sample_losses(pos, True, g), HALF) for g in gammas},
            "neg": {g: fraction_for_share(sample_losses(neg, False, g), HALF) for g in gammas}}
