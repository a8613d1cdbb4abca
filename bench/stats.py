"""Small, pure statistics: percentiles, per-run series (median and range), ratios and differences."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` (0..1) percentile, interpolated linearly between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Series:
    """One number per run, and its median and range."""

    runs: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("a series needs at least one run")

    @classmethod
    def of(cls, values: Sequence[float]) -> Series:
        return cls(tuple(float(v) for v in values))

    @property
    def median(self) -> float:
        return float(statistics.median(self.runs))

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def as_dict(self) -> dict[str, object]:
        return {"runs": list(self.runs), "median": self.median, "min": self.low, "max": self.high}


def paired(gateway: Series, baseline: Series, how: str) -> Series:
    """Run by run: gateway / baseline ("ratio") or gateway - baseline ("difference").

    Both were measured in the same run, interleaved, so each pair saw the same machine; the median of the
    per-run results is steadier than a result of medians when the machine's load drifts.
    """
    if len(gateway.runs) != len(baseline.runs):
        raise ValueError(f"{len(gateway.runs)} gateway runs but {len(baseline.runs)} baseline runs")
    if how == "ratio":
        if any(b <= 0 for b in baseline.runs):
            raise ValueError("a ratio needs positive baseline values")
        return Series.of([g / b for g, b in zip(gateway.runs, baseline.runs, strict=True)])
    if how == "difference":
        return Series.of([g - b for g, b in zip(gateway.runs, baseline.runs, strict=True)])
    raise ValueError(f"unknown pairing {how!r}")


def throughput_mb_s(size_bytes: int, seconds: float) -> float:
    """Decimal megabytes (1e6 bytes) per second."""
    if seconds <= 0:
        raise ValueError("elapsed time must be positive")
    return size_bytes / seconds / 1e6
