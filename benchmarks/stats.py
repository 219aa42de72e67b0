"""Percentiles of latency samples, and medians of repeated runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction)


def latency_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50, p90, p99, mean, min and max in milliseconds, and the sample count."""
    values = sorted(ns / 1e6 for ns in samples_ns)
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values) if values else math.nan,
        "min": values[0] if values else math.nan,
        "max": values[-1] if values else math.nan,
        "n": len(values),
    }


def median_of_runs(runs: Sequence[Any]) -> Any:
    """The median of each number across runs of the same shape; other leaves from the first.

    Dicts are merged key by key (a key missing from some runs takes the median of the
    runs that have it); lists and strings are taken from the first run.
    """
    if not runs:
        return None
    first = runs[0]
    if isinstance(first, dict):
        keys: list[str] = []
        for run in runs:
            keys.extend(key for key in run if key not in keys)
        return {
            key: median_of_runs([run[key] for run in runs if isinstance(run, dict) and key in run])
            for key in keys
        }
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    numbers = [run for run in runs if isinstance(run, int | float) and not isinstance(run, bool)]
    finite = [n for n in numbers if not math.isnan(n)]
    if not finite:
        return math.nan
    median = statistics.median(finite)
    return (
        int(median) if all(isinstance(n, int) for n in finite) and median == int(median) else median
    )
