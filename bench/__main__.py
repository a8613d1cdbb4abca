"""`python -m bench [--smoke]`: every figure on every upstream; writes bench.json, bench.md and a chart."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.figures import Plan, UpstreamBench, log_stderr, upload_data
from bench.model import Figure
from bench.upstreams import UPSTREAMS, find_nginx
from harness import provenance

MIB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"
FULL = {"runs": 3, "size_mib": 512, "small_mib": 64, "big_mib": 2048, "calls": 2000, "concurrency": 50,
        "calls_per_caller": 40, "channels": 8, "callers_per_channel": 4, "streams": 4}  # fmt: skip
FIGURE_ORDER = (
    "download", "download_unverified", "upload", "glanceclient", "rss_peak", "rss_flat", "latency_p50",
    "latency_p99", "concurrency", "workers_meta", "workers_download",
)  # fmt: skip
# Seconds, not minutes: only that every path of the harness still works.
SMOKE = {"runs": 3, "size_mib": 4, "small_mib": 4, "big_mib": 8, "calls": 50, "concurrency": 5,
         "calls_per_caller": 10, "channels": 4, "callers_per_channel": 2, "streams": 2}  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The gateway against direct REST calls to the same upstream (a real Glance and a static "
        "nginx), each figure as the median of several interleaved runs and as a ratio to its baseline.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness in seconds")
    parser.add_argument("--runs", type=int, help=f"runs per figure (default {FULL['runs']})")
    parser.add_argument(
        "--size-mib", type=int, help=f"image size for throughput (default {FULL['size_mib']})"
    )
    parser.add_argument("--small-mib", type=int, help=f"smaller RSS size (default {FULL['small_mib']})")
    parser.add_argument("--big-mib", type=int, help=f"bigger RSS size (default {FULL['big_mib']})")
    parser.add_argument(
        "--calls", type=int, help=f"sequential GetImageMeta calls per run (default {FULL['calls']})"
    )
    parser.add_argument("--concurrency", type=int, help=f"concurrent callers (default {FULL['concurrency']})")
    parser.add_argument(
        "--calls-per-caller",
        type=int,
        help=f"calls of each concurrent caller (default {FULL['calls_per_caller']})",
    )
    parser.add_argument(
        "--channels",
        type=int,
        help=f"client connections for the --workers metadata figure (default {FULL['channels']})",
    )
    parser.add_argument(
        "--callers-per-channel",
        type=int,
        help=f"concurrent callers on each of those connections (default {FULL['callers_per_channel']})",
    )
    parser.add_argument(
        "--streams",
        type=int,
        help=f"concurrent downloads for the --workers figure (default {FULL['streams']})",
    )
    parser.add_argument("--upstreams", default="glance,nginx", help="comma-separated (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, help="results directory (default bench/results, smoke: bench/results/tmp)"
    )
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.small_mib >= args.big_mib:
        parser.error("--small-mib must be below --big-mib")
    names = [name.strip() for name in args.upstreams.split(",") if name.strip()]
    unknown = [name for name in names if name not in UPSTREAMS]
    if not names or unknown:
        parser.error(f"--upstreams takes a list of {', '.join(UPSTREAMS)}")
    args.upstreams = names
    if args.out is None:
        args.out = RESULTS / "tmp" if args.smoke else RESULTS
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every upstream and gateway started so far is stopped.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    # Ctrl-C must stop the bench and everything it started, even when started with SIGINT ignored (`cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    plan = Plan(
        runs=args.runs,
        size=args.size_mib * MIB,
        rss_small=args.small_mib * MIB,
        rss_big=args.big_mib * MIB,
        calls=args.calls,
        concurrency=args.concurrency,
        calls_per_caller=args.calls_per_caller,
        channels=args.channels,
        callers_per_channel=args.callers_per_channel,
        streams=args.streams,
    )
    nginx = find_nginx() if "nginx" in args.upstreams else None
    started_at, started = provenance.now(), time.monotonic()
    info: dict[str, Any] = {
        "smoke": args.smoke,
        "options": {key: getattr(args, key) for key in (*FULL, "upstreams")},
        "machine": report.machine_info(nginx),
        "git": report.git_info(),
        "started_at": started_at,
    }
    if plan.runs < 3:
        log_stderr(f"only {plan.runs} runs per figure: the issue asks for at least 3")
    log_stderr("preparing upload data")
    uploads = upload_data(plan)
    figures: list[Figure] = []
    for name in args.upstreams:
        log_stderr(f"{name}: starting")
        with UPSTREAMS[name]() as upstream:
            log_stderr(f"{name}: up at {upstream.url}")
            figures.extend(UpstreamBench(upstream, plan, uploads, log_stderr).run())
        log_stderr(f"{name}: stopped")
    figures.sort(key=lambda f: (FIGURE_ORDER.index(f.key), args.upstreams.index(f.upstream)))
    info["finished_at"] = provenance.now()
    info["duration_s"] = time.monotonic() - started
    info["machine"]["loadavg_at_end"] = provenance.loadavg()
    report.write(args.out, figures, info)
    print(report.markdown_table(figures))
    log_stderr(f"wrote {args.out}/bench.json, bench.md, throughput.png in {info['duration_s']:.0f} s")
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:
        log_stderr("interrupted: everything the bench started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(run())
