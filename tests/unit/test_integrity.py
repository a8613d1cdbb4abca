import asyncio
import hashlib
import os

import grpc
import pytest

from gateway.errors import Failure, GatewayError, Operation
from gateway.integrity import DataCheck, image_digests, upload_digests

DATA = b"glance" * 1000
# Chunks this large are hashed on a worker thread, beside the event loop.
BIG_CHUNKS = [os.urandom(200 * 1024) for _ in range(12)]


def stream(check: DataCheck, chunks: list[bytes], finish: bool = True) -> None:
    async def feed() -> None:
        for chunk in chunks:
            await check.update(chunk)
        if finish:
            await check.finish()

    asyncio.run(feed())


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def test_matching_stream_passes() -> None:
    check = DataCheck(Operation.UPLOAD, len(DATA), {"sha512": hashlib.sha512(DATA).hexdigest()})
    stream(check, pieces(DATA, 700))
    assert check.count == len(DATA)


@pytest.mark.parametrize("algo", ["sha512", "md5"])
def test_large_chunks_hashed_off_the_loop_stay_in_order(algo: str) -> None:
    whole = b"".join(BIG_CHUNKS)
    check = DataCheck(Operation.DOWNLOAD, len(whole), {algo: hashlib.new(algo, whole).hexdigest()})
    stream(check, BIG_CHUNKS)
    swapped = DataCheck(Operation.DOWNLOAD, len(whole), {algo: hashlib.new(algo, whole).hexdigest()})
    with pytest.raises(GatewayError) as caught:
        stream(swapped, [BIG_CHUNKS[1], BIG_CHUNKS[0], *BIG_CHUNKS[2:]])
    assert caught.value.reason == "CHECKSUM_MISMATCH"


def test_small_chunks_queue_behind_large_ones_in_order() -> None:
    mixed = [piece for big in BIG_CHUNKS for piece in (big, os.urandom(100))]
    whole = b"".join(mixed)
    check = DataCheck(Operation.UPLOAD, len(whole), {"sha512": hashlib.sha512(whole).hexdigest()})
    stream(check, mixed)
    reordered = DataCheck(Operation.UPLOAD, len(whole), {"sha512": hashlib.sha512(whole).hexdigest()})
    with pytest.raises(GatewayError):
        stream(reordered, [mixed[0], mixed[2], mixed[1], *mixed[3:]])


def test_longer_stream_fails_on_the_chunk_that_overflows() -> None:
    check = DataCheck(Operation.UPLOAD, 10)
    stream(check, [b"x" * 10], finish=False)
    with pytest.raises(GatewayError) as caught:
        stream(check, [b"y"], finish=False)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH")


def test_shorter_stream_fails_at_the_end() -> None:
    check = DataCheck(Operation.UPLOAD, 10)
    with pytest.raises(GatewayError) as caught:
        stream(check, [b"x" * 9])
    assert caught.value.reason == "SIZE_MISMATCH"


def test_download_size_failure_is_its_own_outcome() -> None:
    check = DataCheck(Operation.DOWNLOAD, 10, size_failure=Failure.UPSTREAM_BROKEN)
    with pytest.raises(GatewayError) as caught:
        stream(check, [b"x"])
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("algo", ["sha512", "md5"])
@pytest.mark.parametrize("data", [DATA, b"".join(BIG_CHUNKS)], ids=["small", "big"])
def test_digest_mismatch_is_data_loss(algo: str, data: bytes) -> None:
    check = DataCheck(Operation.DOWNLOAD, None, {algo: hashlib.new(algo, data).hexdigest()})
    with pytest.raises(GatewayError) as caught:
        stream(check, pieces(data[:-1] + b"X", 300 * 1024))
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.DATA_LOSS, "CHECKSUM_MISMATCH")


def test_upload_digests_are_checked_and_lowered() -> None:
    sha = hashlib.sha512(DATA).hexdigest()
    assert upload_digests(sha.upper(), "") == {"sha512": sha}
    for bad in (("abc", ""), ("", "xyz"), ("", "0" * 31)):
        with pytest.raises(GatewayError) as caught:
            upload_digests(*bad)
        assert caught.value.reason == "INVALID_CHECKSUM"


def test_image_digest_prefers_os_hash_then_md5() -> None:
    assert image_digests({"os_hash_algo": "sha512", "os_hash_value": "AB", "checksum": "cd"}) == {
        "sha512": "ab"
    }
    assert image_digests({"os_hash_algo": None, "os_hash_value": None, "checksum": "CD"}) == {"md5": "cd"}
    assert image_digests({"os_hash_algo": "no-such-algo", "os_hash_value": "x", "checksum": None}) == {}
