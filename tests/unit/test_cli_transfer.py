"""gateway.cli.transfer's download to a file: resumes after breaks, renames only a verified file.

A fake client stands in for gateway.client.Client (tests/integration/test_cli.py runs the real one).
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from gateway.cli.commands import CommandError
from gateway.cli.transfer import RETRIES, download_to_file
from gateway.client import Client, ServiceUnavailable

DATA = bytes(range(256)) * 4096  # 1 MiB
CHUNK = 64 * 1024


class FakeClient:
    """Serves DATA; each GetImage call in `breaks` fails with UNAVAILABLE after that many bytes."""

    def __init__(self, breaks: list[int] | None = None) -> None:
        self.breaks = list(breaks or [])
        self.calls = 0
        self.offsets: list[int] = []

    def get_image_meta(self, image_id_or_uri: str) -> dict[str, Any]:
        return {
            "id": "img",
            "status": "active",
            "size": len(DATA),
            "checksum": hashlib.md5(DATA).hexdigest(),
            "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(DATA).hexdigest(),
        }

    def get_image(
        self, image_id_or_uri: str, *, offset: int = 0, verify: str = "gateway"
    ) -> tuple[dict[str, Any], Iterator[bytes]]:
        assert verify == "none"  # the CLI hashes the whole file itself
        self.calls += 1
        self.offsets.append(offset)
        stop = self.breaks.pop(0) if self.breaks else None
        return self.get_image_meta(image_id_or_uri), self._chunks(offset, stop)

    def _chunks(self, offset: int, stop: int | None) -> Iterator[bytes]:
        for start in range(offset, len(DATA), CHUNK):
            if stop is not None and start >= stop:
                raise ServiceUnavailable("gateway went away", code=grpc.StatusCode.UNAVAILABLE)
            yield DATA[start : start + CHUNK]


def _download(client: FakeClient, target: Path) -> None:
    args = argparse.Namespace(image="img", file=str(target), no_progress=True)
    download_to_file(args, cast(Client, client))


def test_breaks_are_resumed_from_what_is_on_disk(tmp_path: Path) -> None:
    client = FakeClient(breaks=[3 * CHUNK, 5 * CHUNK])
    _download(client, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == DATA and not (tmp_path / "out.part").exists()
    assert client.offsets == [0, 3 * CHUNK, 5 * CHUNK]  # each retry asks only for what is missing


def test_too_many_breaks_keep_the_part_for_the_next_run(tmp_path: Path) -> None:
    client = FakeClient(breaks=[(i + 1) * CHUNK for i in range(RETRIES + 1)])
    with pytest.raises(ServiceUnavailable):
        _download(client, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "out.part").read_bytes() == DATA[: (RETRIES + 1) * CHUNK]
    _download(FakeClient(), tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == DATA


def test_a_ranged_client_is_asked_for_the_rest_only(tmp_path: Path) -> None:
    (tmp_path / "out.part").write_bytes(DATA[:1000])
    client = FakeClient()
    _download(client, tmp_path / "out")
    assert client.offsets == [1000]
    assert (tmp_path / "out").read_bytes() == DATA


def test_a_complete_but_wrong_part_is_kept(tmp_path: Path) -> None:
    (tmp_path / "out.part").write_bytes(b"x" * len(DATA))
    client = FakeClient()
    with pytest.raises(CommandError, match="does not match the image's sha512"):
        _download(client, tmp_path / "out")
    assert client.calls == 0 and (tmp_path / "out.part").exists() and not (tmp_path / "out").exists()


def test_a_part_longer_than_the_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out.part").write_bytes(DATA + b"more")
    with pytest.raises(CommandError, match="longer than the image"):
        _download(FakeClient(), tmp_path / "out")
