"""5. Junk on every method: random bytes and hypothesis-built hostile messages.

Only the caller's-fault codes may come back; the gateway logs a bounded amount and never a traceback; and it
never connects anywhere but its configured Glance (a decoy listener, named in the junk, counts connections).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import psutil
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chaos.env import CHANNEL_OPTIONS, Env, code_name, error_reason
from chaos.leftovers import force_delete, glance_image, http
from chaos.model import CLIENT_FAULT_CODES, Outcome, counts_text, outside
from chaos.plan import Plan
from chaos.scenarios.common import unique_prefix
from gateway.wire import varint
from generated.glance.gateway.v1 import image_service_pb2 as pb

SERVICE = "/glance.gateway.v1.ImageService/"
UNARY = ("ListImages", "GetImageMeta", "UpdateImage", "DeleteImage")
METHODS = (*UNARY, "GetImage", "AddImage")
WORKERS = 12
CALL_TIMEOUT = 30.0
MAX_LINES_PER_REQUEST = 2.0
MAX_LINE_CHARS = 4096


def describe(plan: Plan) -> Outcome:
    half = plan.junk_requests // 2
    return Outcome(
        number=5,
        key="junk",
        title="junk requests",
        done=f"{plan.junk_requests} calls, {WORKERS} at a time: {plan.junk_requests - half} of random bytes "
        "on every method (unary, unary-stream GetImage, stream-unary AddImage; no serializers) and "
        f"{half} hypothesis-built hostile messages (huge strings, unicode, `../`, control chars, 10k "
        "properties, wrong oneofs, URIs naming a decoy listener, hostile metadata)",
        must_show="only OK/INVALID_ARGUMENT/NOT_FOUND/OUT_OF_RANGE/FAILED_PRECONDITION/RESOURCE_EXHAUSTED "
        f"(0 UNKNOWN, 0 INTERNAL); at most {MAX_LINES_PER_REQUEST:g} gateway log lines per request, none "
        f"longer than {MAX_LINE_CHARS} characters, no Traceback; 0 connections to the decoy and none from "
        "the gateway to anything but Glance",
    )


# -- a decoy: what the junk names instead of Glance -------------------------------------------------


class Decoy:
    """A TCP listener on loopback that only counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        first.bind(("127.0.0.1", 0))
        self.port = int(first.getsockname()[1])
        self._sockets.append(first)
        with contextlib.suppress(OSError):  # the same port on ::1, where the machine has IPv6
            six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            six.bind(("::1", self.port))
            self._sockets.append(six)
        self._threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in self._sockets]

    def _accept(self, sock: socket.socket) -> None:
        sock.listen(16)
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def __enter__(self) -> Decoy:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self._sockets:
            sock.close()


# -- the junk -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Junk:
    method: str
    source: str  # "random" or "hypothesis"
    messages: tuple[bytes, ...]  # one for unary requests, one or more for AddImage
    metadata: tuple[tuple[str, str], ...] = ()


def random_junk(rng: random.Random) -> Junk:
    method = rng.choice(METHODS)
    count = rng.randint(1, 3) if method == "AddImage" else 1
    return Junk(method, "random", tuple(_random_payload(rng) for _ in range(count)))


def _random_payload(rng: random.Random) -> bytes:
    shape = rng.random()
    if shape < 0.1:
        return b""
    size = rng.choice((1, 2, 5, 16, 100, 1000, 20_000))
    body = rng.randbytes(rng.randint(1, size))
    if shape < 0.5:
        return body
    # A plausible start (a valid tag of a low field, length-delimited), then garbage: goes deeper than noise,
    # e.g. a string field that is not UTF-8.
    field_number = rng.randint(1, 18)
    return bytes([(field_number << 3) | 2]) + varint(len(body)) + body


def hostile_junk(decoy_port: int, glance_url: str) -> st.SearchStrategy[Junk]:
    decoy = f"http://127.0.0.1:{decoy_port}"
    an_id = str(uuid.UUID(int=7))
    glance_hostport = glance_url.removeprefix("http://")
    uris = st.sampled_from([
        f"{decoy}/v2/images/{an_id}", f"{decoy}/images/{an_id}", f"http://localhost:{decoy_port}/v2/images/{an_id}",
        f"http://[::1]:{decoy_port}/v2/images/{an_id}", f"//127.0.0.1:{decoy_port}/v2/images/{an_id}",
        f"http://{glance_hostport}@127.0.0.1:{decoy_port}/v2/images/{an_id}",
        f"{glance_url}/v2/images/{an_id}?next={decoy}", f"{decoy}#{glance_url}/v2/images/{an_id}",
        f"{glance_url}/v2/images/../../../127.0.0.1:{decoy_port}/{an_id}",
        f"{glance_url}/v2/images/{an_id}/../x",
        f"{glance_url}/v2/images/%2e%2e%2f{an_id}", f"https://127.0.0.1:{decoy_port}/v2/images/{an_id}",
        f"{glance_url}:{decoy_port}/v2/images/{an_id}", "file:///etc/passwd", f"{glance_url}/v2/images/",
    ])  # fmt: skip
    texts = st.one_of(
        st.text(max_size=40),  # any unicode, control characters included
        st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Co"]), max_size=20),
        st.sampled_from(
            [
                "../../etc/passwd",
                "..",
                ".",
                "/",
                "%2e%2e%2f",
                "\x00",
                "\r\nX-Injected: yes",
                "a/../../b",
                "id",
                "status",
                "self",
                "file",
                "schema",
                "locations",
                "direct_url",
                "owner",
                "os_hash_value",
                "properties.",
                "*",
                "",
                " ",
                "\u202e",
                "\ud7ff",
                "\U0001f4a3" * 100,
                decoy,
                f"{decoy}/v2/images",
            ]
        ),
        st.integers(3, 6).map(lambda k: "A" * 10**k),  # up to a million characters
        uris,
    )
    uuids = st.one_of(st.uuids().map(str), st.just(an_id), texts)
    properties = st.one_of(
        st.dictionaries(texts, texts, max_size=4),
        st.sampled_from([129, 1000, 10_000]).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    )
    ints = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 0, 1, 2**31 - 1, -(2**31)]))
    longs = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-1, 0, 1, 2**63 - 1]))
    enums = st.one_of(st.integers(0, 10), st.integers(-5, 1000))
    metadata = st.lists(
        st.tuples(
            st.sampled_from(["x-auth-token", "authorization", "x-request-id"]),
            st.one_of(
                st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
                st.integers(3, 4).map(lambda k: "A" * 10**k),
            ),
        ),
        max_size=2,
    ).map(tuple)

    def ref(image_id: str | None, image_uri: str | None) -> dict[str, str]:
        return {"image_uri": image_uri} if image_uri is not None else {"image_id": image_id or ""}

    refs = st.builds(ref, st.one_of(st.none(), uuids), st.one_of(st.none(), uris, texts))
    list_requests = st.builds(
        pb.ListImagesRequest, page_size=ints, page_token=texts, view=enums, name=texts, status=enums,
        visibility=enums, owner=texts, tags=st.lists(texts, max_size=3), disk_format=texts,
        container_format=texts, size_min=longs, size_max=longs, properties=properties, sort_key=enums,
        sort_direction=enums, hidden=st.booleans(), protected=st.booleans(),
    )  # fmt: skip
    meta_requests = refs.map(lambda r: pb.GetImageMetaRequest(**r))
    get_requests = st.builds(
        lambda r, offset, limit, skip: pb.GetImageRequest(
            **r, offset=offset, limit=limit, skip_verification=skip
        ),
        refs, longs, longs, st.booleans(),
    )  # fmt: skip
    specs = st.builds(
        pb.ImageSpec, name=texts, id=uuids, store=texts, type=enums, disk_format=texts,
        container_format=texts, size=longs, is_public=texts, visibility=enums, properties=properties,
        tags=st.lists(texts, max_size=3), min_ram_mib=ints, min_disk_gib=ints, protected=st.booleans(),
        hidden=st.booleans(),
        expected_sha512=texts, expected_md5=texts,
    )  # fmt: skip
    data = st.binary(max_size=2048).map(lambda b: pb.AddImageRequest(data=b).SerializeToString())
    spec_message = specs.map(lambda s: pb.AddImageRequest(spec=s).SerializeToString())
    # Wrong oneofs and orders: data first, two specs, a spec after data, a spec and data in one message.
    add_streams = st.one_of(
        st.tuples(spec_message, st.lists(data, max_size=3)).map(lambda t: (t[0], *t[1])),
        st.lists(data, min_size=1, max_size=3).map(tuple),
        st.tuples(spec_message, spec_message).map(tuple),
        st.tuples(spec_message, data, spec_message).map(tuple),
        st.tuples(spec_message, data).map(lambda t: (t[0] + t[1],)),
        st.just(()),
    )
    images = st.builds(
        pb.Image, name=texts, visibility=enums, protected=st.booleans(), hidden=st.booleans(),
        min_ram_mib=ints, tags=st.lists(texts, max_size=3), disk_format=texts, properties=properties,
        id=uuids, status=enums,
    )  # fmt: skip
    masks = st.lists(
        st.one_of(
            st.sampled_from(["name", "visibility", "protected", "hidden", "min_ram_mib", "min_disk_gib",
                             "tags", "disk_format", "container_format", "properties", "id", "status", "size",
                             "owner",
                             "properties.../x", "properties.", "*", "", "checksum", "image.name"]),
            texts.map(lambda t: f"properties.{t}"), texts,
        ),
        max_size=4,
    )  # fmt: skip
    update_requests = st.builds(
        lambda image_id, image, paths: pb.UpdateImageRequest(image_id=image_id, image=image,
                                                             update_mask=field_mask_pb2.FieldMask(paths=paths)),
        uuids, images, masks,
    )  # fmt: skip
    delete_requests = st.builds(pb.DeleteImageRequest, image_id=uuids)

    def unary(method: str, requests: st.SearchStrategy[Any]) -> st.SearchStrategy[Junk]:
        return st.builds(
            lambda r, md: Junk(method, "hypothesis", (r.SerializeToString(),), md), requests, metadata
        )

    return st.one_of(
        unary("ListImages", list_requests),
        unary("GetImageMeta", meta_requests),
        unary("GetImage", get_requests),
        unary("UpdateImage", update_requests),
        unary("DeleteImage", delete_requests),
        st.builds(lambda msgs, md: Junk("AddImage", "hypothesis", msgs, md), add_streams, metadata),
    )


def hypothesis_examples(strategy: st.SearchStrategy[Junk], count: int, use: Callable[[Junk], None]) -> int:
    """Draws `count` examples (reproducibly: derandomized, no database) and hands each to `use`."""
    seen = 0

    @settings(max_examples=count, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def draw(junk: Junk) -> None:
        nonlocal seen
        seen += 1
        use(junk)

    draw()
    return seen


# -- sending it ---------------------------------------------------------------------------------------


@dataclass
class Results:
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)
    bad_reasons: Counter[str] = field(default_factory=Counter)
    created: list[str] = field(default_factory=list)
    not_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, junk: Junk, code: str, details: str, reason: str = "") -> None:
        with self.lock:
            self.codes[code] += 1
            self.by_method.setdefault(junk.method, Counter())[code] += 1
            if code not in CLIENT_FAULT_CODES:
                self.bad_reasons[f"{junk.method}: {code} {reason}".strip()] += 1
                if len(self.bad_examples) < 12:
                    self.bad_examples.append(f"{junk_text(junk)}: {code} {reason}: {details[:200]}")


REQUEST_TYPES: dict[str, Any] = {
    "ListImages": pb.ListImagesRequest, "GetImageMeta": pb.GetImageMetaRequest,
    "GetImage": pb.GetImageRequest, "UpdateImage": pb.UpdateImageRequest,
    "DeleteImage": pb.DeleteImageRequest, "AddImage": pb.AddImageRequest,
}  # fmt: skip


def junk_text(junk: Junk) -> str:
    """A short account of a junk call for the report: its fields (long values cut), or its first bytes."""
    first = junk.messages[0] if junk.messages else b""
    try:
        message = REQUEST_TYPES[junk.method].FromString(first)
    except Exception:
        return f"{junk.method} ({junk.source}) {first[:60]!r}"
    return f"{junk.method} ({junk.source}) {{{fields_text(message)}}}"


def fields_text(message: Any) -> str:
    parts = []
    for descriptor, value in message.ListFields():
        if isinstance(value, str | bytes):
            shown = f"{value[:40]!r}" + (f"...({len(value)})" if len(value) > 40 else "")
        elif hasattr(value, "ListFields"):
            shown = "{" + fields_text(value) + "}"
        elif hasattr(value, "items"):
            items = list(value.items())
            shown = f"{{{len(items)} entries, first {items[0][0][:20]!r}: {items[0][1][:20]!r}}}"
        elif hasattr(value, "__len__"):
            shown = f"[{len(value)}: {', '.join(repr(v)[:30] for v in list(value)[:3])}]"
        else:
            shown = repr(value)
        parts.append(f"{descriptor.name}={shown}")
    return ", ".join(parts)


def send(channel: grpc.Channel, junk: Junk, results: Results) -> None:
    path = SERVICE + junk.method
    metadata = junk.metadata or None
    try:
        if junk.method == "GetImage":
            stream = cast("grpc.UnaryStreamMultiCallable[bytes, bytes]", channel.unary_stream(path))
            for _ in stream(junk.messages[0], timeout=CALL_TIMEOUT, metadata=metadata):
                pass
        elif junk.method == "AddImage":
            upload = cast("grpc.StreamUnaryMultiCallable[bytes, bytes]", channel.stream_unary(path))
            raw = upload(iter(junk.messages), timeout=CALL_TIMEOUT, metadata=metadata)
            with contextlib.suppress(Exception):
                created = pb.AddImageResponse.FromString(raw).image.id
                if created:
                    with results.lock:
                        results.created.append(created)
        else:
            unary = cast("grpc.UnaryUnaryMultiCallable[bytes, bytes]", channel.unary_unary(path))
            unary(junk.messages[0], timeout=CALL_TIMEOUT, metadata=metadata)
    except grpc.RpcError as err:
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        results.record(junk, code_name(err), details or "", error_reason(err))
        return
    except ValueError:  # metadata the client library itself refuses to send
        with results.lock:
            results.not_sent += 1
        return
    results.record(junk, "OK", "")


class Pool:
    """At most WORKERS calls in flight; a submit blocks while they are all busy (no junk piles up)."""

    def __init__(self, channel: grpc.Channel, results: Results) -> None:
        self.channel = channel
        self.results = results
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="chaos-junk")
        self._slots = threading.BoundedSemaphore(WORKERS * 2)
        self._futures: list[Future[None]] = []

    def submit(self, junk: Junk) -> None:
        self._slots.acquire()
        future = self._executor.submit(send, self.channel, junk, self.results)
        future.add_done_callback(lambda _: self._slots.release())

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def foreign_connections(pid: int, glance_port: int, own_port: int) -> set[str]:
    """The gateway's outbound TCP connections to anything but Glance."""
    found = set()
    for conn in psutil.Process(pid).net_connections(kind="inet"):
        if not conn.raddr or conn.laddr.port == own_port or conn.raddr.port == glance_port:
            continue
        found.add(f"{conn.raddr.ip}:{conn.raddr.port} ({conn.status})")
    return found


@contextlib.contextmanager
def watching_foreign(pid: int, glance_port: int, own_port: int) -> Iterator[set[str]]:
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error, OSError):
                seen.update(foreign_connections(pid, glance_port, own_port))
            stop.wait(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=2)


def run(env: Env, plan: Plan, outcome: Outcome) -> None:
    gateway = env.gateway()
    prefix = unique_prefix("s5")
    # A victim for UpdateImage junk that names a real image: a queued image of this scenario's own.
    status, raw = http("POST", f"{env.glance_url}/v2/images", b'{"name": "%s victim"}' % prefix.encode(),
                       {"Content-Type": "application/json"})  # fmt: skip
    victim = raw.split(b'"id": "')[1].split(b'"')[0].decode() if status == 201 else None
    results = Results()
    half = plan.junk_requests // 2
    rng = random.Random(5)
    lines_before, answers_before = len(gateway.log_lines), env.glance_responses()
    started = time.monotonic()
    with Decoy() as decoy, grpc.insecure_channel(gateway.address, options=CHANNEL_OPTIONS) as channel:
        with watching_foreign(gateway.pid, env.glance_port, gateway.port) as foreign:
            pool = Pool(channel, results)
            for _ in range(plan.junk_requests - half):
                pool.submit(random_junk(rng))
            strategy = hostile_junk(decoy.port, env.glance_url)
            if victim is not None:
                aimed = st.builds(
                    lambda junk, use: _aim(junk, victim) if use else junk, strategy, st.booleans()
                )
                strategy = aimed
            drawn = hypothesis_examples(strategy, half, pool.submit)
            pool.close()
        time.sleep(0.5)
        decoy_connections = decoy.connections
    seconds = time.monotonic() - started
    glance_5xx = {k: v for k, v in (env.glance_responses() - answers_before).items() if k[-3] == "5"}
    lines = gateway.log_lines[lines_before:]
    sent = sum(results.codes.values())
    per_request = len(lines) / max(sent, 1)
    longest = max((len(line) for line in lines), default=0)
    tracebacks = sum("Traceback" in line for line in lines)
    for image_id in results.created:
        force_delete(env.glance_url, image_id)
    if victim is not None:
        victim_after = glance_image(env.glance_url, victim)
        outcome.figures["victim_after"] = None if victim_after is None else victim_after.get("status")
        force_delete(env.glance_url, victim)
    outcome.figures.update({
        "sent": sent, "hypothesis_drawn": drawn, "not_sent_by_client": results.not_sent,
        "seconds": round(seconds, 1), "codes": dict(results.codes),
        "by_method": {m: dict(c) for m, c in results.by_method.items()}, "bad_examples": results.bad_examples,
        "log_lines": len(lines), "log_lines_per_request": round(per_request, 3), "longest_log_line": longest,
        "tracebacks": tracebacks, "decoy_connections": decoy_connections,
        "foreign_connections": sorted(foreign),
        "images_created_by_junk": len(results.created), "bad_reasons": dict(results.bad_reasons),
        "glance_5xx": glance_5xx, "gateway_alive": gateway.returncode() is None,
    })  # fmt: skip
    bad = outside(results.codes, CLIENT_FAULT_CODES)
    outcome.check(
        "only the caller's-fault codes",
        not bad and gateway.returncode() is None,
        f"{sent} sent in {seconds:.0f} s: {counts_text(results.codes)}"
        + (f"; not allowed: {counts_text(results.bad_reasons)}" if bad else "")
        + (f"; Glance answered {counts_text(glance_5xx)}" if glance_5xx else ""),
    )
    outcome.check(
        "log bounded, no traceback",
        per_request <= MAX_LINES_PER_REQUEST and longest <= MAX_LINE_CHARS and tracebacks == 0,
        f"{len(lines)} log lines ({per_request:.2f} per request), longest {longest} chars, "
        f"{tracebacks} Traceback",
    )
    outcome.check(
        "nothing but Glance contacted",
        decoy_connections == 0 and not foreign,
        f"decoy connections {decoy_connections}; other outbound connections {len(foreign)}",
    )
    for example in results.bad_examples[:4]:
        outcome.note(example)


def _aim(junk: Junk, victim: str) -> Junk:
    """UpdateImage junk aimed at the victim image, so Glance's own refusals (403, 409, 413) are reached."""
    if junk.method != "UpdateImage" or junk.source != "hypothesis":
        return junk
    request = pb.UpdateImageRequest.FromString(junk.messages[0])
    request.image_id = victim
    return Junk(junk.method, junk.source, (request.SerializeToString(),), junk.metadata)
