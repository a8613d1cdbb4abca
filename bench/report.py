"""The results: bench.json (every number), bench.md (one table), throughput.png (one chart)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.model import Figure
from bench.stats import Series
from harness import provenance
from harness.provenance import run

REPO = Path(__file__).resolve().parents[1]
# Typographic dashes for the table (escaped: ruff rightly flags look-alikes written out in code).
DASH = "\u2013"
MINUS = "\u2212"
PACKAGES = ("grpcio", "protobuf", "httpx", "aiohttp", "python-glanceclient", "matplotlib")


# -- numbers as text -------------------------------------------------------------------


def number(value: float) -> str:
    """Three significant figures or so: 1234 → "1234", 56.78 → "56.8", 0.4321 → "0.43"."""
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def signed(value: float) -> str:
    text = number(value)
    return text if text.startswith("-") else f"+{text}"


def with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}" if unit else text


def series_text(series: Series, unit: str, sign: bool = False) -> str:
    fmt = signed if sign else number
    return with_unit(f"{fmt(series.median)} ({fmt(series.low)}{DASH}{fmt(series.high)})", unit)


def result_text(figure: Figure) -> str:
    if figure.result_kind == "ratio":
        r = figure.result
        return f"{r.median:.2f} ({r.low:.2f}{DASH}{r.high:.2f})"
    return series_text(figure.result, figure.result_unit, sign=figure.result_kind == "difference")


def target_text(figure: Figure) -> str:
    op = "≥" if figure.target.op == ">=" else "≤"
    value = figure.target.value
    if figure.result_kind == "ratio":
        return f"{op} {value:g}"
    shown = f"+{value:g}" if figure.result_kind == "difference" else f"{value:g}"
    return with_unit(f"{op} {shown}", figure.result_unit)


def markdown_table(figures: Sequence[Figure]) -> str:
    lines = [
        f"| figure | upstream | gateway | baseline | ratio or result: median (min{DASH}max) | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        gateway = f"{f.gateway_label}: {series_text(f.gateway, f.unit)}"
        baseline = "—" if f.baseline is None else f"{f.baseline_label}: {series_text(f.baseline, f.unit)}"
        met = "yes" if f.met else "**no**"
        cells = (f.title, f.upstream, gateway, baseline, result_text(f), target_text(f), met)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(figures: Sequence[Figure], info: dict[str, Any]) -> str:
    machine = info["machine"]
    git = info["git"]
    dirty = " (gateway/ had uncommitted changes)" if git.get("gateway_dirty") else ""
    mode = "Smoke run (tiny sizes: it checks the harness, not performance)" if info["smoke"] else "Full run"
    command = "make bench-smoke" if info["smoke"] else "make bench"
    load = f"load average {' '.join(machine['loadavg'])} at the start"
    if "loadavg_at_end" in machine:
        load += f", {' '.join(machine['loadavg_at_end'])} at the end"
    header = [
        "# Benchmark: the gateway against direct calls to the same upstream",
        "",
        f"{mode}; {info['options']['runs']} runs per figure, each gateway run interleaved with its baseline; "
        f"`{command}` on {info['finished_at']}, {info['duration_s']:.0f} s.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['nproc']} CPUs, {machine['memory_gib']:.0f} GiB, {load}; "
        f"Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
        + f"; {machine['nginx']}; Glance {machine['glance']}. Commit {git['commit'][:12]}{dirty}.",
        "",
        "Upstreams: **glance** is a real Glance 33 (uWSGI, 3 workers, SQLite, file store) on loopback; "
        "**nginx** is Debian's nginx serving the same `/v2/images/<id>` and `/v2/images/<id>/file` paths "
        "from static files (and taking PUT uploads), so the gateway's own cost is not hidden behind "
        "Glance's.",
        "",
        f"Ratios are gateway / baseline and differences are gateway {MINUS} baseline, per run; the median "
        f"over the runs is compared with the target (min{DASH}max in brackets). MB/s are 10^6 bytes per "
        "second; RSS is the gateway process's VmHWM from `/proc/<pid>/status`. Every raw number is in "
        "[bench.json](bench.json).",
        "",
        "",
    ]
    footer = ["", "![gateway vs direct throughput](throughput.png)", ""]
    return "\n".join(header) + markdown_table(figures) + "\n".join(footer)


# -- the chart ---------------------------------------------------------------------------


def throughput_chart(figures: Sequence[Figure], path: Path, smoke: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"download": "GetImage", "download_unverified": "GetImage\nunverified", "upload": "AddImage"}
    bars = [f for f in figures if f.key in names and f.baseline is not None]
    labels = [f"{names[f.key]}\n{f.upstream}" for f in bars]
    fig, ax = plt.subplots(figsize=(9.5, 4.8), dpi=120)
    width = 0.38
    positions = list(range(len(bars)))
    sides: list[tuple[float, str, list[Series]]] = [
        (-width / 2, "direct httpx", [f.baseline for f in bars if f.baseline is not None]),
        (width / 2, "gateway (gRPC)", [f.gateway for f in bars]),
    ]
    for offset, name, series in sides:
        medians = [s.median for s in series]
        errors = [[s.median - s.low for s in series], [s.high - s.median for s in series]]
        drawn = ax.bar([p + offset for p in positions], medians, width, yerr=errors, capsize=4, label=name)
        ax.bar_label(drawn, fmt="%.0f", label_type="center", fontsize=8)
    ax.set_xticks(positions, labels)
    ax.set_ylabel(f"MB/s (median, min{DASH}max)")
    size = bars[0].title.split(", ")[-1].removesuffix(" random image") if bars else ""
    ax.set_title(f"Throughput, gateway vs direct, {size} images" + (" (smoke run)" if smoke else ""))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- machine and provenance ------------------------------------------------------------


def machine_info(nginx: str | None) -> dict[str, Any]:
    info = provenance.machine_info(PACKAGES)
    info["nginx"] = run([nginx, "-v"]).removeprefix("nginx version: ") if nginx else "nginx not used"
    return info


def git_info() -> dict[str, Any]:
    return {
        "commit": run(["git", "rev-parse", "HEAD"]) or "unknown",
        "gateway_dirty": bool(run(["git", "status", "--porcelain", "--", "gateway", "generated"])),
    }


# -- writing it all ---------------------------------------------------------------------


def write(out: Path, figures: Sequence[Figure], info: dict[str, Any]) -> str:
    """Writes bench.json, bench.md and throughput.png into `out`; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    document = {**info, "figures": [f.as_dict() for f in figures]}
    (out / "bench.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    text = markdown(figures, info)
    (out / "bench.md").write_text(text)
    throughput_chart(figures, out / "throughput.png", smoke=bool(info.get("smoke")))
    return text
