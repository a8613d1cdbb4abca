"""What one figure is: the gateway's numbers, its baseline's, the result compared with a target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.stats import Series

Op = Literal[">=", "<="]


@dataclass(frozen=True)
class Target:
    op: Op
    value: float

    def met(self, result: float) -> bool:
        return result >= self.value if self.op == ">=" else result <= self.value


@dataclass(frozen=True)
class Figure:
    """One row of the table: one figure on one upstream.

    `gateway` and `baseline` are the measured values per run (in `unit`); `result` is what the target is
    about, per run: the ratio gateway/baseline, the difference gateway - baseline ("added" latency, RSS
    growth), or the gateway's absolute value. Its median decides whether the target is met.
    """

    key: str
    title: str
    upstream: str
    unit: str
    gateway: Series
    gateway_label: str
    baseline: Series | None
    baseline_label: str
    result: Series
    result_kind: Literal["ratio", "difference", "absolute"]
    result_unit: str
    target: Target

    @property
    def met(self) -> bool:
        return self.target.met(self.result.median)

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "title": self.title,
            "upstream": self.upstream,
            "unit": self.unit,
            "gateway": {"label": self.gateway_label, **self.gateway.as_dict()},
            "baseline": (
                None if self.baseline is None else {"label": self.baseline_label, **self.baseline.as_dict()}
            ),
            "result": {"kind": self.result_kind, "unit": self.result_unit, **self.result.as_dict()},
            "target": {"op": self.target.op, "value": self.target.value, "of": "result median"},
            "met": self.met,
        }
