import pytest

from gateway.wire import data_message
from generated.glance.gateway.v1 import image_service_pb2 as pb


# Every varint length boundary up to a few MiB: one, two, three and four length bytes.
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 4 * 2**20 + 3])
def test_hand_framed_data_is_the_protobuf_encoding(size: int) -> None:
    chunk = bytes(i % 251 for i in range(size))
    framed = data_message(chunk)
    assert framed == pb.GetImageResponse(data=chunk).SerializeToString()
    parsed = pb.GetImageResponse.FromString(framed)
    assert parsed.WhichOneof("content") == "data" and parsed.data == chunk
