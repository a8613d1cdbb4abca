"""A bare HTTP/2 client connection, for the tests that must see what gRPC clients hide: the server's
SETTINGS, its PINGs and GOAWAY frames (with their error code and debug data), and a client that pings as
often as it likes (gRPC's own clients refuse to ping that often)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from types import TracebackType

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7
ACK = 0x1
# SETTINGS parameters (RFC 9113, 6.5.2) and error codes (7).
MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 0x3, 0x4
NO_ERROR, ENHANCE_YOUR_CALM = 0x0, 0xB


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    error_code: int
    debug: bytes


class RawHttp2:
    """`with RawHttp2("127.0.0.1:50051") as conn:` an HTTP/2 connection that has sent its preface."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        host, port = address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._sock.sendall(PREFACE + _frame(SETTINGS, 0, b""))
        self.server_settings: dict[int, int] = {}
        self.pings_received = 0
        self.ping_acks: list[int] = []

    def send_ping(self, number: int) -> None:
        self._sock.sendall(_frame(PING, 0, struct.pack(">Q", number)))

    def read_frame(self) -> Frame | None:
        """The next frame, None once the server closed the connection."""
        header = self._exactly(9)
        if header is None:
            return None
        length = int.from_bytes(header[:3], "big")
        payload = self._exactly(length) if length else b""
        if payload is None:
            return None
        stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        return Frame(header[3], header[4], stream, payload)

    def read_server_settings(self) -> dict[int, int]:
        """The parameters of the server's first SETTINGS frame."""
        while not self.server_settings:
            frame = self.read_frame()
            if frame is None:
                raise AssertionError("the server closed the connection before its SETTINGS")
            self._handle(frame, answer_pings=True)
        return self.server_settings

    def next_goaway(self, answer_pings: bool = True) -> GoAway | None:
        """Reads until a GOAWAY (None when the connection closes without one), acknowledging the server's
        SETTINGS, and its PINGs unless told not to."""
        while (frame := self.read_frame()) is not None:
            if frame.type == GOAWAY:
                last, code = struct.unpack(">II", frame.payload[:8])
                return GoAway(last & 0x7FFFFFFF, code, frame.payload[8:])
            self._handle(frame, answer_pings)
        return None

    def ping_pong(self, count: int) -> GoAway | None:
        """Sends `count` PINGs, each once the previous one is acknowledged (the server sends a GOAWAY for a
        ping it refuses before it reads the next); returns that GOAWAY, None when all were acknowledged."""
        for number in range(count):
            self.send_ping(number)
            while number not in self.ping_acks:
                frame = self.read_frame()
                if frame is None:
                    raise AssertionError("the server closed the connection without a GOAWAY")
                if frame.type == GOAWAY:
                    last, code = struct.unpack(">II", frame.payload[:8])
                    return GoAway(last & 0x7FFFFFFF, code, frame.payload[8:])
                self._handle(frame, answer_pings=True)
        return None

    def _handle(self, frame: Frame, answer_pings: bool) -> None:
        if frame.type == SETTINGS and not frame.flags & ACK:
            for offset in range(0, len(frame.payload), 6):
                key, value = struct.unpack(">HI", frame.payload[offset : offset + 6])
                self.server_settings[key] = value
            self._sock.sendall(_frame(SETTINGS, ACK, b""))
        elif frame.type == PING and frame.flags & ACK:
            self.ping_acks.append(struct.unpack(">Q", frame.payload)[0])
        elif frame.type == PING:
            self.pings_received += 1
            if answer_pings:
                self._sock.sendall(_frame(PING, ACK, frame.payload))

    def _exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                part = self._sock.recv(size - len(data))
            except ConnectionResetError:
                return None
            if not part:
                return None
            data += part
        return data

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawHttp2:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _frame(kind: int, flags: int, payload: bytes, stream: int = 0) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
