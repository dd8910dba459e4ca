"""The verdict rule (analysis/verdict.py) and the CDF of Figure 4 (analysis/cdf.py) on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.cdf import cdf_at, fraction_for_share, hardest_share, normalized_loss_cdf
from analysis.seeds import seed_values
from analysis.verdict import (
    Outcome,
    compare,
    holds_equal,
    holds_greater,
    holds_not_greater,
    slower,
    verdict,
)


def test_multi_seed_difference_counts_beyond_two_pooled_std():
    # std of [1, 2, 3] = 1, so pooled std = 1 and the threshold is 2.
    c = compare([11.0, 12.0, 13.0], [9.0, 10.0, 11.0 - 0.01])
    assert c.threshold == pytest.approx(2.0, abs=1e-2)
    assert c.outcome is Outcome.GREATER and c.diff == pytest.approx(2.0033, abs=1e-3)
    assert compare([11.0, 12.0, 13.0], [10.0, 11.0, 12.0]).outcome is Outcome.EQUAL  # diff 1 <= 2
    assert compare([1.0, 2.0, 3.0], [10.0, 11.0, 12.0]).outcome is Outcome.LESS


def test_pooled_std_uses_both_sides():
    a, b = [0.0, 2.0], [10.0, 10.0]  # s_a = sqrt(2), s_b = 0 -> pooled = 1, threshold 2
    assert compare(a, b).threshold == pytest.approx(2.0)


def test_single_seed_needs_the_margin_else_inconclusive():
    assert compare([31.1], [30.2]).outcome is Outcome.INCONCLUSIVE  # 0.9 <= 1.0
    assert compare([34.0], [31.1]).outcome is Outcome.GREATER
    assert compare([34.0], [33.0, 33.2]).outcome is Outcome.INCONCLUSIVE  # one side has one seed


def test_resolution_floor_with_zero_spread():
    assert compare([0.0, 0.0], [0.0, 0.0]).outcome is Outcome.EQUAL  # both diverged
    assert compare([5.0, 5.0], [5.05, 5.05]).outcome is Outcome.EQUAL  # 0.05 < 0.1
    assert compare([5.0, 5.0], [5.2, 5.2]).outcome is Outcome.LESS


def test_nan_seeds_are_ignored_and_empty_is_inconclusive():
    assert compare([10.0, math.nan, 10.0], [5.0, 5.0]).outcome is Outcome.GREATER
    assert compare([], [1.0]).outcome is Outcome.INCONCLUSIVE


def test_tests_and_verdict():
    greater, less = compare([10.0, 10.2], [5.0, 5.1]), compare([5.0, 5.1], [10.0, 10.2])
    equal, unsure = compare([5.0, 5.1], [5.05, 5.1]), compare([5.0], [5.5])
    assert [holds_greater(c) for c in (greater, less, equal, unsure)] == [True, False, False, None]
    assert [holds_equal(c) for c in (greater, less, equal, unsure)] == [False, False, True, None]
    assert [holds_not_greater(c) for c in (greater, less, equal, unsure)] == [False, True, True, None]
    assert verdict([True, True]) == "reproduced"
    assert verdict([True, None]) == "inconclusive"
    assert verdict([True, None, False]) == "not reproduced"
    assert verdict([]) == "inconclusive"


def test_slower_uses_the_time_ratio():
    assert slower([106.0], [100.0]) is True
    assert slower([104.0], [100.0]) is False
    assert slower([], [100.0]) is None


def test_normalized_loss_cdf_known_input():
    x, cdf = normalized_loss_cdf(np.array([3.0, 1.0, 0.0, 4.0, 2.0]))  # sorted 0,1,2,3,4; total 10
    np.testing.assert_allclose(x, [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(cdf, [0.0, 0.1, 0.3, 0.6, 1.0])


def test_cdf_at_and_hardest_share():
    losses = np.array([1.0, 1.0, 1.0, 1.0, 6.0])  # total 10; the hardest 20% (one sample) carries 60%
    np.testing.assert_allclose(cdf_at(losses, np.array([0.0, 0.2, 0.5, 0.8, 1.0])), [0.0, 0.1, 0.2, 0.4, 1.0])
    assert hardest_share(losses, 0.2) == pytest.approx(0.6)
    assert fraction_for_share(losses, 0.5) == pytest.approx(0.2)  # one sample suffices for half
    assert fraction_for_share(losses, 0.65) == pytest.approx(0.4)
    uniform = np.ones(1000)
    assert hardest_share(uniform, 0.2) == pytest.approx(0.2)
    assert fraction_for_share(uniform, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [np.array([]), np.array([0.0, 0.0]), np.array([1.0, -1.0]), np.array([np.nan])])
def test_cdf_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        normalized_loss_cdf(bad)


def test_spread_splits_into_seeds_within_a_pretraining_and_between_pretrainings():
    """Runs keyed by seed on pretraining 0 and ``p<k>-s<seed>`` on replica k (workflow/study.py replicate_key):
    values 30, 32 on pretraining 0 and 26, 28 on replica 1 (hand-computed)."""
    v = seed_values({"0": {"AP": 30.0}, "1": {"AP": 32.0}, "p1-s0": {"AP": 26.0}, "p1-s1": {"AP": 28.0}}, "AP")
    assert v.pretrainings == (0, 0, 1, 1)
    assert v.seed_std == pytest.approx(math.sqrt(2.0))           # squared deviations 1+1+1+1 over 2 dof
    assert v.pretraining_std == pytest.approx(math.sqrt(8.0))    # means 31 and 27
    assert v.std == pytest.approx(math.sqrt(20.0 / 3.0))         # all four runs around 29
    assert v.format_seeds(1) == "s0 30.0, s1 32.0, p1-s0 26.0, p1-s1 28.0"
    one = seed_values({"0": {"AP": 30.0}, "1": {"AP": 32.0}}, "AP")
    assert one.seed_std == pytest.approx(one.std) and math.isnan(one.pretraining_std)
    # the verdict rule holds a contrast to the spread over all runs, pretraining included
    assert compare(v.values, [29.0 + 5.0, 29.0 + 5.5]).threshold == pytest.approx(
        2 * math.sqrt((v.std ** 2 + 0.125) / 2))
