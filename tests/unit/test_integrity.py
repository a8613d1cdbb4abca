import hashlib

import grpc
import pytest

from gateway.errors import Failure, GatewayError, Operation
from gateway.integrity import DataCheck, image_digests, upload_digests

DATA = b"glance" * 1000


def test_matching_stream_passes() -> None:
    check = DataCheck(Operation.UPLOAD, len(DATA), {"sha512": hashlib.sha512(DATA).hexdigest()})
    for start in range(0, len(DATA), 700):
        check.update(DATA[start : start + 700])
    check.finish()
    assert check.count == len(DATA)


def test_longer_stream_fails_on_the_chunk_that_overflows() -> None:
    check = DataCheck(Operation.UPLOAD, 10)
    check.update(b"x" * 10)
    with pytest.raises(GatewayError) as caught:
        check.update(b"y")
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH")


def test_shorter_stream_fails_at_the_end() -> None:
    check = DataCheck(Operation.UPLOAD, 10)
    check.update(b"x" * 9)
    with pytest.raises(GatewayError) as caught:
        check.finish()
    assert caught.value.reason == "SIZE_MISMATCH"


def test_download_size_failure_is_its_own_outcome() -> None:
    check = DataCheck(Operation.DOWNLOAD, 10, size_failure=Failure.UPSTREAM_BROKEN)
    check.update(b"x")
    with pytest.raises(GatewayError) as caught:
        check.finish()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("algo", ["sha512", "md5"])
def test_digest_mismatch_is_data_loss(algo: str) -> None:
    check = DataCheck(Operation.DOWNLOAD, None, {algo: hashlib.new(algo, DATA).hexdigest()})
    check.update(DATA[:-1] + b"X")
    with pytest.raises(GatewayError) as caught:
        check.finish()
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
