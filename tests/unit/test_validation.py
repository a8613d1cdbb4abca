from urllib.parse import quote, unquote, urlsplit

import grpc
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_property_values_are_bounded_by_glances_column() -> None:
    limit = validation.MAX_PROPERTY_VALUE_BYTES
    assert validation.property_value("k", "v" * limit) == "v" * limit
    assert reason_of(validation.property_value, "k", "v" * (limit + 1)) == "VALUE_TOO_LONG"
    # Bytes of UTF-8, not characters: 16,384 four-byte characters are 65,536 bytes.
    assert reason_of(validation.property_value, "k", "\U0001f600" * (limit // 4 + 1)) == "VALUE_TOO_LONG"
    assert reason_of(validation.property_value, "k", "a\x00b") == "INVALID_PROPERTY"
    # Glance stores every other control character as it is.
    assert validation.property_value("k", "a\r\n\x01\x7fb") == "a\r\n\x01\x7fb"


def test_page_tokens_are_bounded() -> None:
    assert validation.page_token("t" * validation.MAX_PAGE_TOKEN)
    assert reason_of(validation.page_token, "t" * (validation.MAX_PAGE_TOKEN + 1)) == "INVALID_PAGE_TOKEN"


def test_quoted_client_values_are_cut_short() -> None:
    assert validation.quoted("abc") == "'abc'"
    assert validation.quoted("x" * 10_000) == repr("x" * validation.MAX_QUOTED) + "..."


# Ways to name another host in a URI: cloud metadata, other ports, userinfo and backslash tricks, IDN and
# fullwidth look-alikes, encoded dots, trailing dots, IP spellings, whitespace and fragments.
HOSTILE_URIS = [
    f"http://169.254.169.254/v2/images/{ID}",
    "http://169.254.169.254/latest/meta-data/",
    f"http://[fd00:ec2::254]/v2/images/{ID}",
    f"http://glance.example.com:9293/v2/images/{ID}",
    f"http://glance.example.com:0/v2/images/{ID}",
    f"http://glance.example.com/v2/images/{ID}",
    f"http://glance.example.com:9292@169.254.169.254/v2/images/{ID}",
    f"http://glance.example.com:9292\\@169.254.169.254/v2/images/{ID}",
    f"http://169.254.169.254#@glance.example.com:9292/v2/images/{ID}",
    f"http://169.254.169.254?@glance.example.com:9292/v2/images/{ID}",
    f"http://@glance.example.com:9292/v2/images/{ID}",
    f"http://:@glance.example.com:9292/v2/images/{ID}",
    f"http://glance.example.com.:9292/v2/images/{ID}",
    f"http://glance%2eexample.com:9292/v2/images/{ID}",
    f"http://xn--glance-8ya.example.com:9292/v2/images/{ID}",
    f"http://glance.exämple.com:9292/v2/images/{ID}",
    f"http://\uff47lance.example.com:9292/v2/images/{ID}",
    f"http://glance.example.com:\uff19\uff12\uff19\uff12/v2/images/{ID}",
    f"http://glance.example.com:+9292/v2/images/{ID}",
    f"http://glance.example.com:9292 /v2/images/{ID}",
    f"http://127.0.0.1:9292/v2/images/{ID}",
    f"http://2130706433:9292/v2/images/{ID}",
    f"//glance.example.com:9292/v2/images/{ID}",
    f"gopher://glance.example.com:9292/v2/images/{ID}",
    f"{GLANCE}/v2/images/../../../latest/meta-data/{ID}",
    f"{GLANCE}/v2/images/%2e%2e/{ID}",
    f"{GLANCE}/v2/images/{ID}/../{ID}",
    f"{GLANCE}/v2/images/{ID}%2f..%2f",
    f"{GLANCE}/v2/images/{ID}\x00",
    f"{GLANCE}/v2/images/{ID}\r\nHost: evil",
    f"{GLANCE}/v2/images/{ID} ",
]


@pytest.mark.parametrize("uri", HOSTILE_URIS)
def test_uris_that_name_anything_but_glance_and_an_id_are_refused(uri: str) -> None:
    assert reason_of(validation.image_id_from_uri, uri, GLANCE) in {
        "FOREIGN_IMAGE_URI", "INVALID_IMAGE_URI", "INVALID_IMAGE_ID",
    }  # fmt: skip


hosts = st.sampled_from(
    ["glance.example.com", "GLANCE.example.com", "169.254.169.254", "evil.example", "\uff47lance.example.com",
     "glance.example.com.", "[::1]", "glance.example.com:9292@evil", "evil@glance.example.com"]
)  # fmt: skip
hostile_text = st.text(alphabet=st.sampled_from("/.%2e@:?#\\\x00\r\n\t ab-9\u0661"), max_size=12)
uris = st.builds(
    lambda scheme, host, port, middle, image_id, tail: f"{scheme}{host}{port}{middle}{image_id}{tail}",
    st.sampled_from(["http://", "HTTP://", "https://", "//", "http:/", "file://", ""]),
    hosts,
    st.sampled_from(["", ":9292", ":09292", ":9293", ":80", ":", ":+9292", ":\uff19\uff12\uff19\uff12"]),
    st.sampled_from(["/v2/images/", "/images/", "/v2/images/../", "/x/v2/images/"]) | hostile_text,
    st.sampled_from([ID, ID.upper(), ID[:-1]]),
    st.sampled_from(["", "/", "?", "#"]) | hostile_text,
)


@settings(max_examples=1500, deadline=None)
@given(uris)
def test_an_accepted_image_uri_names_the_configured_glance_and_a_uuid(uri: str) -> None:
    try:
        image_id = validation.image_id_from_uri(uri, GLANCE)
    except GatewayError as error:
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        return
    # Accepted: only ever an id for the configured Glance, which the gateway then asks at its own base URL.
    # (The id is the URI's own: a cut-short ID plus a hex digit from the hostile tail is another valid UUID.)
    assert validation.is_image_id(image_id) and image_id in uri.lower()
    given_uri = urlsplit(uri)
    assert (given_uri.scheme.lower(), given_uri.hostname, given_uri.port or 80) == (
        "http",
        "glance.example.com",
        9292,
    )
    assert given_uri.username is None and given_uri.password is None


@pytest.mark.parametrize("value", ["a", "b c%20?#&+;", "x" * 255])
def test_a_path_tag_is_any_ascii_tag_without_a_slash(value: str) -> None:
    assert validation.path_tag(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "INVALID_TAG"),
        ("a/b", "INVALID_TAG"),
        ("é", "INVALID_TAG"),
        (".", "INVALID_TAG"),
        ("..", "INVALID_TAG"),
        ("x" * 256, "VALUE_TOO_LONG"),
    ],
)
def test_a_path_tag_refuses_what_glance_cannot_take_in_a_path(value: str, reason: str) -> None:
    with pytest.raises(GatewayError) as caught:
        validation.path_tag(value)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.reason == reason


@pytest.mark.parametrize(
    "value", ["0c8a5b4ff1e94e4c9a1d6f3a2b7e8d90", "Project_1", "svc@example.org", "a.b-c", "...", "x" * 255]
)
def test_member_ids_are_plain_project_ids(value: str) -> None:
    assert validation.member_id(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "MISSING_MEMBER_ID"),
        # Dot segments: httpx would resolve .../members/.. to the image itself.
        (".", "INVALID_MEMBER_ID"),
        ("..", "INVALID_MEMBER_ID"),
        # Glance 33 stores these on create but cannot find them again by path.
        ("a/b", "INVALID_MEMBER_ID"),
        ("projet-é", "INVALID_MEMBER_ID"),
        ("x" * 256, "INVALID_MEMBER_ID"),
        ("a%2Fb", "INVALID_MEMBER_ID"),
        ("a b", "INVALID_MEMBER_ID"),
        ("a\nb", "INVALID_MEMBER_ID"),
        ("a?b#c", "INVALID_MEMBER_ID"),
    ],
)
def test_member_ids_that_cannot_be_one_path_segment_are_refused(value: str, reason: str) -> None:
    assert reason_of(validation.member_id, value) == reason


# Mostly characters that pass, dots above all, so that many examples are accepted ids.
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="a9_.@-./%é? #", max_size=260))
def test_an_accepted_member_id_is_sent_as_exactly_one_path_segment(value: str) -> None:
    try:
        accepted = validation.member_id(value)
    except GatewayError:
        return
    members = "/v2/images/x/members/"
    # What the gateway's client sends (httpx resolves dot segments): one more segment, the member's own.
    sent = httpx.Request("DELETE", "http://g" + members + quote(accepted, safe="")).url.raw_path.decode()
    assert sent.startswith(members) and "/" not in sent[len(members) :]
    assert unquote(sent[len(members) :]) == accepted


# -- import_uri: what Glance is asked to fetch (web-download) --------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8080/img.raw",
        "https://images.example.com/a/b.qcow2?sig=abc&x=1",
        "HTTP://Example.com/x%20y",
        "http://[::1]:80/x",
        "http://h/" + "a" * (validation.MAX_IMPORT_URI - len("http://h/")),
    ],
)
def test_http_and_https_uris_with_a_host_are_kept_as_given(uri: str) -> None:
    assert validation.import_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "MISSING_URI"),
        ("ftp://example.com/x", "INVALID_URI"),
        ("file:///etc/passwd", "INVALID_URI"),
        ("http:///no-host", "INVALID_URI"),
        ("/relative/path", "INVALID_URI"),
        ("http://example.com/a b", "INVALID_URI"),
        ("http://example.com/\x00", "INVALID_URI"),
        ("http://example.com/\n", "INVALID_URI"),
        ("http://example.com/é", "INVALID_URI"),
        ("http://example.com:99999/x", "INVALID_URI"),
        ("http://[::1/x", "INVALID_URI"),
        ("http://h/" + "a" * (validation.MAX_IMPORT_URI - len("http://h/") + 1), "INVALID_URI"),
    ],
    ids=[
        "empty", "ftp", "file", "no-host", "relative", "space", "nul", "newline", "non-ascii", "bad-port",
        "bad-bracket", "too-long",
    ],
)  # fmt: skip
def test_other_uris_are_refused(uri: str, reason: str) -> None:
    assert reason_of(validation.import_uri, uri) == reason


def test_a_refused_uri_is_quoted_short_in_the_message() -> None:
    with pytest.raises(GatewayError) as caught:
        validation.import_uri("http://[::1/" + "x" * 500)
    assert len(caught.value.message) < 200
