"""The benchmark report: how figures read in the Markdown table, and the command line's defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import FULL, SMOKE, parse_args
from bench.model import Figure, Target
from bench.report import markdown_table, number, result_text, target_text, write
from bench.stats import Series, paired


def ratio_figure(gateway: list[float], baseline: list[float], target: float = 0.9) -> Figure:
    g, b = Series.of(gateway), Series.of(baseline)
    return Figure(
        key="download", title="GetImage MB/s, 512 MiB random image", upstream="nginx", unit="MB/s",
        gateway=g, gateway_label="GetImage", baseline=b, baseline_label="direct httpx streaming GET",
        result=paired(g, b, "ratio"), result_kind="ratio", result_unit="", target=Target(">=", target),
    )  # fmt: skip


def latency_figure() -> Figure:
    g, b = Series.of([1.4, 1.5, 2.0]), Series.of([1.0, 1.2, 1.1])
    return Figure(
        key="latency_p50", title="GetImageMeta p50 added latency", upstream="glance", unit="ms",
        gateway=g, gateway_label="GetImageMeta p50", baseline=b, baseline_label="direct httpx GET p50",
        result=paired(g, b, "difference"), result_kind="difference", result_unit="ms",
        target=Target("<=", 0.5),
    )  # fmt: skip


def rss_figure(peaks: list[float]) -> Figure:
    s = Series.of(peaks)
    return Figure(
        key="rss_peak", title="gateway peak RSS", upstream="glance", unit="MiB", gateway=s,
        gateway_label="peak RSS at 2 GiB", baseline=None, baseline_label="", result=s,
        result_kind="absolute", result_unit="MiB", target=Target("<=", 100.0),
    )  # fmt: skip


def test_numbers_keep_about_three_significant_figures() -> None:
    assert [number(v) for v in (1234.4, 56.78, 0.4321, -0.046)] == ["1234", "56.8", "0.43", "-0.05"]


def test_a_ratio_row() -> None:
    figure = ratio_figure([450, 460, 400], [500, 500, 500])
    assert result_text(figure) == "0.90 (0.80\u20130.92)"
    assert target_text(figure) == "\u2265 0.9"
    assert figure.met
    row = markdown_table([figure]).splitlines()[2]
    assert row == (
        "| GetImage MB/s, 512 MiB random image | nginx | GetImage: 450 (400\u2013460) MB/s "
        "| direct httpx streaming GET: 500 (500\u2013500) MB/s | 0.90 (0.80\u20130.92) | \u2265 0.9 | yes |"
    )


def test_a_missed_target_is_marked() -> None:
    figure = ratio_figure([300, 300, 300], [500, 500, 500])
    assert not figure.met
    assert markdown_table([figure]).splitlines()[2].endswith("| **no** |")


def test_added_latency_is_signed() -> None:
    figure = latency_figure()
    assert result_text(figure) == "+0.40 (+0.30\u2013+0.90) ms"
    assert target_text(figure) == "\u2264 +0.5 ms"
    assert figure.met


def test_an_absolute_figure_has_no_baseline() -> None:
    figure = rss_figure([80.5, 81.0, 120.0])
    assert result_text(figure) == "81.0 (80.5\u2013120) MiB"
    assert target_text(figure) == "\u2264 100 MiB"
    assert figure.met  # the median decides
    assert "| \u2014 |" in markdown_table([figure])
    assert not rss_figure([101.0, 99.0, 102.0]).met


def test_write_puts_every_run_into_the_json_and_draws_the_chart(tmp_path: Path) -> None:
    figures = [ratio_figure([450, 460, 400], [500, 500, 500]), latency_figure(), rss_figure([80, 81, 82])]
    info = {
        "smoke": True,
        "options": {"runs": 3},
        "machine": {"cpu_model": "cpu", "nproc": 2, "memory_gib": 24.0, "python": "3.11", "packages": {},
                    "nginx": "nginx/1.22.1", "glance": "33.0.0", "loadavg": ["0.5", "0.4", "0.3"]},
        "git": {"commit": "0123456789abcdef", "gateway_dirty": False},
        "finished_at": "2025-01-01T00:00:00Z",
        "duration_s": 12.0,
    }  # fmt: skip
    text = write(tmp_path, figures, info)
    document = json.loads((tmp_path / "bench.json").read_text())
    download = document["figures"][0]
    assert download["gateway"]["runs"] == [450, 460, 400]
    assert download["baseline"]["median"] == 500
    assert download["result"]["kind"] == "ratio" and download["met"] is True
    assert document["figures"][2]["baseline"] is None
    assert (tmp_path / "bench.md").read_text() == text
    assert markdown_table(figures) in text and "throughput.png" in text
    assert (tmp_path / "throughput.png").read_bytes().startswith(b"\x89PNG")


def test_command_line_defaults_full_and_smoke() -> None:
    full = parse_args([])
    assert (full.runs, full.size_mib, full.big_mib, full.calls, full.concurrency) == (3, 512, 2048, 2000, 50)
    assert full.upstreams == ["glance", "nginx"] and full.out.name == "results"
    smoke = parse_args(["--smoke", "--upstreams", "nginx", "--runs", "5"])
    assert smoke.runs == 5 and smoke.size_mib == SMOKE["size_mib"] < FULL["size_mib"]
    assert smoke.upstreams == ["nginx"] and smoke.out.parts[-2:] == ("results", "tmp")


@pytest.mark.parametrize(
    "argv", [["--upstreams", "s3"], ["--runs", "0"], ["--small-mib", "64", "--big-mib", "64"]]
)
def test_command_line_rejects_nonsense(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
