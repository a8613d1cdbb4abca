import time

from gateway.glance_client import CallContext, _error_message


def test_headers_forward_token_and_request_id() -> None:
    call = CallContext(token="tok", request_id="req-1")
    assert call.headers() == {
        "Accept": "application/json",
        "X-Auth-Token": "tok",
        "X-Openstack-Request-Id": "req-1",
    }


def test_headers_without_caller_identity_ask_for_json_only() -> None:
    assert CallContext().headers() == {"Accept": "application/json"}


def test_time_remaining_follows_the_deadline() -> None:
    assert CallContext().time_remaining() is None
    remaining = CallContext(deadline=time.monotonic() + 5).time_remaining()
    assert remaining is not None and 4 < remaining <= 5


def test_clean_up_context_keeps_identity_drops_deadline() -> None:
    call = CallContext(token="t", request_id="r", deadline=time.monotonic())
    clean_up = call.without_deadline()
    assert (clean_up.token, clean_up.request_id, clean_up.deadline) == ("t", "r", None)
    clean_up.glance_request_ids.append("req-x")
    assert call.glance_request_ids == ["req-x"]


def test_error_messages_from_json_html_and_empty_bodies() -> None:
    json_body = b'{"message": "No image found with ID x<br /><br />\\n\\n\\n", "code": "404 Not Found"}'
    assert _error_message(json_body, 404) == "No image found with ID x"
    html = b"<html><head><title>409 Conflict</title></head><body>Image ID x already exists!<br /><br />"
    assert "Image ID x already exists!" in _error_message(html, 409)
    assert _error_message(b"", 503) == "Glance answered HTTP 503"
