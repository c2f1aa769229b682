"""Per-region error figures and their disparity, in QGIS's own Python (standard library only).

The definitions are those of ``swclip_core.metrics.region_fairness`` and
``swclip_core.outputs.region_choropleth`` (docs/method.md, "Metrics"), recomputed here so that the
choropleth needs neither the backend nor numpy: regional n, median and mean error, share within a
radius, R@1, deviation from the overall median, and across regions the max/min ratio and coefficient
of variation of the medians and the Gini coefficient of the means.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

NAN = math.nan


def is_unknown(label: Any) -> bool:
    """No region: None, a blank text, NaN or the code -1 (as in swclip_core.metrics)."""
    if label is None:
        return True
    if isinstance(label, str):
        return not label.strip()
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        return math.isnan(label) or label == -1
    return False


@dataclass
class RegionFigures:
    """The figures of one region (NaN where undefined, e.g. a region without samples)."""

    n: int = 0
    median_error_m: float = NAN
    mean_error_m: float = NAN
    acc_at_radius: float = NAN
    r_at_1: float = NAN


@dataclass
class Fairness:
    """Per-region figures (keyed by the region name as text) and the disparity figures."""

    regions: dict[str, RegionFigures] = field(default_factory=dict)
    median_error_max_min_ratio: float = NAN
    median_error_cv: float = NAN
    mean_error_gini: float = NAN
    overall_median_error_m: float = NAN


def gini(values: Sequence[float]) -> float:
    """``G = Σ_i Σ_j |x_i − x_j| / (2 n² x̄)``; NaN when the mean is 0."""
    mean = statistics.fmean(values)
    if mean == 0:
        return NAN
    total = sum(abs(a - b) for a in values for b in values)
    return total / (2 * len(values) ** 2 * mean)


def max_min_ratio(values: Sequence[float]) -> float:
    """Largest / smallest value; inf when the smallest is 0 (NaN when both are)."""
    low, high = min(values), max(values)
    if low == 0:
        return math.inf if high > 0 else NAN
    return high / low


def region_fairness(
    samples: Iterable[tuple[Any, float, bool | None]], radius_m: float = 1000.0
) -> Fairness:
    """Figures from ``(region label, error in metres, top-1 hit or None)`` per sample.

    Samples whose error is not finite are left out, as are unknown labels (:func:`is_unknown`)
    from the regional figures; the overall median covers every finite error. R@1 is NaN unless
    every scored sample has a hit flag.
    """
    scored = [(label, float(error), hit) for label, error, hit in samples if _finite(error)]
    result = Fairness()
    errors = [error for _, error, _ in scored]
    result.overall_median_error_m = statistics.median(errors) if errors else NAN
    with_hits = bool(scored) and all(hit is not None for _, _, hit in scored)
    grouped: dict[str, list[tuple[float, bool | None]]] = {}
    for label, error, hit in scored:
        if not is_unknown(label):
            grouped.setdefault(str(label), []).append((error, hit))
    for name in sorted(grouped):
        members = grouped[name]
        values = [error for error, _ in members]
        result.regions[name] = RegionFigures(
            n=len(values),
            median_error_m=statistics.median(values),
            mean_error_m=statistics.fmean(values),
            acc_at_radius=sum(error <= radius_m for error in values) / len(values),
            r_at_1=statistics.fmean(bool(hit) for _, hit in members) if with_hits else NAN,
        )
    if result.regions:
        medians = [figures.median_error_m for figures in result.regions.values()]
        means = [figures.mean_error_m for figures in result.regions.values()]
        average = statistics.fmean(medians)
        # Population standard deviation, as numpy's default.
        result.median_error_cv = statistics.pstdev(medians) / average if average > 0 else NAN
        result.median_error_max_min_ratio = max_min_ratio(medians)
        result.mean_error_gini = gini(means)
    return result


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
