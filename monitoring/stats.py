"""The statistics of an experiment report: ratio metrics over users, their difference, the sample-ratio check.

Every rate of an experiment (CTR = clicked impressions / impressions, conversion = converted answers /
answers, MRR = sum of reciprocal ranks / answers) is a ratio of two sums over users, and users, not
impressions, are what the assignment randomises: one user's impressions share that user's taste, so they
are correlated and an impression-level binomial variance understates the noise. The variance of such a
ratio comes from the delta method over per-user sums (Deng et al., "Applying the Delta Method in Metric
Analytics", KDD 2018), which is the user-level bootstrap's answer without the resampling: the same
number for large samples, exact to compute, and cheap enough to rerun hundreds of times in the A/A check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A ratio of per-user sums with its delta-method standard error and confidence interval."""

    value: float
    se: float
    low: float
    high: float
    numerator: float
    denominator: float
    users: int


@dataclass(frozen=True)
class Difference:
    """Treatment minus baseline: absolute and relative, with the z-test of no difference."""

    diff: float
    low: float
    high: float
    relative: float  # treatment / baseline - 1 (nan when the baseline is 0)
    relative_low: float
    relative_high: float
    z: float
    p_value: float


@dataclass(frozen=True)
class RatioCheck:
    """Sample-ratio mismatch: observed users per arm against the shares the buckets promise."""

    chi2: float
    p_value: float
    observed: dict[str, int]
    expected: dict[str, float]
    mismatch: bool


def z_of(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def ratio(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray,
          confidence: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)) -> Estimate:
    """sum(numerator) / sum(denominator) over users, the interval clipped to `bounds` (rates live in [0, 1])."""
    x = np.asarray(numerator, dtype=np.float64)
    y = np.asarray(denominator, dtype=np.float64)
    n = len(x)
    if n == 0 or y.sum() <= 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, float(x.sum()), float(y.sum()), n)
    value = float(x.sum() / y.sum())
    se = math.sqrt(ratio_variance(x, y)) if n > 1 else math.nan
    half = z_of(confidence) * se
    low, high = (value - half, value + half) if math.isfinite(se) else (math.nan, math.nan)
    return Estimate(value, se, max(bounds[0], low), min(bounds[1], high), float(x.sum()), float(y.sum()), n)


def ratio_variance(x: np.ndarray, y: np.ndarray) -> float:
    """Delta-method variance of mean(x) / mean(y) over n independent users (sample covariances, ddof 1)."""
    n = len(x)
    mx, my = x.mean(), y.mean()
    r = mx / my
    cov = np.cov(np.vstack([x, y]), ddof=1)
    return float((cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * my * my))


def difference(treatment: Estimate, baseline: Estimate, confidence: float = 0.95) -> Difference:
    """Wald z-test of treatment - baseline for independent arms, with the relative lift's delta interval."""
    z_crit = z_of(confidence)
    diff = treatment.value - baseline.value
    se = math.hypot(treatment.se, baseline.se)
    z = diff / se if se > 0 else math.nan
    p = float(2 * stats.norm.sf(abs(z))) if math.isfinite(z) else math.nan
    if baseline.value > 0:
        relative = treatment.value / baseline.value - 1
        rel_se = math.sqrt(treatment.se ** 2 / baseline.value ** 2
                           + treatment.value ** 2 * baseline.se ** 2 / baseline.value ** 4)
    else:
        relative = rel_se = math.nan
    return Difference(diff, diff - z_crit * se, diff + z_crit * se, relative, relative - z_crit * rel_se,
                      relative + z_crit * rel_se, z, p)


def sample_ratio(observed: Mapping[str, int], shares: Mapping[str, float], alpha: float = 0.001) -> RatioCheck:
    """Pearson's chi-square of users per arm against the expected shares (normalised to sum 1)."""
    arms = list(shares)
    counts = np.array([observed.get(arm, 0) for arm in arms], dtype=np.float64)
    weights = np.array([shares[arm] for arm in arms], dtype=np.float64)
    total = counts.sum()
    expected = total * weights / weights.sum()
    if total == 0 or len(arms) < 2:
        return RatioCheck(math.nan, math.nan, {a: int(c) for a, c in zip(arms, counts)},
                          dict(zip(arms, expected.tolist())), False)
    chi2, p = stats.chisquare(counts, expected)
    return RatioCheck(float(chi2), float(p), {a: int(c) for a, c in zip(arms, counts)},
                      dict(zip(arms, expected.tolist())), bool(p < alpha))
