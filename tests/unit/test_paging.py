import grpc
import pytest

from gateway import paging
from gateway.errors import GatewayError

ID = "7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77"
QUERY = [("name", "x"), ("sort_key", "name"), ("sort_dir", "asc")]


def reason_of_decode(token: str, query: list[tuple[str, str]]) -> str:
    with pytest.raises(GatewayError) as caught:
        paging.decode_token(token, query)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.reason


@pytest.mark.parametrize(("requested", "used"), [(0, 25), (1, 1), (500, 500), (501, 500), (10**9, 500)])
def test_page_size_default_and_clamp(requested: int, used: int) -> None:
    assert paging.page_size(requested) == used


def test_negative_page_size_is_invalid() -> None:
    with pytest.raises(GatewayError) as caught:
        paging.page_size(-1)
    assert caught.value.reason == "INVALID_PAGE_SIZE"


def test_token_round_trip() -> None:
    assert paging.decode_token(paging.encode_token(ID, QUERY), QUERY) == ID
    assert paging.decode_token("", QUERY) is None


def test_token_is_bound_to_its_query() -> None:
    token = paging.encode_token(ID, QUERY)
    assert reason_of_decode(token, [("name", "y")]) == "PAGE_TOKEN_MISMATCH"


@pytest.mark.parametrize("token", ["garbage", "!!!", "e30", "eyJtIjoiYWJjIiwicSI6IngifQ", "W10"])
def test_malformed_tokens(token: str) -> None:
    assert reason_of_decode(token, QUERY) == "INVALID_PAGE_TOKEN"


def test_a_deeply_nested_token_is_invalid_not_a_crash() -> None:
    # json.loads recurses per bracket; this nests far deeper than Python's recursion limit.
    import base64

    token = base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("=")
    assert reason_of_decode(token, QUERY) == "INVALID_PAGE_TOKEN"
