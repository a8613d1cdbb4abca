"""`python -m chaos [--smoke]`: every fault-and-abuse scenario; writes chaos.json and chaos.md.

Exits non-zero when any scenario fails what it must show (the table is written either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from chaos import report
from chaos.env import Env, FeatureMissing, log_stderr
from chaos.model import Outcome
from chaos.plan import FULL, SMOKE
from chaos.scenarios import SCENARIOS
from harness import provenance

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Faults and abuse against the gateway (a real process) in front of a real Glance "
        "(3 uWSGI workers, started here): cancelled transfers, Glance or the gateway killed mid-transfer, "
        "junk, sustained load, overload and stalled clients. Prints a table; writes chaos.md and chaos.json.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="every scenario scaled down (CI, under 3 minutes)"
    )
    parser.add_argument(
        "--only", help="comma-separated scenario numbers or keys to run (default: all), e.g. --only 2,junk"
    )
    parser.add_argument("--out", type=Path, help="results directory (default chaos/results, smoke: .../tmp)")
    args = parser.parse_args(argv)
    args.plan = SMOKE if args.smoke else FULL
    described = [s.describe(args.plan) for s in SCENARIOS]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        known = {str(o.number) for o in described} | {o.key for o in described}
        if not wanted or wanted - known:
            parser.error(f"--only takes scenario numbers or keys among: {', '.join(sorted(known))}")
        args.selected = [i for i, o in enumerate(described) if str(o.number) in wanted or o.key in wanted]
    else:
        args.selected = list(range(len(SCENARIOS)))
    if args.out is None:
        args.out = RESULTS / "tmp" if args.smoke else RESULTS
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so Glance and every gateway started so far are stopped.
    raise SystemExit(128 + signum)


def run_one(env: Env, index: int, plan: Any) -> Outcome:
    scenario = SCENARIOS[index]
    outcome = scenario.describe(plan)
    log_stderr(f"{outcome.number}. {outcome.title}: starting")
    started = time.monotonic()
    try:
        env.ensure_glance()
        scenario.run(env, plan, outcome)
    except FeatureMissing as missing:
        outcome.not_available(str(missing))
    except Exception as exc:  # one broken scenario must not stop the others or the report
        outcome.error = f"{type(exc).__name__}: {exc}"[:500]
        outcome.note("traceback: " + traceback.format_exc()[-1500:])
        log_stderr(traceback.format_exc())
    finally:
        problems = env.gateway_problems()
        env.stop_gateways()
    if problems:
        outcome.figures["gateway_log_problems"] = problems
        if not outcome.passed:
            outcome.note("gateway log (warnings/errors): " + " / ".join(problems[-4:]))
    outcome.seconds = time.monotonic() - started
    log_stderr(f"{outcome.number}. {outcome.title}: {outcome.verdict} in {outcome.seconds:.0f} s")
    for check in outcome.checks:
        log_stderr(f"   {'ok ' if check.passed else 'NO '} {check.measured}")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill -USR1 <pid>` prints every thread's stack: where a hung scenario is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    started_at, started = provenance.now(), time.monotonic()
    info: dict[str, Any] = {
        "smoke": args.smoke,
        "plan": dataclasses.asdict(args.plan),
        "machine": provenance.machine_info(report.PACKAGES),
        "commit": report.commit(),
        "started_at": started_at,
    }
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="chaos-glance-") as state:
        env = Env(Path(state))
        log_stderr(f"starting glance (3 workers) in {state}")
        env.start()
        try:
            for index in args.selected:
                outcomes.append(run_one(env, index, args.plan))
        finally:
            env.close()
    info["finished_at"] = provenance.now()
    info["duration_s"] = time.monotonic() - started
    info["machine"]["loadavg_at_end"] = provenance.loadavg()
    report.write(args.out, outcomes, info)
    print(report.markdown_table(outcomes))
    failed = [o for o in outcomes if not o.passed]
    log_stderr(
        f"wrote {args.out}/chaos.json, chaos.md in {info['duration_s']:.0f} s; "
        + (
            f"FAILED: {', '.join(f'{o.number} {o.key} ({o.verdict})' for o in failed)}"
            if failed
            else "all pass"
        )
    )
    return 1 if failed else 0


def run(argv: Sequence[str] | None = None) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:
        log_stderr("interrupted: everything the suite started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(run())
