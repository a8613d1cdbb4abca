"""Upload framing and the download's verify-and-resume logic, shared by Client and AsyncClient.

Neither class does I/O: the clients feed them messages and send what they return.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Literal, Protocol

import grpc

from generated.glance.gateway.v1 import image_service_pb2 as pb

from .errors import DataCorrupt, ServiceUnavailable, from_rpc_error
from .meta import ImageMeta, image_to_dict

# 1 MiB: the gateway's own chunk size, well under gRPC's default 4 MiB message limit.
CHUNK_SIZE = 1024 * 1024

Verify = Literal["gateway", "client", "none"]


class BinaryReader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def split(chunk: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """A caller's chunk in pieces of at most CHUNK_SIZE (callers may hand over any size)."""
    if len(chunk) <= CHUNK_SIZE:
        yield bytes(chunk)
        return
    view = memoryview(chunk)
    for start in range(0, len(view), CHUNK_SIZE):
        yield bytes(view[start : start + CHUNK_SIZE])


class Upload:
    """Frames an AddImage or StageImageData request stream: spec, data..., UploadFinish with the SHA-512.

    The digest is computed while the data goes out, so nothing is read twice or held whole.
    """

    def __init__(self, request_type: type[pb.AddImageRequest] | type[pb.StageImageDataRequest]) -> None:
        self._request_type: Any = request_type
        self._sha512 = hashlib.sha512()
        self.size = 0

    def spec(self, spec: pb.ImageSpec | pb.StageSpec) -> Any:
        return self._request_type(spec=spec)

    def data(self, chunk: bytes | bytearray | memoryview) -> Iterator[Any]:
        for piece in split(chunk):
            if piece:
                self._sha512.update(piece)
                self.size += len(piece)
                yield self._request_type(data=piece)

    def finish(self) -> Any:
        return self._request_type(finish=pb.UploadFinish(sha512=self._sha512.hexdigest()))


def stage_spec(image_id: str, size: int | None) -> pb.StageSpec:
    spec = pb.StageSpec(image_id=image_id, finish_digests=[pb.DIGEST_ALGORITHM_SHA512], ends_with_finish=True)
    if size is not None:
        spec.size = size
    return spec


def _corrupt(details: str) -> DataCorrupt:
    return DataCorrupt(details, code=grpc.StatusCode.DATA_LOSS)


class Download:
    """One image download across any number of GetImage calls, checked exactly once as a whole.

    verify="gateway" (default): the gateway hashes the whole image (DownloadHeader.verified) and fails the
    call with DATA_LOSS on a mismatch. verify="client": the client asks skip_verification and hashes with the
    image's os_hash_algo (MD5 checksum for images without one). verify="none": neither.

    On UNAVAILABLE mid-stream the next call resumes at an offset, at most `max_resumes` times. A
    gateway-verified read cannot be verified piecewise, so after the first break the client takes over:
    it hashes from byte 0, re-reading (not re-yielding) the bytes already yielded, then hashes and yields
    the rest. The bytes the caller gets are therefore always covered by exactly one whole-image check.
    """

    def __init__(
        self, image_id_or_uri: str, verify: Verify = "gateway", max_resumes: int = 3, offset: int = 0
    ) -> None:
        if verify not in ("gateway", "client", "none"):
            raise ValueError(f"verify must be 'gateway', 'client' or 'none', not {verify!r}")
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        if offset and verify != "none":
            # Glance publishes hashes of whole images only: the caller checks a partial read itself.
            raise ValueError("a read from an offset cannot be verified here: pass verify='none'")
        self._ident = image_id_or_uri
        self._offset = offset  # where the caller's data starts in the image
        self.verify = verify
        self.resumes_left = max_resumes
        self.resumes = 0
        self.image: pb.Image | None = None
        self.yielded = 0  # bytes handed to the caller
        self._position = 0  # offset of the next byte the current call sends
        self._hasher: Any = None  # set while the client hashes (always from byte 0)
        self._hashed = 0

    def request(self) -> pb.GetImageRequest:
        """The next GetImage call: from 0, or from where client hashing (or yielding) must go on."""
        offset = self._hashed if self._hasher is not None else self._offset + self.yielded
        skip = self.verify != "gateway" or self.resumes > 0
        if self.image is not None:
            # Resumes go by id: the URI, if one was given, named this same image.
            return pb.GetImageRequest(image_id=self.image.id, offset=offset, skip_verification=skip)
        if "://" in self._ident:
            return pb.GetImageRequest(image_uri=self._ident, offset=offset, skip_verification=skip)
        return pb.GetImageRequest(image_id=self._ident, offset=offset, skip_verification=skip)

    def on_header(self, message: Any) -> ImageMeta:
        """The first message of each call; returns the image's metadata."""
        if message is None or message.WhichOneof("content") != "header":
            raise _corrupt("GetImage did not start with a header")
        header: pb.DownloadHeader = message.header
        expected = self.request().offset
        if header.offset != expected:
            raise _corrupt(f"GetImage resumed at {header.offset}, not {expected}")
        if self.image is not None and header.image.os_hash_value != self.image.os_hash_value:
            raise _corrupt("the image changed while resuming")
        if self.image is None:
            self.image = header.image
            if self.verify == "client" or (self.verify == "gateway" and not header.verified):
                self._start_hashing()
        self._position = header.offset
        return image_to_dict(header.image)

    def _start_hashing(self) -> None:
        assert self.image is not None
        algo = self.image.os_hash_algo or ("md5" if self.image.checksum else "")
        # No published hash (an image without data): only the length can be checked.
        self._hasher = hashlib.new(algo) if algo else None
        self._hashed = 0

    def on_data(self, message: Any) -> bytes:
        """A data message → the bytes to yield (b"" while re-reading bytes already yielded)."""
        if message.WhichOneof("content") != "data":
            raise _corrupt("a second header in GetImage")
        data: bytes = message.data
        start = self._position
        self._position += len(data)
        if self._hasher is not None:
            self._hasher.update(data)
            self._hashed += len(data)
        skip = self._offset + self.yielded - start
        if skip >= len(data):
            return b""
        out = data[skip:] if skip > 0 else data
        self.yielded += len(out)
        return out

    def on_error(self, err: grpc.RpcError) -> None:
        """Decides about a failed call: returns to resume, or raises the ClientError."""
        error = from_rpc_error(err)
        if not isinstance(error, ServiceUnavailable) or self.image is None or self.resumes_left <= 0:
            raise error from None
        self.resumes_left -= 1
        self.resumes += 1
        if self.verify == "gateway" and self._hasher is None:
            # The gateway's hash of this read is lost with the call: check the whole image here instead.
            self._start_hashing()

    def on_end(self) -> None:
        """The stream ended normally: check the length and, when the client hashes, the digest."""
        assert self.image is not None
        if self.image.HasField("size") and self._offset + self.yielded != self.image.size:
            raise _corrupt(f"got {self.yielded} bytes from {self._offset} of a {self.image.size}-byte image")
        if self._hasher is None:
            return
        expected = self.image.os_hash_value if self.image.os_hash_algo else self.image.checksum
        if self._hasher.hexdigest() != expected:
            raise _corrupt(f"image {self.image.id}: the data does not match its {self._hasher.name} hash")
