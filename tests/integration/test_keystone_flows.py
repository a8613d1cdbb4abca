"""The RPCs not yet covered with real identities, through the gateway in front of a Glance that validates
Keystone tokens: interoperable import (StageImageData, ImportImage with all three methods, WatchImageImport),
AddImageTag/RemoveImageTag, GetImageMeta and GetImage by URI, ListImages paging, and a revoked token.

Outcomes follow Glance 33's upstream default policies (`keystone_glance`) and gateway/errors.py. Every image
made here is deleted at teardown with the admin token, straight in Glance.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest

from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc
from integration.support import (
    KIB,
    Metadata,
    add_requests,
    assert_error,
    download,
    http,
    new_id,
    pseudo_random_chunks,
    sha512_hex,
    unique_name,
)
from localglance import GlanceServer, Identities, KeystoneServer

C = grpc.StatusCode
DATA = b"".join(pseudo_random_chunks(seed=71, total=5 * KIB + 17))
WATCH_TIMEOUT = 60.0
# Loopback calls to Keystone must never go through a proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

AddAs = Callable[..., pb.Image]


@pytest.fixture
def add_as(
    keystone_stub: pb_grpc.ImageServiceStub, keystone_glance: GlanceServer, identities: Identities
) -> Iterator[AddAs]:
    """`add_as(project, role, data=b"", **ImageSpec fields)`: an image made through the gateway as
    <project>-<role> (queued when there is no data); each is deleted at teardown with the admin token."""
    ids: list[str] = []

    def add(project: str, role: str, data: bytes = b"", **fields: Any) -> pb.Image:
        spec = pb.ImageSpec(id=new_id(), name=unique_name("ksflow"), type=pb.IMAGE_TYPE_RAW, **fields)
        ids.append(spec.id)
        requests = add_requests(spec, [data] if data else [])
        image: pb.Image = keystone_stub.AddImage(
            requests, metadata=identities.metadata(project, role), timeout=60
        ).image
        return image

    try:
        yield add
    finally:
        admin = {"X-Auth-Token": identities.admin_token()}
        left = []
        for image_id in ids:
            status, raw = http("DELETE", f"{keystone_glance.url}/v2/images/{image_id}", headers=admin)
            if status not in (204, 404):
                left.append((image_id, status, raw))
        assert not left, f"images not deleted: {left}"


def glance_json(glance: GlanceServer, identities: Identities, image_id: str) -> dict[str, Any]:
    """The image as Glance shows it to the admin (straight over REST, not through the gateway)."""
    headers = {"X-Auth-Token": identities.admin_token()}
    status, raw = http("GET", f"{glance.url}/v2/images/{image_id}", headers=headers)
    assert status == 200, raw
    image: dict[str, Any] = json.loads(raw)
    return image


def refused(
    code: grpc.StatusCode,
    status: int,
    image_id: str | None,
    rpc: Callable[..., object],
    request: object,
    who: Metadata,
    reason: str = "",
) -> None:
    """`rpc(request)` as `who` fails with `code` (reason: the code's name unless given), Glance's `status`."""
    with pytest.raises(grpc.RpcError) as caught:
        answer = rpc(request, metadata=who, timeout=60)
        if isinstance(answer, Iterator):
            list(answer)  # a server stream fails as it is read
    if status == 401:
        # auth_token refuses before Glance's request-id middleware runs: a 401 comes without a request id.
        info = assert_error(caught.value, code, reason or code.name, image_id=image_id)
        assert info.metadata["glance_status"] == "401" and "request_id" not in info.metadata, info.metadata
    else:
        assert_error(caught.value, code, reason or code.name, glance_status=status, image_id=image_id)


def stage_requests(image_id: str, data: bytes, **spec: Any) -> Iterator[pb.StageImageDataRequest]:
    yield pb.StageImageDataRequest(spec=pb.StageSpec(image_id=image_id, **spec))
    for start in range(0, len(data), 2 * KIB):
        yield pb.StageImageDataRequest(data=data[start : start + 2 * KIB])


def watch(stub: pb_grpc.ImageServiceStub, image_id: str, who: Metadata) -> list[pb.WatchImageImportResponse]:
    request = pb.WatchImageImportRequest(image_id=image_id)
    return list(stub.WatchImageImport(request, metadata=who, timeout=WATCH_TIMEOUT))


def download_as(stub: pb_grpc.ImageServiceStub, request: pb.GetImageRequest, who: Metadata) -> bytes:
    header, data = download(stub, request, metadata=who)
    assert header.verified
    return data


# -- glance-direct ------------------------------------------------------------------------------------------


def test_a_member_stages_and_imports_with_glance_direct_others_may_not_stage(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    add_as: AddAs,
) -> None:
    image = add_as("alpha", "member", visibility=pb.VISIBILITY_PRIVATE)
    assert image.status == pb.IMAGE_STATUS_QUEUED
    # A reader sees the image but may not change it (stage → modify_image: 403).
    stage = keystone_stub.StageImageData
    reader = identities.metadata("alpha", "reader")
    refused(C.PERMISSION_DENIED, 403, image.id, stage, stage_requests(image.id, DATA), reader)
    # Another project does not see alpha's private image at all.
    beta = identities.metadata("beta", "member")
    refused(C.NOT_FOUND, 404, image.id, stage, stage_requests(image.id, DATA), beta)
    before = glance_json(keystone_glance, identities, image.id)
    assert (before["status"], before["size"]) == ("queued", None), before
    staged_file = keystone_glance.config.data_dir / "staging" / image.id
    assert not staged_file.exists()

    member = identities.metadata("alpha", "member")
    staged = keystone_stub.StageImageData(
        stage_requests(image.id, DATA, size=len(DATA), expected_sha512=sha512_hex(DATA)),
        metadata=member,
        timeout=60,
    ).image
    assert (staged.status, staged.size) == (pb.IMAGE_STATUS_UPLOADING, len(DATA))
    assert staged_file.read_bytes() == DATA
    keystone_stub.ImportImage(
        pb.ImportImageRequest(image_id=image.id, method=pb.IMPORT_METHOD_GLANCE_DIRECT),
        metadata=member,
        timeout=30,
    )
    responses = watch(keystone_stub, image.id, member)
    assert all(r.state == pb.IMPORT_STATE_IN_PROGRESS for r in responses[:-1])
    last = responses[-1]
    assert (last.state, last.image.status) == (pb.IMPORT_STATE_SUCCEEDED, pb.IMAGE_STATUS_ACTIVE)
    assert list(last.image.stores) == ["file"] and last.image.owner == identities.project_id("alpha")
    assert download_as(keystone_stub, pb.GetImageRequest(image_id=image.id), member) == DATA


# -- copy-image -------------------------------------------------------------------------------------------


def test_copy_image_is_for_admins_and_adds_the_store(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    add_as: AddAs,
) -> None:
    image = add_as("alpha", "member", data=DATA)
    assert (image.status, list(image.stores)) == (pb.IMAGE_STATUS_ACTIVE, ["file"])
    copy = pb.ImportImageRequest(image_id=image.id, method=pb.IMPORT_METHOD_COPY_IMAGE, stores=["file2"])
    member = identities.metadata("alpha", "member")
    # Owning the image is not enough: copy_image is admin-only by default.
    refused(C.PERMISSION_DENIED, 403, image.id, keystone_stub.ImportImage, copy, member)
    assert "os_glance_import_task" not in glance_json(keystone_glance, identities, image.id)

    admin = identities.metadata("alpha", "admin")
    keystone_stub.ImportImage(copy, metadata=admin, timeout=30)
    last = watch(keystone_stub, image.id, admin)[-1]
    assert last.state == pb.IMPORT_STATE_SUCCEEDED
    assert (last.image.status, sorted(last.image.stores)) == (pb.IMAGE_STATUS_ACTIVE, ["file", "file2"])
    after = glance_json(keystone_glance, identities, image.id)
    # The import lock is gone: a second import may start.
    assert after["stores"] == "file,file2" and "os_glance_import_task" not in after, after
    refused(C.ALREADY_EXISTS, 400, image.id, keystone_stub.ImportImage, copy, admin, "ALREADY_IN_STORE")
    assert download_as(keystone_stub, pb.GetImageRequest(image_id=image.id), member) == DATA


# -- web-download -----------------------------------------------------------------------------------------


@pytest.fixture
def web(keystone_glance: GlanceServer) -> Iterator[list[str]]:
    """Serves DATA at /image.raw on 127.0.0.1:<web_port> (the one loopback port Glance's import filtering
    lets web-download fetch from); yields the paths requested."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            found = self.path == "/image.raw"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(DATA) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(DATA)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", keystone_glance.web_port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="web-download", daemon=True)
    thread.start()
    try:
        yield paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_member_imports_with_web_download(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    add_as: AddAs,
    web: list[str],
) -> None:
    image = add_as("alpha", "member", visibility=pb.VISIBILITY_SHARED)
    member = identities.metadata("alpha", "member")
    uri = f"http://127.0.0.1:{keystone_glance.web_port}/image.raw"
    request = pb.ImportImageRequest(image_id=image.id, method=pb.IMPORT_METHOD_WEB_DOWNLOAD, uri=uri)
    keystone_stub.ImportImage(request, metadata=member, timeout=30)
    last = watch(keystone_stub, image.id, member)[-1]
    assert (last.state, last.image.status) == (pb.IMPORT_STATE_SUCCEEDED, pb.IMAGE_STATUS_ACTIVE)
    assert last.image.owner == identities.project_id("alpha") and last.image.size == len(DATA)
    assert web == ["/image.raw"]
    assert download_as(keystone_stub, pb.GetImageRequest(image_id=image.id), member) == DATA


# -- tags -----------------------------------------------------------------------------------------------


def test_members_tag_readers_and_other_projects_may_not(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    add_as: AddAs,
) -> None:
    image = add_as("alpha", "member", tags=["kept"])
    member = identities.metadata("alpha", "member")
    keystone_stub.AddImageTag(pb.AddImageTagRequest(image_id=image.id, tag="new"), metadata=member)
    assert sorted(glance_json(keystone_glance, identities, image.id)["tags"]) == ["kept", "new"]

    add = pb.AddImageTagRequest(image_id=image.id, tag="theirs")
    remove = pb.RemoveImageTagRequest(image_id=image.id, tag="kept")
    for (project, role), code, status in [
        (("alpha", "reader"), C.PERMISSION_DENIED, 403),
        (("beta", "member"), C.NOT_FOUND, 404),
    ]:
        who = identities.metadata(project, role)
        refused(code, status, image.id, keystone_stub.AddImageTag, add, who)
        refused(code, status, image.id, keystone_stub.RemoveImageTag, remove, who)
    assert sorted(glance_json(keystone_glance, identities, image.id)["tags"]) == ["kept", "new"]

    keystone_stub.RemoveImageTag(pb.RemoveImageTagRequest(image_id=image.id, tag="new"), metadata=member)
    got = keystone_stub.GetImageMeta(pb.GetImageMetaRequest(image_id=image.id), metadata=member).image
    assert list(got.tags) == ["kept"]


# -- by URI, and paging -----------------------------------------------------------------------------------


def test_an_image_is_read_by_its_uri_with_a_real_token(
    keystone_stub: pb_grpc.ImageServiceStub,
    keystone_glance: GlanceServer,
    identities: Identities,
    add_as: AddAs,
) -> None:
    image = add_as("alpha", "member", data=DATA)
    assert image.uri == f"{keystone_glance.url}/v2/images/{image.id}"
    reader = identities.metadata("alpha", "reader")
    member = identities.metadata("alpha", "member")
    for uri in (image.uri, f"{keystone_glance.url}/images/{image.id}"):
        got = keystone_stub.GetImageMeta(pb.GetImageMetaRequest(image_uri=uri), metadata=reader).image
        assert (got.id, got.owner, got.size) == (image.id, identities.project_id("alpha"), len(DATA))
        assert download_as(keystone_stub, pb.GetImageRequest(image_uri=uri), member) == DATA
    # Glance 33's download_image is for the owner project's members (and admins): a reader sees, not reads.
    by_uri = pb.GetImageRequest(image_uri=image.uri)
    refused(C.PERMISSION_DENIED, 403, image.id, keystone_stub.GetImage, by_uri, reader)
    beta = identities.metadata("beta", "member")
    meta_by_uri = pb.GetImageMetaRequest(image_uri=image.uri)
    refused(C.NOT_FOUND, 404, image.id, keystone_stub.GetImageMeta, meta_by_uri, beta)
    refused(C.NOT_FOUND, 404, image.id, keystone_stub.GetImage, by_uri, beta)


def test_pages_of_one_hold_only_what_the_project_may_see(
    keystone_stub: pb_grpc.ImageServiceStub, identities: Identities, add_as: AddAs
) -> None:
    tag = unique_name("page")
    alphas = {
        add_as("alpha", "member", tags=[tag], visibility=visibility).id
        for visibility in (pb.VISIBILITY_PRIVATE, pb.VISIBILITY_PRIVATE, pb.VISIBILITY_SHARED)
    }
    betas = {
        add_as("beta", "member", tags=[tag], visibility=visibility).id
        for visibility in (pb.VISIBILITY_PRIVATE, pb.VISIBILITY_SHARED)
    }
    reader = identities.metadata("alpha", "reader")
    request = pb.ListImagesRequest(page_size=1, tags=[tag], view=pb.IMAGE_VIEW_FULL)
    pages: list[pb.ListImagesResponse] = []
    while True:
        page = keystone_stub.ListImages(request, metadata=reader, timeout=30)
        pages.append(page)
        if not page.next_page_token:
            break
        assert len(pages) < 10, "the listing never ends"
        request.page_token = page.next_page_token
    assert [len(page.images) for page in pages] == [1, 1, 1]
    listed = [image.id for page in pages for image in page.images]
    assert sorted(listed) == sorted(alphas)
    assert {image.owner for page in pages for image in page.images} == {identities.project_id("alpha")}
    # The same tag seen from beta: only beta's images.
    response = keystone_stub.ListImages(
        pb.ListImagesRequest(page_size=10, tags=[tag]), metadata=identities.metadata("beta", "reader")
    )
    assert {image.id for image in response.images} == betas


# -- a revoked token ----------------------------------------------------------------------------------------


def keystone_status(keystone: KeystoneServer, method: str, admin_token: str, subject: str) -> int:
    """`method` (GET validates, DELETE revokes) on /v3/auth/tokens for the subject token, as the admin."""
    headers = {"X-Auth-Token": admin_token, "X-Subject-Token": subject}
    request = urllib.request.Request(f"{keystone.url}/v3/auth/tokens", method=method, headers=headers)
    try:
        with NO_PROXY.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_a_revoked_token_is_unauthenticated(
    keystone_stub: pb_grpc.ImageServiceStub, keystone: KeystoneServer, identities: Identities
) -> None:
    # A fresh token Glance has never seen: Glance caches validated tokens (300 s per worker), so one it had
    # validated before the revocation would still pass.
    tokens = keystone.tokens
    fresh = tokens.api.password_token("beta-reader", tokens.secrets.users_password, "beta").token
    assert fresh != identities.token("beta", "reader")
    admin_token = identities.admin_token()
    assert keystone_status(keystone, "GET", admin_token, fresh) == 200
    assert keystone_status(keystone, "DELETE", admin_token, fresh) == 204
    assert keystone_status(keystone, "GET", admin_token, fresh) == 404

    revoked = (("x-auth-token", fresh),)
    refused(C.UNAUTHENTICATED, 401, None, keystone_stub.ListImages, pb.ListImagesRequest(), revoked)
    bearer = (("authorization", f"Bearer {fresh}"),)
    refused(C.UNAUTHENTICATED, 401, None, keystone_stub.ListStores, pb.ListStoresRequest(), bearer)
    # Only that token: the same user's other token still works.
    keystone_stub.ListImages(
        pb.ListImagesRequest(page_size=1), metadata=identities.metadata("beta", "reader"), timeout=30
    )
