"""TLS on both sides: the gRPC listener, and a real Glance reached over HTTPS."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from integration.support import (
    MIB,
    ImageTracker,
    StartGateway,
    add_requests,
    assert_error,
    chunks_of,
    download,
    new_id,
    open_channel,
    unique_name,
)
from localglance import GlanceServer
from localglance.ports import free_port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl is on every machine of this kind)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_listener_serves_verified_clients_only(
    certificate: tuple[Path, Path], glance: GlanceServer, start_gateway: StartGateway, new_image: ImageTracker
) -> None:
    cert, key = certificate
    image = new_image(name=unique_name("tls"))
    gateway = start_gateway(glance.url, "--tls-cert", str(cert), "--tls-key", str(key))
    assert any("(TLS)" in line for line in gateway.log_lines)

    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(gateway.address, credentials) as channel:
        found = pb_grpc.ImageServiceStub(channel).GetImageMeta(
            pb.GetImageMetaRequest(image_id=image.id), timeout=10
        )
    assert found.image.id == image.id

    # A plaintext client cannot talk to a TLS listener.
    with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ImageServiceStub(channel).GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# Production Glance usually sits behind an HTTPS load balancer; here Debian's nginx (installed by `make test`)
# terminates TLS in front of the real Glance and passes requests and bodies through unbuffered.
PROXY_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 0;
        location / {{
            proxy_pass {glance};
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def glance_over_https(
    certificate: tuple[Path, Path], glance: GlanceServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.access(nginx, os.X_OK), "nginx is missing: `make test` installs Debian's nginx-light"
    folder, port = tmp_path_factory.mktemp("https-proxy"), free_port()
    cert, key = certificate
    conf = folder / "nginx.conf"
    conf.write_text(PROXY_CONF.format(dir=folder, port=port, cert=cert, key=key, glance=glance.url))
    proxy = subprocess.Popen([nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")])
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proxy.poll() is None, (folder / "error.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert time.monotonic() < deadline, "the HTTPS proxy did not start"
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_https_glance_trusted_through_the_ca_file(
    certificate: tuple[Path, Path],
    glance_over_https: str,
    start_gateway: StartGateway,
    new_image: ImageTracker,
) -> None:
    cert, _ = certificate
    data = os.urandom(3 * MIB + 7)
    gateway = start_gateway(glance_over_https, "--glance-ca-file", str(cert))
    with open_channel(gateway.address) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        spec = pb.ImageSpec(name=unique_name("https"), id=new_id(), type=pb.IMAGE_TYPE_RAW, size=len(data))
        new_image.track(spec.id)
        uploaded = stub.AddImage(add_requests(spec, chunks_of(data, MIB)), timeout=60).image
        assert (uploaded.status, uploaded.size) == (pb.IMAGE_STATUS_ACTIVE, len(data))
        header, received = download(stub, pb.GetImageRequest(image_id=spec.id))
    assert header.verified and received == data


def test_https_glance_with_an_unknown_certificate_is_unreachable(
    glance_over_https: str, start_gateway: StartGateway
) -> None:
    # Without --glance-ca-file only the system's CAs are trusted: a self-signed Glance is refused.
    gateway = start_gateway(glance_over_https)
    with open_channel(gateway.address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ImageServiceStub(channel).GetImageMeta(pb.GetImageMetaRequest(image_id=new_id()), timeout=10)
    assert_error(caught.value, grpc.StatusCode.UNAVAILABLE, "GLANCE_UNREACHABLE")
