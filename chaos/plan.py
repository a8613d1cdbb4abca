"""How big each scenario is: the full run (`make chaos`, ~8-10 min) and the smoke run (`make chaos-smoke`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    smoke: bool
    # 1. downloads cancelled mid-stream
    cancel_downloads: int
    cancel_concurrency: int
    cancel_image_mib: int
    # 2. uploads cancelled in bursts
    cancel_uploads: int
    upload_callers: int
    upload_kib: int
    leftover_wait_s: float
    # 3. Glance killed mid-transfer
    killed_downloads: int
    killed_uploads: int
    killed_image_mib: int
    # 4. gateway killed mid-upload
    sweep_wait_s: float
    # 5. junk
    junk_requests: int
    # 6. soak
    soak_streams: int
    soak_seconds: float
    soak_image_mib: int
    # 7. overload
    overload_streams: int
    overload_unary: int
    overload_image_kib: int
    overload_deadline_s: float
    # 8. stalled client
    stall_image_mib: int
    stall_timeout_s: float

    def but(self, **changes: object) -> Plan:
        return replace(self, **changes)  # type: ignore[arg-type]


FULL = Plan(
    smoke=False,
    cancel_downloads=1000, cancel_concurrency=20, cancel_image_mib=16,
    cancel_uploads=120, upload_callers=12, upload_kib=2048, leftover_wait_s=120.0,
    killed_downloads=1, killed_uploads=2, killed_image_mib=64,  # 3 calls: as many as Glance has workers
    sweep_wait_s=60.0,
    junk_requests=10_000,
    soak_streams=100, soak_seconds=60.0, soak_image_mib=2,
    overload_streams=500, overload_unary=1000, overload_image_kib=1024, overload_deadline_s=30.0,
    stall_image_mib=256, stall_timeout_s=3.0,
)  # fmt: skip

# Every scenario, scaled down to run in under 3 minutes on a 2-core machine; waits for a clean-up are shorter
# too, so that even a failing gateway keeps CI's run short.
SMOKE = Plan(
    smoke=True,
    cancel_downloads=100, cancel_concurrency=10, cancel_image_mib=8,
    cancel_uploads=30, upload_callers=10, upload_kib=1024, leftover_wait_s=30.0,
    killed_downloads=1, killed_uploads=2, killed_image_mib=32,
    sweep_wait_s=20.0,
    junk_requests=600,
    soak_streams=20, soak_seconds=10.0, soak_image_mib=1,
    overload_streams=100, overload_unary=200, overload_image_kib=256, overload_deadline_s=30.0,
    stall_image_mib=64, stall_timeout_s=3.0,
)  # fmt: skip
