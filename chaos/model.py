"""What one scenario gives back: what was done, what it must show, what was measured, and whether it passed.

Everything here is pure (no processes, no network) so that tests/chaos/ can check it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Codes a junk or overloaded call may end with: the caller's fault, or a clear "not now".
CLIENT_FAULT_CODES = frozenset(
    {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
)
# Codes that mean the gateway itself did not know what happened: never acceptable.
BUG_CODES = frozenset({"UNKNOWN", "INTERNAL"})


@dataclass(frozen=True)
class Check:
    """One thing a scenario must show, and whether it did."""

    name: str
    passed: bool
    measured: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "measured": self.measured}


@dataclass
class Outcome:
    """One row of the table.

    `available` is False when the gateway lacks a feature the scenario needs (a flag it does not know yet):
    the row then fails as "not available" rather than as a measured failure.
    """

    number: int
    key: str
    title: str
    done: str
    must_show: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    available: bool = True
    error: str | None = None
    seconds: float = 0.0

    def check(self, name: str, passed: bool, measured: str) -> bool:
        self.checks.append(Check(name, passed, measured))
        return passed

    def note(self, text: str) -> None:
        self.notes.append(text)

    def not_available(self, why: str) -> None:
        self.available = False
        self.notes.append(f"not available: {why}")

    @property
    def passed(self) -> bool:
        return (
            self.available and self.error is None and bool(self.checks) and all(c.passed for c in self.checks)
        )

    @property
    def verdict(self) -> str:
        if not self.available:
            return "not available"
        if self.error is not None:
            return "error"
        return "pass" if self.passed else "fail"

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "key": self.key,
            "title": self.title,
            "done": self.done,
            "must_show": self.must_show,
            "verdict": self.verdict,
            "passed": self.passed,
            "available": self.available,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "checks": [c.as_dict() for c in self.checks],
            "notes": self.notes,
            "figures": self.figures,
        }


# -- small statistics ------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def counts_text(counts: Counter[str] | dict[str, int]) -> str:
    """{"OK": 3, "NOT_FOUND": 1} -> "OK 3, NOT_FOUND 1" (largest first, then by name); "none" if empty."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in items) or "none"


def outside(counts: Counter[str] | dict[str, int], allowed: Iterable[str]) -> dict[str, int]:
    """The codes counted that are not allowed, with their counts."""
    allowed_set = set(allowed)
    return {k: v for k, v in counts.items() if v and k not in allowed_set}


@dataclass(frozen=True)
class Samples:
    """A resource (RSS in MiB, open fds) sampled over a run: start, peak, end, and whether it stayed flat."""

    values: tuple[float, ...]

    @property
    def start(self) -> float:
        return self.values[0] if self.values else math.nan

    @property
    def peak(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def end(self) -> float:
        return self.values[-1] if self.values else math.nan

    def growth(self) -> float:
        """How much the last quarter of the run sits above its second quarter (medians): a leak's slope.

        The first quarter is the ramp-up (pools, caches, allocator arenas), so it is left out.
        """
        n = len(self.values)
        if n < 8:
            return self.end - self.start if n else 0.0
        second = sorted(self.values[n // 4 : n // 2])
        last = sorted(self.values[3 * n // 4 :])
        return last[len(last) // 2] - second[len(second) // 2]

    def flat(self, tolerance: float) -> bool:
        return self.growth() <= tolerance


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
