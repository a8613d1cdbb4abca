"""The results: chaos.json (every figure) and chaos.md (one table), in the style of bench/report.py."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.model import Outcome
from harness.provenance import run

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("grpcio", "protobuf", "httpx", "aiohttp", "hypothesis", "psutil")
VERDICTS = {
    "pass": "yes",
    "fail": "**no**",
    "error": "**no** (error)",
    "not available": "**no** (not available)",
}


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks as <br>."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>").strip()


def measured_text(outcome: Outcome) -> str:
    parts = [("" if c.passed else "✗ ") + c.measured for c in outcome.checks]
    if outcome.error is not None:
        parts.append(f"error: {outcome.error}")
    parts += [n for n in outcome.notes if n.startswith("not available")]
    return "; ".join(parts) or "nothing measured"


def markdown_table(outcomes: Sequence[Outcome]) -> str:
    lines = ["| scenario | what was done | must show | measured | pass |", "|---|---|---|---|---|"]
    for o in outcomes:
        cells = (f"{o.number}. {o.title}", o.done, o.must_show, measured_text(o), VERDICTS[o.verdict])
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def notes_section(outcomes: Sequence[Outcome]) -> str:
    lines = ["## Notes per scenario", ""]
    for o in outcomes:
        extra = [n for n in o.notes if not n.startswith("not available")]
        if not extra:
            continue
        lines.append(f"**{o.number}. {o.title}** ({o.seconds:.0f} s)")
        lines.append("")
        lines += [f"- {n}" for n in extra]
        lines.append("")
    return "\n".join(lines)


def markdown(outcomes: Sequence[Outcome], info: dict[str, Any]) -> str:
    machine = info["machine"]
    mode = "Smoke run (every scenario, scaled down)" if info["smoke"] else "Full run"
    command = "make chaos-smoke" if info["smoke"] else "make chaos"
    load = f"load average {' '.join(machine['loadavg'])} at the start"
    if "loadavg_at_end" in machine:
        load += f", {' '.join(machine['loadavg_at_end'])} at the end"
    failed = [o for o in outcomes if not o.passed]
    summary = (
        f"{len(outcomes) - len(failed)} of {len(outcomes)} scenarios pass"
        + (f"; failing: {', '.join(f'{o.number} ({o.verdict})' for o in failed)}" if failed else "")
        + "."
    )
    header = [
        "# Chaos: faults and abuse against the gateway",
        "",
        f"{mode}; `{command}` on {info['finished_at']}, {info['duration_s']:.0f} s. Commit {info['commit']}. "
        f"{summary}",
        "",
        f"Machine: {machine['cpu_model']}, {machine['nproc']} CPUs, {machine['memory_gib']:.0f} GiB, {load}; "
        f"Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
        + f"; Glance {machine['glance']}.",
        "",
        "Upstream: a real Glance 33 (uWSGI, 3 workers, SQLite, file store, uWSGI socket-timeout 30 s) on "
        "loopback, started by the suite; the gateway runs as a real process (`python -m gateway`), a fresh "
        "one per scenario, with the flags the scenario names. No fake upstream is used. Records left in "
        "Glance are counted straight from Glance's REST API. Every raw figure is in "
        "[chaos.json](chaos.json).",
        "",
        "",
    ]
    return "\n".join(header) + markdown_table(outcomes) + "\n" + notes_section(outcomes)


# -- machine and provenance ------------------------------------------------------------


def commit() -> str:
    """`git rev-parse --short HEAD`, plus "+dirty" when the work tree has uncommitted changes."""
    head = run(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]))
    return head + ("+dirty" if dirty else "")


def _plain(value: Any) -> Any:
    """JSON without NaN (not valid JSON): NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write(out: Path, outcomes: Sequence[Outcome], info: dict[str, Any]) -> str:
    """Writes chaos.json and chaos.md into `out`; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    document = _plain({**info, "passed": all(o.passed for o in outcomes),
                       "scenarios": [o.as_dict() for o in outcomes]})  # fmt: skip
    (out / "chaos.json").write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    text = markdown(outcomes, info)
    (out / "chaos.md").write_text(text)
    return text
