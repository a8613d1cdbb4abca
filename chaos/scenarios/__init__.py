"""The scenarios, in the order they run: each has describe(plan) -> Outcome and run(env, plan, outcome)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chaos.env import Env
from chaos.model import Outcome
from chaos.plan import Plan
from chaos.scenarios import (
    s1_cancelled_downloads,
    s2_cancelled_uploads,
    s3_glance_killed,
    s4_gateway_killed,
    s5_junk,
    s6_soak,
    s7_overload,
    s8_stalled_client,
)


@dataclass(frozen=True)
class Scenario:
    describe: Callable[[Plan], Outcome]
    run: Callable[[Env, Plan, Outcome], None]


SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(module.describe, module.run)
    for module in (
        s1_cancelled_downloads,
        s2_cancelled_uploads,
        s3_glance_killed,
        s4_gateway_killed,
        s5_junk,
        s6_soak,
        s7_overload,
        s8_stalled_client,
    )
)
