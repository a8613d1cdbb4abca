"""Shared fixtures: a real Glance (localglance), the gateway as a process, a stub, images that clean up.

With real identities: a real Keystone (`keystone`), a second Glance that validates its tokens
(`keystone_glance`), a gateway in front of that one (`keystone_gateway`, `keystone_stub`), and
`identities` for tokens, project ids and gRPC metadata of the seeded users.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[1]
# localglance is a plain directory of the repo, not an installed package.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from integration.support import (  # noqa: E402
    GatewayProcess,
    ImageTracker,
    StartGateway,
    error_info,
    open_channel,
)

from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc  # noqa: E402
from localglance import GlanceServer, Identities, KeystoneServer  # noqa: E402

__all__ = ["error_info"]  # re-exported: the ErrorInfo reader lives in integration/support.py


@pytest.fixture(scope="session")
def glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    """A real Glance 33 for the whole session; 3 workers so a stuck request does not block the others."""
    with GlanceServer(state_dir=tmp_path_factory.mktemp("glance"), processes=3) as server:
        yield server


@pytest.fixture(scope="session")
def gateway(glance: GlanceServer) -> Iterator[GatewayProcess]:
    """`python -m gateway` in front of the session Glance (exposes .port, .pid, .address, .log_lines)."""
    process = GatewayProcess(glance.url).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def start_gateway() -> Iterator[StartGateway]:
    """Starts extra gateways: `start_gateway(glance_url, "--read-timeout", "1", log_level="DEBUG")`.

    Each is stopped when the test ends.
    """
    started: list[GatewayProcess] = []

    def start(glance_url: str, *args: str, log_level: str = "INFO") -> GatewayProcess:
        process = GatewayProcess(glance_url, *args, log_level=log_level)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def channel(gateway: GatewayProcess) -> Iterator[grpc.Channel]:
    with open_channel(gateway.address) as chan:
        yield chan


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> pb_grpc.ImageServiceStub:
    """An ImageService client of the session gateway."""
    return pb_grpc.ImageServiceStub(channel)


@pytest.fixture
def new_image(stub: pb_grpc.ImageServiceStub, glance: GlanceServer) -> Iterator[ImageTracker]:
    """`new_image(name=None, data=None, **ImageSpec fields) -> Image`; every image is deleted at teardown."""
    tracker = ImageTracker(stub, glance.url)
    try:
        yield tracker
    finally:
        tracker.cleanup()


@pytest.fixture(scope="module")
def module_images(stub: pb_grpc.ImageServiceStub, glance: GlanceServer) -> Iterator[ImageTracker]:
    """Like new_image, for images a whole test module shares; deleted when the module ends."""
    tracker = ImageTracker(stub, glance.url)
    try:
        yield tracker
    finally:
        tracker.cleanup()


# -- real identities: Keystone, and a Glance + gateway that validate its tokens --


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneServer]:
    """A real Keystone 30 for the whole session, seeded with projects alpha, beta and service."""
    with KeystoneServer(state_dir=tmp_path_factory.mktemp("keystone")) as server:
        yield server


@pytest.fixture(scope="session")
def keystone_glance(
    keystone: KeystoneServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GlanceServer]:
    """A second real Glance that validates X-Auth-Token against `keystone` (upstream default policies)."""
    with GlanceServer(
        state_dir=tmp_path_factory.mktemp("keystone-glance"), processes=2, auth="keystone", keystone=keystone
    ) as server:
        yield server


@pytest.fixture(scope="session")
def keystone_gateway(keystone_glance: GlanceServer) -> Iterator[GatewayProcess]:
    """`python -m gateway` in front of `keystone_glance`: calls need `metadata=identities.metadata(...)`."""
    process = GatewayProcess(keystone_glance.url).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def keystone_stub(keystone_gateway: GatewayProcess) -> Iterator[pb_grpc.ImageServiceStub]:
    """An ImageService client of `keystone_gateway`."""
    with open_channel(keystone_gateway.address) as chan:
        yield pb_grpc.ImageServiceStub(chan)


@pytest.fixture(scope="session")
def identities(keystone: KeystoneServer) -> Identities:
    """`token(project, role)`, `project_id(name)`, `user_id(name)`, `admin_token()`, and
    `metadata(project, role)` -> `(("x-auth-token", token),)`. Projects alpha and beta each have users
    holding reader, member or admin there; ("gamma", "member") has a quota of 2 images; ("admin", "admin") is
    Keystone's bootstrap admin."""
    return Identities(keystone)
