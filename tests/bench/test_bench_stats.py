"""The benchmark harness's arithmetic: percentiles, per-run series, pairing, targets, the data it sends."""

from __future__ import annotations

import hashlib

import pytest

from bench.data import MIB, UploadData
from bench.figures import interleaved, size_label
from bench.model import Target
from bench.stats import Series, paired, percentile, throughput_mb_s
from harness.data import pseudo_random_chunks


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile(values, 0.5) == 2.5
    assert percentile(values, 0.99) == pytest.approx(3.97)
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_p99_of_a_hundred_calls_sees_the_slow_tail() -> None:
    latencies = [1.0] * 98 + [50.0, 100.0]
    assert percentile(latencies, 0.5) == 1.0
    assert percentile(latencies, 0.99) == pytest.approx(50.5)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_percentile_rejects_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], fraction)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_series_median_and_range() -> None:
    series = Series.of([3, 1, 2])
    assert (series.median, series.low, series.high) == (2.0, 1.0, 3.0)
    assert Series.of([1, 2, 3, 10]).median == 2.5
    assert series.as_dict() == {"runs": [3.0, 1.0, 2.0], "median": 2.0, "min": 1.0, "max": 3.0}
    with pytest.raises(ValueError):
        Series.of([])


def test_pairing_is_run_by_run() -> None:
    gateway = Series.of([90, 100, 80])
    baseline = Series.of([100, 100, 100])
    assert paired(gateway, baseline, "ratio").runs == (0.9, 1.0, 0.8)
    assert paired(gateway, baseline, "difference").runs == (-10.0, 0.0, -20.0)
    # Run by run, not a ratio of medians: a slow baseline run pairs with its own gateway run.
    assert paired(Series.of([50, 100, 100]), Series.of([50, 100, 200]), "ratio").median == 1.0


def test_pairing_refuses_what_cannot_be_paired() -> None:
    with pytest.raises(ValueError):
        paired(Series.of([1, 2]), Series.of([1, 2, 3]), "ratio")
    with pytest.raises(ValueError):
        paired(Series.of([1]), Series.of([0]), "ratio")
    with pytest.raises(ValueError):
        paired(Series.of([1]), Series.of([1]), "quotient")


def test_throughput_is_decimal_megabytes_per_second() -> None:
    assert throughput_mb_s(512 * MIB, 1.0) == pytest.approx(536.870912)
    with pytest.raises(ValueError):
        throughput_mb_s(1, 0.0)


def test_targets_count_the_boundary_as_met() -> None:
    assert Target(">=", 0.9).met(0.9) and not Target(">=", 0.9).met(0.899)
    assert Target("<=", 0.5).met(0.5) and not Target("<=", 0.5).met(0.51)


def test_interleaving_alternates_which_side_goes_first() -> None:
    order: list[str] = []

    def side(name: str, value: float) -> float:
        order.append(name)
        return value

    pairs = interleaved(3, lambda: side("gateway", 1.0), lambda: side("baseline", 2.0))
    assert pairs == [(1.0, 2.0)] * 3
    assert order == ["gateway", "baseline", "baseline", "gateway", "gateway", "baseline"]


def test_upload_data_is_the_same_bytes_every_time() -> None:
    data = UploadData(3 * MIB + 5, seed=1)
    first = b"".join(data.chunks())
    assert len(first) == data.size and first == b"".join(data.chunks())
    assert all(len(chunk) <= MIB for chunk in data.chunks())
    digests = data.digests()
    assert (digests.size, digests.sha512) == (data.size, hashlib.sha512(first).hexdigest())
    assert digests.md5 == hashlib.md5(first).hexdigest()


def test_upload_data_is_made_a_chunk_at_a_time() -> None:
    # One randbytes() call cannot make 512 MiB, so the buffer is the same stream the seeding uses.
    assert b"".join(UploadData(2 * MIB + 3, seed=9).chunks()) == b"".join(
        pseudo_random_chunks(9, 2 * MIB + 3)
    )


def test_upload_data_bigger_than_its_buffer_repeats_the_buffer() -> None:
    data = UploadData(5 * MIB, seed=2, max_buffer=2 * MIB)
    sent = b"".join(data.chunks())
    assert len(sent) == 5 * MIB
    assert sent[: 2 * MIB] == sent[2 * MIB : 4 * MIB] == sent[4 * MIB :] + sent[MIB : 2 * MIB]


def test_random_chunks_are_reproducible_and_exact() -> None:
    chunks = list(pseudo_random_chunks(5, 2 * MIB + 1))
    assert [len(c) for c in chunks] == [MIB, MIB, 1]
    assert b"".join(chunks) == b"".join(pseudo_random_chunks(5, 2 * MIB + 1))
    assert b"".join(chunks) != b"".join(pseudo_random_chunks(6, 2 * MIB + 1))


def test_size_labels() -> None:
    assert size_label(2048 * MIB) == "2 GiB"
    assert size_label(512 * MIB) == "512 MiB"
    assert size_label(1000) == "1000 bytes"
