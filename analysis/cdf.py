"""Figure 4's statistic: the cumulative distribution of the normalized loss over samples sorted by loss.

For one set of samples (the positives, or the negatives) with losses l_1..l_n >= 0 (section 5.1, 'Analysis of the
Focal Loss'): normalize so the losses sum to one, sort from lowest to highest, and accumulate; the i-th point
(1-based) is at x = i / n (fraction of samples) with y = sum of the i smallest normalized losses.
"""

from __future__ import annotations

import numpy as np


def normalized_loss_cdf(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, cdf)`` for losses [n]: x = (1..n) / n, cdf = cumulative sum of sorted losses / total. Both [n].

    Raises ValueError on an empty input, negative or non-finite losses, or a zero total.
    """
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    if losses.size == 0:
        raise ValueError("normalized_loss_cdf: no samples")
    if not np.isfinite(losses).all() or (losses < 0).any():
        raise ValueError("normalized_loss_cdf: losses must be finite and non-negative")
    total = losses.sum()
    if total <= 0:
        raise ValueError("normalized_loss_cdf: the losses sum to zero")
    cdf = np.cumsum(np.sort(losses)) / total
    cdf[-1] = 1.0  # exact despite rounding
    x = np.arange(1, losses.size + 1, dtype=np.float64) / losses.size
    return x, cdf


def cdf_at(losses: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """The CDF at the given fractions of samples (step function: the share of the floor(f * n) easiest samples).

    fractions [F] in [0, 1] -> [F]. Used to draw a fixed number of points whatever n is (~10^7 in the paper).
    """
    x, cdf = normalized_loss_cdf(losses)
    n = x.size
    idx = np.floor(np.asarray(fractions, dtype=np.float64) * n + 1e-9).astype(np.int64)
    padded = np.concatenate([[0.0], cdf])
    return padded[np.clip(idx, 0, n)]


def hardest_share(losses: np.ndarray, fraction: float) -> float:
    """Share of the total loss carried by the hardest ``fraction`` of samples (1 - CDF at 1 - fraction)."""
    return float(1.0 - cdf_at(losses, np.array([1.0 - fraction]))[0])


def fraction_for_share(losses: np.ndarray, share: float) -> float:
    """Smallest fraction of the hardest samples whose losses sum to at least ``share`` of the total.

    The concentration measure of claim C8: it falls as the loss concentrates on fewer samples.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"fraction_for_share: share must be in (0, 1], got {share}")
    x, cdf = normalized_loss_cdf(losses)
    hardest = 1.0 - np.concatenate([[0.0], cdf[:-1]])[::-1]  # share carried by the k hardest, k = 1..n
    k = int(np.searchsorted(hardest, share - 1e-12)) + 1
    return min(k, x.size) / x.size
