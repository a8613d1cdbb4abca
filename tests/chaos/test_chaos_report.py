"""The chaos suite's own logic: verdicts, the figures' arithmetic, the table and the command line."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from chaos.__main__ import parse_args
from chaos.model import CLIENT_FAULT_CODES, Outcome, Samples, counts_text, outside, percentile
from chaos.plan import FULL, SMOKE
from chaos.report import cell, markdown, markdown_table, measured_text, write
from chaos.scenarios import SCENARIOS


def outcome(number: int = 1, **checks: bool) -> Outcome:
    result = Outcome(number=number, key=f"k{number}", title=f"title {number}", done="did | it", must_show="x")
    for name, passed in checks.items():
        result.check(name, passed, f"{name} measured")
    return result


def info(smoke: bool = True) -> dict[str, object]:
    machine = {"cpu_model": "cpu", "nproc": 2, "memory_gib": 8.0, "loadavg": ["0.1", "0.2", "0.3"],
               "python": "3.11", "packages": {"grpcio": "1"}, "glance": "33.0.0"}  # fmt: skip
    return {"smoke": smoke, "machine": machine, "commit": "abc1234+dirty", "finished_at": "now",
            "duration_s": 12.0}  # fmt: skip


def test_an_outcome_passes_only_with_every_check_passed() -> None:
    assert outcome(a=True, b=True).verdict == "pass"
    assert outcome(a=True, b=False).verdict == "fail"
    assert not outcome().passed, "a scenario that measured nothing has shown nothing"


def test_a_missing_feature_fails_as_not_available_even_with_passing_checks() -> None:
    result = outcome(a=True)
    result.not_available("the gateway does not know --stall-timeout 3")
    assert not result.passed
    assert result.verdict == "not available"
    assert "not available: the gateway does not know --stall-timeout 3" in measured_text(result)


def test_an_error_fails_the_scenario() -> None:
    result = outcome(a=True)
    result.error = "RuntimeError: boom"
    assert result.verdict == "error"
    assert measured_text(result).endswith("error: RuntimeError: boom")


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_status_counts_read_largest_first_and_disallowed_ones_are_found() -> None:
    counts = Counter({"OK": 3, "INVALID_ARGUMENT": 10, "INTERNAL": 1, "UNKNOWN": 0})
    assert counts_text(counts) == "INVALID_ARGUMENT 10, OK 3, INTERNAL 1"
    assert outside(counts, CLIENT_FAULT_CODES) == {"INTERNAL": 1}
    assert counts_text({}) == "none"


def test_memory_growth_compares_the_last_quarter_with_the_second() -> None:
    ramp_then_flat = Samples((10.0, 40.0, 60.0, 60.0, 61.0, 60.0, 60.0, 61.0, 60.0, 61.0, 60.0, 60.0))
    assert ramp_then_flat.growth() <= 1.0 and ramp_then_flat.flat(5.0)
    assert (ramp_then_flat.start, ramp_then_flat.peak, ramp_then_flat.end) == (10.0, 61.0, 60.0)
    leaking = Samples(tuple(50.0 + 2 * i for i in range(16)))
    assert leaking.growth() == pytest.approx(16.0)
    assert not leaking.flat(10.0)


def test_table_cells_escape_pipes_and_line_breaks() -> None:
    assert cell("a | b\nc") == "a \\| b<br>c"


def test_a_table_row_per_scenario_with_its_verdict() -> None:
    rows = markdown_table([outcome(1, a=True), outcome(2, a=False)]).splitlines()
    assert rows[0] == "| scenario | what was done | must show | measured | pass |"
    assert rows[2] == "| 1. title 1 | did \\| it | x | a measured | yes |"
    assert rows[3].endswith("| \u2717 a measured | **no** |")


def test_the_report_names_the_commit_and_the_failures(tmp_path: Path) -> None:
    results = [outcome(1, a=True), outcome(2, a=False)]
    results[1].note("leftover by status: saving 2")
    text = write(tmp_path, results, info())
    assert "Commit abc1234+dirty" in text and "1 of 2 scenarios pass; failing: 2 (fail)" in text
    assert "- leftover by status: saving 2" in text
    assert (tmp_path / "chaos.md").read_text() == text
    document = json.loads((tmp_path / "chaos.json").read_text())
    assert document["passed"] is False
    assert [s["verdict"] for s in document["scenarios"]] == ["pass", "fail"]


def test_nan_figures_are_written_as_null(tmp_path: Path) -> None:
    result = outcome(1, a=True)
    result.figures["p99_s"] = math.nan
    write(tmp_path, [result], info())
    assert json.loads((tmp_path / "chaos.json").read_text())["scenarios"][0]["figures"]["p99_s"] is None
    assert "Full run" in markdown([result], info(smoke=False))


def test_command_line_defaults_and_selection() -> None:
    smoke = parse_args(["--smoke"])
    assert smoke.plan is SMOKE and smoke.out.parts[-2:] == ("results", "tmp")
    assert smoke.selected == list(range(len(SCENARIOS)))
    full = parse_args(["--only", "2,junk"])
    assert full.plan is FULL and full.out.name == "results"
    assert full.selected == [1, 4]
    with pytest.raises(SystemExit):
        parse_args(["--only", "nine"])


def test_smoke_runs_every_scenario_smaller() -> None:
    assert SMOKE.cancel_downloads < FULL.cancel_downloads
    assert SMOKE.junk_requests < FULL.junk_requests
    assert SMOKE.upload_callers >= 10, "cancelled uploads need at least 10 concurrent callers, smoke too"
    assert SMOKE.stall_image_mib >= 64, "a stalled download must outgrow every flow-control window"
    assert [s.describe(SMOKE).number for s in SCENARIOS] == list(range(1, 9))
