import pytest
from google.protobuf.message import DecodeError

from gateway.wire import data_message, parse_upload_message
from generated.glance.gateway.v1 import image_service_pb2 as pb


# Every varint length boundary up to a few MiB: one, two, three and four length bytes.
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 4 * 2**20 + 3])
def test_hand_framed_data_is_the_protobuf_encoding(size: int) -> None:
    chunk = bytes(i % 251 for i in range(size))
    framed = data_message(chunk)
    assert framed == pb.GetImageResponse(data=chunk).SerializeToString()
    parsed = pb.GetImageResponse.FromString(framed)
    assert parsed.WhichOneof("content") == "data" and parsed.data == chunk


@pytest.mark.parametrize("size", [1, 127, 128, 16384, 2**20])
def test_data_only_upload_messages_parse_to_a_view_of_the_same_bytes(size: int) -> None:
    chunk = bytes(i % 253 for i in range(size))
    parsed = parse_upload_message(pb.AddImageRequest(data=chunk).SerializeToString())
    assert isinstance(parsed, memoryview) and parsed.tobytes() == chunk


def test_every_other_upload_message_parses_as_protobuf() -> None:
    spec = pb.AddImageRequest(spec=pb.ImageSpec(name="x", size=3))
    assert parse_upload_message(spec.SerializeToString()) == spec
    # Data followed by a spec: protobuf's last-oneof-wins must hold, so this is no data-only message.
    both = pb.AddImageRequest(data=b"abc").SerializeToString() + spec.SerializeToString()
    assert parse_upload_message(both) == pb.AddImageRequest.FromString(both)
    assert parse_upload_message(b"") == pb.AddImageRequest()


@pytest.mark.parametrize("raw", [b"\x0a", b"\x0a\x05ab", b"\x0a\xff\xff", b"\x0a" + b"\xff" * 11])
def test_malformed_data_messages_fail_like_protobuf(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        pb.AddImageRequest.FromString(raw)
    with pytest.raises(DecodeError):
        parse_upload_message(raw)
