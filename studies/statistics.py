"""Welch's t-test and its confidence interval, for comparing two sets of seeds.

`welch(a, b)` tests mean(a) - mean(b) with Welch's unequal-variance t-test
(Welch 1947; Satterthwaite 1946 for the degrees of freedom) and gives the
two-sided p-value and the confidence interval of the difference. Student's t
distribution is computed here (`t_cdf`, `t_quantile`) from the regularised
incomplete beta function (continued fraction, as in Press et al., Numerical
Recipes, section 6.4), so the studies need no scipy.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

# Relative change at which the continued fraction has converged; its iteration cap.
_FRACTION_TOLERANCE = 1e-16
_FRACTION_MAX_TERMS = 100_000
_TINY = 1e-300


def _checked_values(values: Sequence[float], name: str) -> np.ndarray:
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1 or array.size == 0:
    raise ValueError(f'{name} must be a non-empty 1-D sequence of numbers, got shape '
                     f'{array.shape}; pass one value per seed.')
  if not np.all(np.isfinite(array)):
    raise ValueError(f'{name} holds non-finite values {array.tolist()}; drop or fix the runs '
                     'that produced them.')
  return array


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and sample standard deviation (n - 1 in the denominator); NaN std for one value."""
  array = _checked_values(values, 'values')
  std = float(np.std(array, ddof=1)) if array.size > 1 else float('nan')
  return float(np.mean(array)), std


def _beta_fraction(a: float, b: float, x: float) -> float:
  """The continued fraction 1 / (1 + d1 / (1 + d2 / ...)) of I_x(a, b), by Lentz's method.

  d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
  d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)); it converges fast for
  x < (a + 1) / (a + b + 2).
  """
  value, numerator_ratio, denominator_ratio = 1.0, 1.0, 0.0
  for term in range(1, _FRACTION_MAX_TERMS):
    m = term // 2
    if term % 2:
      coefficient = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
    else:
      coefficient = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
    denominator_ratio = 1.0 + coefficient * denominator_ratio
    denominator_ratio = 1.0 / (denominator_ratio if abs(denominator_ratio) > _TINY else _TINY)
    numerator_ratio = 1.0 + coefficient / numerator_ratio
    numerator_ratio = numerator_ratio if abs(numerator_ratio) > _TINY else _TINY
    change = numerator_ratio * denominator_ratio
    value *= change
    if abs(change - 1.0) < _FRACTION_TOLERANCE:
      return 1.0 / value
  raise ArithmeticError(f'The incomplete beta fraction did not converge for a={a}, b={b}, '
                        f'x={x}.')


def regularized_incomplete_beta(a: float, b: float, x: float, one_minus_x: float) -> float:
  """I_x(a, b) for a, b > 0; `one_minus_x` = 1 - x, given exactly to keep precision near 1."""
  if x <= 0.0:
    return 0.0
  if one_minus_x <= 0.0:
    return 1.0
  log_front = (a * math.log(x) + b * math.log(one_minus_x)
               - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) / a * _beta_fraction(a, b, x)
  # I_x(a, b) = 1 - I_{1-x}(b, a), where the fraction converges.
  return 1.0 - math.exp(log_front) / b * _beta_fraction(b, a, one_minus_x)


def _check_dof(dof: float):
  if not (dof > 0 and math.isfinite(dof)):
    raise ValueError(f'dof={dof}: Student\'s t needs finite degrees of freedom > 0.')


def t_two_sided_tail(t: float, dof: float) -> float:
  """P(|T| >= |t|) for Student's t with `dof` degrees of freedom (the two-sided p-value)."""
  _check_dof(dof)
  square = t * t
  return regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + square),
                                     square / (dof + square))


def t_cdf(t: float, dof: float) -> float:
  """P(T <= t) for Student's t with `dof` (> 0, fractional allowed) degrees of freedom."""
  half_tail = 0.5 * t_two_sided_tail(t, dof)
  return half_tail if t < 0 else 1.0 - half_tail


def t_quantile(probability: float, dof: float) -> float:
  """The t with P(T <= t) = `probability`, by bisection on the tail (relative precision ~1e-15)."""
  _check_dof(dof)
  if not 0.0 < probability < 1.0:
    raise ValueError(f'probability={probability}: must lie strictly between 0 and 1.')
  if probability == 0.5:
    return 0.0
  # The two-sided tail of |t| equals 2 min(p, 1 - p); the tail falls as |t| grows.
  target = 2.0 * min(probability, 1.0 - probability)
  low, high = 0.0, 1.0
  while t_two_sided_tail(high, dof) > target:
    low, high = high, 2.0 * high
  for _ in range(2000):
    middle = 0.5 * (low + high)
    if middle in (low, high) or high - low <= 1e-16 * high:
      break
    if t_two_sided_tail(middle, dof) > target:
      low = middle
    else:
      high = middle
  magnitude = 0.5 * (low + high)
  return magnitude if probability > 0.5 else -magnitude


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
  """Welch's t-test of mean(a) - mean(b) and the difference's two-sided confidence interval.

  Returns mean_difference, ci_low, ci_high, t, dof (Welch-Satterthwaite), the
  two-sided p_value, n_a and n_b. Raises ValueError for fewer than 2 values in
  either sample (no variance to estimate). When both samples have zero
  variance the standard error is 0: t, dof, p_value, ci_low and ci_high are
  then NaN (mean_difference stays defined).
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence={confidence}: must lie strictly between 0 and 1 (e.g. 0.95).')
  samples = [_checked_values(a, 'a'), _checked_values(b, 'b')]
  for name, sample in zip('ab', samples):
    if sample.size < 2:
      raise ValueError(f'{name} has {sample.size} value: Welch\'s test needs >= 2 per sample '
                       '(run more seeds).')
  (n_a, n_b) = (samples[0].size, samples[1].size)
  difference = float(np.mean(samples[0]) - np.mean(samples[1]))
  variances = [float(np.var(sample, ddof=1)) / sample.size for sample in samples]
  result = dict(mean_difference=difference, n_a=n_a, n_b=n_b)
  squared_error = variances[0] + variances[1]
  if squared_error == 0.0:
    return dict(result, ci_low=math.nan, ci_high=math.nan, t=math.nan, dof=math.nan,
                p_value=math.nan)
  standard_error = math.sqrt(squared_error)
  dof = squared_error ** 2 / (variances[0] ** 2 / (n_a - 1) + variances[1] ** 2 / (n_b - 1))
  t = difference / standard_error
  half_width = t_quantile(0.5 + confidence / 2.0, dof) * standard_error
  return dict(result, ci_low=difference - half_width, ci_high=difference + half_width, t=t,
              dof=dof, p_value=t_two_sided_tail(t, dof))


def format_number(value: Optional[float], digits: int = 3, sign: bool = False) -> str:
  """`value` with `digits` decimals ('+' with `sign`); 'n/a' for None or NaN."""
  if value is None or not math.isfinite(value):
    return 'n/a'
  return f'{value:+.{digits}f}' if sign else f'{value:.{digits}f}'


def welch_cells(test: Dict[str, float]) -> str:
  """Markdown cells (difference, interval, t, dof, p, seeds) of `welch`'s result + 'confidence'."""
  number = format_number
  return (f'{number(test["mean_difference"], sign=True)} | {test["confidence"]:.0%}: '
          f'[{number(test["ci_low"], sign=True)}, {number(test["ci_high"], sign=True)}] | '
          f'{number(test["t"], 2)} | {number(test["dof"], 1)} | {number(test["p_value"])} | '
          f'{test["n_a"]}, {test["n_b"]}')
