"""Welch's t-test and Student's t (studies/statistics.py) against scipy and hand-computed cases."""
import math

import numpy as np
import pytest
from scipy import special
from scipy import stats

from studies import statistics

DOFS = (0.3, 0.5, 1.0, 1.5, 2.0, 2.7, 3.0, 4.2, 7.0, 13.37, 30.0, 100.0, 1e3, 1e4)
PROBABILITIES = (1e-10, 1e-6, 1e-3, 0.01, 0.025, 0.1, 0.3, 0.5 - 1e-9, 0.5, 0.6, 0.9, 0.975,
                 0.995, 1 - 1e-7)
T_VALUES = (-1e3, -30.0, -5.0, -2.0, -1.0, -0.1, 0.0, 1e-8, 0.5, 1.96, 3.0, 10.0, 100.0)


def _close(value, expected, tolerance=1e-8):
  """Relative for small tails (where absolute would say nothing), absolute otherwise."""
  scale = abs(expected) if abs(expected) < 1e-3 or abs(expected) > 1 else 1.0
  return abs(value - expected) <= tolerance * scale


def test_incomplete_beta_matches_scipy():
  for a, b in [(0.15, 0.5), (0.5, 0.5), (1.0, 1.0), (2.5, 0.5), (50.0, 0.5), (3.0, 7.0)]:
    for x in (1e-9, 0.01, 0.2, 0.5, 0.77, 0.99, 1 - 1e-9):
      value = statistics.regularized_incomplete_beta(a, b, x, 1.0 - x)
      assert _close(value, special.betainc(a, b, x)), (a, b, x)
  assert statistics.regularized_incomplete_beta(2.0, 3.0, 0.0, 1.0) == 0.0
  assert statistics.regularized_incomplete_beta(2.0, 3.0, 1.0, 0.0) == 1.0
  # Hand-computed: I_x(1, 1) = x and I_x(2, 1) = x^2.
  assert statistics.regularized_incomplete_beta(1.0, 1.0, 0.3, 0.7) == pytest.approx(0.3, 1e-14)
  assert statistics.regularized_incomplete_beta(2.0, 1.0, 0.3, 0.7) == pytest.approx(0.09, 1e-14)


@pytest.mark.parametrize('dof', DOFS)
def test_t_cdf_and_quantile_match_scipy(dof):
  for t in T_VALUES:
    assert _close(statistics.t_cdf(t, dof), stats.t.cdf(t, dof)), (t, dof)
    assert _close(statistics.t_two_sided_tail(t, dof), 2 * stats.t.sf(abs(t), dof)), (t, dof)
  for probability in PROBABILITIES:
    expected = stats.t.ppf(probability, dof)   # near 0 the input's rounding limits it: absolute
    assert statistics.t_quantile(probability, dof) == pytest.approx(
        expected, rel=1e-8, abs=1e-8), (probability, dof)


def test_t_distribution_closed_forms():
  # dof = 1 is the Cauchy distribution: CDF 1/2 + atan(t)/pi, quantile tan(pi (p - 1/2)).
  for t in (-3.0, 0.4, 12.0):
    assert statistics.t_cdf(t, 1.0) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-14)
  assert statistics.t_quantile(0.9, 1.0) == pytest.approx(math.tan(math.pi * 0.4), rel=1e-13)
  # dof = 2: CDF 1/2 + t / (2 sqrt(2 + t^2)).
  assert statistics.t_cdf(1.5, 2.0) == pytest.approx(0.5 + 1.5 / (2 * math.sqrt(4.25)), abs=1e-14)


def test_bad_distribution_arguments_raise():
  for dof in (0.0, -1.0, math.inf, math.nan):
    with pytest.raises(ValueError, match='degrees of freedom'):
      statistics.t_cdf(1.0, dof)
  for probability in (0.0, 1.0, 1.5):
    with pytest.raises(ValueError, match='strictly between 0 and 1'):
      statistics.t_quantile(probability, 3.0)


@pytest.mark.parametrize('a, b', [
    ([0.62, 0.71, 0.55, 0.68, 0.74], [0.58, 0.60, 0.49, 0.66, 0.52]),
    ([1.0, 2.0], [3.0, 5.0, 4.5, 8.0, 0.0, 2.2]),          # unequal sizes and variances
    ([0.2, 0.2, 0.2, 0.3], [0.1, 0.9, 0.5]),
    ([5.0, 5.0, 5.0], [1.0, 2.0, 4.0]),                     # one sample without variance
])
def test_welch_matches_scipy(a, b):
  result = statistics.welch(a, b)
  expected = stats.ttest_ind(a, b, equal_var=False)
  interval = expected.confidence_interval(0.95)
  assert (result['n_a'], result['n_b']) == (len(a), len(b))
  assert result['mean_difference'] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-14)
  assert result['t'] == pytest.approx(expected.statistic, rel=1e-10)
  assert result['dof'] == pytest.approx(expected.df, rel=1e-10)
  assert _close(result['p_value'], expected.pvalue)
  assert result['ci_low'] == pytest.approx(interval.low, abs=1e-8)
  assert result['ci_high'] == pytest.approx(interval.high, abs=1e-8)
  wide = statistics.welch(a, b, confidence=0.99)
  interval = expected.confidence_interval(0.99)
  assert (wide['ci_low'], wide['ci_high']) == pytest.approx((interval.low, interval.high),
                                                            abs=1e-8)


def test_welch_hand_computed():
  # a: mean 2, variance 1; b: mean 0, variance 1; n = 3 each: se^2 = 2/3, dof = 4.
  result = statistics.welch([1.0, 2.0, 3.0], [-1.0, 0.0, 1.0])
  assert result['t'] == pytest.approx(2.0 / math.sqrt(2.0 / 3.0), rel=1e-14)
  assert result['dof'] == pytest.approx(4.0, rel=1e-14)
  # dof = 4: two-sided tail of t is 1 - t (6 + t^2) / (t^2 + 4)^1.5 (closed form).
  t = result['t']
  assert result['p_value'] == pytest.approx(1 - t * (6 + t * t) / (t * t + 4) ** 1.5, rel=1e-12)


def test_welch_degenerate_input():
  with pytest.raises(ValueError, match='needs >= 2 per sample'):
    statistics.welch([0.5], [0.4, 0.6])
  with pytest.raises(ValueError, match='non-empty'):
    statistics.welch([], [0.4, 0.6])
  with pytest.raises(ValueError, match='non-finite'):
    statistics.welch([0.5, math.nan], [0.4, 0.6])
  with pytest.raises(ValueError, match='confidence'):
    statistics.welch([0.5, 0.6], [0.4, 0.6], confidence=95)
  # Both samples constant: no standard error, so no test; the difference stays.
  result = statistics.welch([0.5, 0.5], [0.25, 0.25, 0.25])
  assert result['mean_difference'] == 0.25
  assert all(math.isnan(result[key]) for key in ('t', 'dof', 'p_value', 'ci_low', 'ci_high'))


def test_mean_std():
  mean, std = statistics.mean_std([0.5, 0.7, 0.6])
  assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
  assert std == pytest.approx(np.std([0.5, 0.7, 0.6], ddof=1), abs=1e-15)
  mean, std = statistics.mean_std([0.3])
  assert mean == 0.3 and math.isnan(std)
  with pytest.raises(ValueError, match='non-empty'):
    statistics.mean_std([])
