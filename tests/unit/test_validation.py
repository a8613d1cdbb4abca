import grpc
import pytest

from gateway import validation
from gateway.errors import GatewayError

GLANCE = "http://glance.example.com:9292"
ID = "7c4bd2a1-5b6e-4d5e-9a31-2f5a6c0b1e77"


def reason_of(call: object, *args: object) -> str:
    with pytest.raises(GatewayError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.reason


@pytest.mark.parametrize("bad", ["abc", "../x", ID + "/file", ID.replace("-", ""), ID + "\n", " " + ID])
def test_image_ids_must_be_uuids(bad: str) -> None:
    assert reason_of(validation.image_id, bad) == "INVALID_IMAGE_ID"


def test_image_id_is_normalised_to_lower_case() -> None:
    assert validation.image_id(ID.upper()) == ID


def test_missing_image_id() -> None:
    assert reason_of(validation.image_id, "") == "MISSING_IMAGE_ID"


@pytest.mark.parametrize(
    "uri",
    [f"{GLANCE}/images/{ID}", f"{GLANCE}/v2/images/{ID}", f"HTTP://GLANCE.example.com:9292/v2/images/{ID}"],
)
def test_uris_of_the_configured_glance_are_accepted(uri: str) -> None:
    assert validation.image_id_from_uri(uri, GLANCE) == ID


def test_default_ports_are_equivalent() -> None:
    assert validation.image_id_from_uri(f"https://g.example/v2/images/{ID}", "https://g.example:443") == ID


def test_a_path_prefix_of_the_glance_url_is_required() -> None:
    base = "http://proxy.example/image"
    assert validation.image_id_from_uri(f"{base}/v2/images/{ID}", base) == ID
    assert reason_of(validation.image_id_from_uri, f"http://proxy.example/v2/images/{ID}", base) == (
        "INVALID_IMAGE_URI"
    )


@pytest.mark.parametrize(
    "uri",
    [
        f"http://evil.example.com/v2/images/{ID}",
        f"http://glance.example.com:9293/v2/images/{ID}",
        f"https://glance.example.com:9292/v2/images/{ID}",
        f"http://user:pw@glance.example.com:9292/v2/images/{ID}",
        f"{GLANCE}/v2/images/{ID}?x=1",
        f"{GLANCE}/v2/images/{ID}#frag",
        f"file:///v2/images/{ID}",
    ],
)
def test_foreign_uris_are_refused(uri: str) -> None:
    assert reason_of(validation.image_id_from_uri, uri, GLANCE) == "FOREIGN_IMAGE_URI"


@pytest.mark.parametrize(
    "uri", [f"{GLANCE}/v2/images/{ID}/file", f"{GLANCE}/v3/images/{ID}", f"{GLANCE}/", "http://[::1"]
)
def test_malformed_uris_are_refused(uri: str) -> None:
    assert reason_of(validation.image_id_from_uri, uri, GLANCE) in {"INVALID_IMAGE_URI", "INVALID_IMAGE_ID"}


def test_bad_id_inside_a_good_uri() -> None:
    assert reason_of(validation.image_id_from_uri, f"{GLANCE}/images/1", GLANCE) == "INVALID_IMAGE_ID"


@pytest.mark.parametrize("store", ["file", "file2", "ceph_1", "swift.eu-west"])
def test_plain_store_names(store: str) -> None:
    assert validation.store_name(store) == store


@pytest.mark.parametrize("store", ["", "../x", "a b", "x\r\nX-Evil: 1", "-lead", "é"])
def test_store_names_that_could_break_a_header(store: str) -> None:
    assert reason_of(validation.store_name, store) == "INVALID_STORE"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "INVALID_PROPERTY"),
        ("status", "INVALID_PROPERTY"),
        ("os_glance_x", "INVALID_PROPERTY"),
        ("k" * 256, "VALUE_TOO_LONG"),
        ("a\nb", "INVALID_CHARACTERS"),
    ],
)
def test_property_keys(key: str, reason: str) -> None:
    assert reason_of(validation.property_key, key) == reason


def test_kernel_id_is_a_property_not_an_attribute() -> None:
    assert validation.property_key("kernel_id") == "kernel_id"


def test_names() -> None:
    assert validation.image_name("n" * 255) == "n" * 255
    assert reason_of(validation.image_name, "") == "MISSING_NAME"
    assert reason_of(validation.image_name, "   ") == "MISSING_NAME"
    assert reason_of(validation.image_name, "n" * 256) == "VALUE_TOO_LONG"


@pytest.mark.parametrize("value", ["req-1", "my.custom:id_2"])
def test_request_ids(value: str) -> None:
    assert validation.request_id(value) == value


@pytest.mark.parametrize("value", ["", "x" * 65, "a b", "a\nb"])
def test_bad_request_ids(value: str) -> None:
    assert reason_of(validation.request_id, value) == "INVALID_REQUEST_ID"


@pytest.mark.parametrize("value", ["", "t" * 8193, "tok\r\nen"])
def test_bad_tokens(value: str) -> None:
    assert reason_of(validation.auth_token, value) == "INVALID_TOKEN"
