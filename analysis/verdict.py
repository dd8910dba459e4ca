"""The one rule that turns our numbers into a verdict on each of the paper's claims.

A claim is a list of *tests* (contrasts such as "FL > best alpha-CE"); each test holds (True), fails (False) or is
undecided (None). The claim is **reproduced** when every test holds, **not reproduced** when any test fails, and
**inconclusive** otherwise. A contrast between two settings A and B compares their AP over seeds (a diverged seed
counts as AP 0) by :func:`compare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

SEED_STD_FACTOR = 2.0
"""A difference counts when it exceeds this many pooled seed standard deviations (>= 2 seeds on each side)."""
SINGLE_SEED_MARGIN = 1.0
"""AP points a difference must exceed when either side has a single seed (no seed noise estimate)."""
RESOLUTION = 0.1
"""The paper's rounding (0.1 AP): smaller differences never count, even with zero seed spread."""
TIME_RATIO = 1.05
"""A model counts as slower when its median ms per image is more than this factor above the other's."""

RULE_TEXT = (
    f"**Verdict rule.** Each claim is split into contrasts between settings. A contrast compares mean AP over "
    f"a setting's runs (a diverged run counts as AP 0): its seeds, and where the study samples the backbone's "
    f"pretraining (the headline rows with `seeds.pretrainings`), its seeds on each pretraining, so that the spread "
    f"holds both sources of variance. With at least 2 runs on both sides, a difference counts when "
    f"|Δ| > max({SEED_STD_FACTOR:g} × pooled std, {RESOLUTION:g}) where pooled std = sqrt((s_A² + s_B²) / 2) and s "
    f"is the standard deviation over a setting's runs; "
    f"otherwise the two are *equal within seed noise*. With a single run on either side, a difference counts "
    f"only when |Δ| > {SINGLE_SEED_MARGIN:g} AP, and is *inconclusive* otherwise. Timings are medians of many "
    f"repeats: a model counts as slower when its ms per image is more than {TIME_RATIO:g}× the other's. A claim "
    f"is **reproduced** when all its contrasts go the paper's way, **not reproduced** when any goes against it "
    f"(including 'no difference beyond seed noise' where the paper claims one), and **inconclusive** otherwise. "
    f"C8 describes one model's loss distribution, not a contrast over seeds: its tests read the CDFs directly, "
    f"with the thresholds stated in the claim."
)


class Outcome(Enum):
    GREATER = "greater"
    LESS = "less"
    EQUAL = "equal within seed noise"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Comparison:
    """Result of comparing A with B: ``diff`` = mean(A) - mean(B), the ``threshold`` it was held to."""

    diff: float
    threshold: float
    outcome: Outcome


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    m = sum(vals) / n
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return m, s, n


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Compare per-seed values ``a`` with ``b`` by the rule in :data:`RULE_TEXT`.

    Empty inputs give ``INCONCLUSIVE`` with NaN diff.
    """
    ma, sa, na = _mean_std(a)
    mb, sb, nb = _mean_std(b)
    if na == 0 or nb == 0:
        return Comparison(math.nan, math.nan, Outcome.INCONCLUSIVE)
    diff = ma - mb
    if na >= 2 and nb >= 2:
        threshold = max(SEED_STD_FACTOR * math.sqrt((sa**2 + sb**2) / 2.0), RESOLUTION)
        if abs(diff) <= threshold:
            return Comparison(diff, threshold, Outcome.EQUAL)
    else:
        threshold = max(SINGLE_SEED_MARGIN, RESOLUTION)
        if abs(diff) <= threshold:
            return Comparison(diff, threshold, Outcome.INCONCLUSIVE)
    return Comparison(diff, threshold, Outcome.GREATER if diff > 0 else Outcome.LESS)


def holds_greater(c: Comparison) -> bool | None:
    """Test "A > B": holds if A is greater; fails if B is greater or they are equal within seed noise."""
    return {Outcome.GREATER: True, Outcome.LESS: False, Outcome.EQUAL: False}.get(c.outcome)


def holds_equal(c: Comparison) -> bool | None:
    """Test "A about equal to B": holds when equal within seed noise; fails on a difference that counts."""
    return {Outcome.EQUAL: True, Outcome.GREATER: False, Outcome.LESS: False}.get(c.outcome)


def holds_not_greater(c: Comparison) -> bool | None:
    """Test "A does not beat B" (saturation): fails only on a difference that counts in A's favour."""
    return {Outcome.EQUAL: True, Outcome.LESS: True, Outcome.GREATER: False}.get(c.outcome)


def slower(a_ms: Sequence[float], b_ms: Sequence[float]) -> bool | None:
    """Test "A is slower than B" on median ms per image (means over seeds): None when a side is missing."""
    ma, _, na = _mean_std(a_ms)
    mb, _, nb = _mean_std(b_ms)
    if na == 0 or nb == 0:
        return None
    return ma > TIME_RATIO * mb


def verdict(tests: Sequence[bool | None]) -> str:
    """``reproduced`` (all hold), ``not reproduced`` (any fails) or ``inconclusive`` (else, or no tests)."""
    if any(t is False for t in tests):
        return "not reproduced"
    if tests and all(t is True for t in tests):
        return "reproduced"
    return "inconclusive"
