import asyncio
import hashlib
import os
import threading

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
        # The last byte flipped (a fixed b"X" matched random data's last byte one run in 256).
        stream(check, pieces(data[:-1] + bytes([data[-1] ^ 1]), 300 * 1024))
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


def digest_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("digest")}


def wait_for_threads_to_end(threads: set[threading.Thread]) -> set[threading.Thread]:
    """Those of `threads` still alive after up to 2 s."""
    for thread in threads:
        thread.join(timeout=2)
    return {thread for thread in threads if thread.is_alive()}


def test_hash_algorithms_are_the_expected_digests_and_the_announced_ones() -> None:
    check = DataCheck(Operation.UPLOAD, None, {"md5": "0" * 32}, hash_algorithms=["sha512", "md5"])
    assert check.hash_algorithms == frozenset({"md5", "sha512"})
    assert check.verifies_digest
    announced_only = DataCheck(Operation.UPLOAD, hash_algorithms=["sha512"])
    assert announced_only.hash_algorithms == frozenset({"sha512"}) and announced_only.verifies_digest
    assert announced_only.expected_digests == {}
    nothing = DataCheck(Operation.UPLOAD, 10)
    assert nothing.hash_algorithms == frozenset() and not nothing.verifies_digest


def stream_then_expect(check: DataCheck, chunks: list[bytes], algo: str, value: str) -> None:
    """Streams the chunks, then gives the digest (as an upload's finish message does), then finishes."""

    async def feed() -> None:
        for chunk in chunks:
            await check.update(chunk)
        check.expect(algo, value)
        await check.finish()

    asyncio.run(feed())


@pytest.mark.parametrize("algo", ["sha512", "md5"])
@pytest.mark.parametrize("data", [DATA, b"".join(BIG_CHUNKS)], ids=["small", "big"])
def test_a_digest_given_at_the_end_is_checked_by_finish(algo: str, data: bytes) -> None:
    right = DataCheck(Operation.UPLOAD, hash_algorithms=[algo])
    stream_then_expect(right, pieces(data, 300 * 1024), algo, hashlib.new(algo, data).hexdigest())
    assert right.expected_digests == {algo: hashlib.new(algo, data).hexdigest()}

    wrong = DataCheck(Operation.UPLOAD, hash_algorithms=[algo])
    with pytest.raises(GatewayError) as caught:
        stream_then_expect(wrong, pieces(data, 300 * 1024), algo, hashlib.new(algo, data + b"x").hexdigest())
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.DATA_LOSS, "CHECKSUM_MISMATCH")


def test_a_hashed_algorithm_never_given_a_value_is_not_compared() -> None:
    # Requiring the value is the caller's job (upload: FINISH_DIGEST_MISSING); finish() checks what it has.
    check = DataCheck(Operation.UPLOAD, hash_algorithms=["sha512", "md5"])
    stream_then_expect(check, pieces(DATA, 700), "md5", hashlib.md5(DATA).hexdigest())
    assert check.expected_digests.keys() == {"md5"}


def test_expect_refuses_an_algorithm_not_hashed_from_the_start() -> None:
    for check in (
        DataCheck(Operation.UPLOAD),
        DataCheck(Operation.UPLOAD, hash_algorithms=["sha512"]),
        DataCheck(Operation.UPLOAD, None, {"sha512": hashlib.sha512(DATA).hexdigest()}),
    ):
        with pytest.raises(GatewayError) as caught:
            check.expect("md5", hashlib.md5(DATA).hexdigest())
        assert (caught.value.code, caught.value.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FINISH_DIGEST_NOT_ANNOUNCED",
        )
        assert "md5" not in check.expected_digests


def test_expect_must_agree_with_the_digest_expected_up_front() -> None:
    sha = hashlib.sha512(DATA).hexdigest()
    check = DataCheck(Operation.UPLOAD, None, {"sha512": sha}, hash_algorithms=["sha512"])
    check.expect("sha512", sha)
    with pytest.raises(GatewayError) as caught:
        check.expect("sha512", "f" * 128)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.DATA_LOSS, "CHECKSUM_MISMATCH")
    # The up-front value stands, and the data still has to match it.
    assert check.expected_digests == {"sha512": sha}
    stream(check, pieces(DATA, 700))


def test_close_lets_the_hashing_thread_go_and_may_be_called_again() -> None:
    before = digest_threads()

    async def hash_then_close() -> None:
        check = DataCheck(Operation.UPLOAD, hash_algorithms=["sha512"])
        for chunk in BIG_CHUNKS:
            await check.update(chunk)
        assert digest_threads() - before, "large chunks are hashed on a thread of the check's own"
        check.close()
        check.close()

    asyncio.run(hash_then_close())
    assert wait_for_threads_to_end(digest_threads() - before) == set()


def test_leaving_async_with_closes_the_check_even_on_failure() -> None:
    before = digest_threads()

    async def fail_mid_stream() -> DataCheck:
        async with DataCheck(Operation.UPLOAD, hash_algorithms=["md5"]) as check:
            for chunk in BIG_CHUNKS[:6]:
                await check.update(chunk)
            raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError):
        asyncio.run(fail_mid_stream())
    assert wait_for_threads_to_end(digest_threads() - before) == set()


def test_finish_closes_the_check_too() -> None:
    before = digest_threads()
    whole = b"".join(BIG_CHUNKS)
    check = DataCheck(Operation.DOWNLOAD, len(whole), {"sha512": hashlib.sha512(whole).hexdigest()})
    stream(check, BIG_CHUNKS)
    assert wait_for_threads_to_end(digest_threads() - before) == set()
