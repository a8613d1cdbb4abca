"""What every group of ImageService RPCs shares: the settings, the one Glance client, the uploads and the
stream admission, and the image conversions every group answers with."""

from __future__ import annotations

from typing import Any

import grpc

from gateway import convert, validation
from gateway.admission import StreamLimiter
from gateway.config import Settings
from gateway.glance_client import GlanceClient, JsonObject
from gateway.upload import Uploads
from generated.glance.gateway.v1 import image_service_pb2 as pb
from generated.glance.gateway.v1 import image_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class RpcGroup(pb_grpc.ImageServiceServicer):
    """The base of each group of RPCs (image_rpcs, member_rpcs, ...); servicer.ImageService combines them,
    so they share one instance of everything here. It derives from the generated servicer so that each
    group's methods are checked against the generated signatures."""

    def __init__(self, settings: Settings, glance: GlanceClient, uploads: Uploads) -> None:
        self._settings = settings
        self._glance = glance
        self._uploads = uploads
        # Every call that streams image data (GetImage, AddImage, StageImageData): each holds an upstream
        # connection and data in flight.
        self._streams = StreamLimiter(settings.max_streams)

    def _image(self, body: JsonObject, view: int = pb.IMAGE_VIEW_FULL) -> pb.Image:
        return convert.image_to_proto(body, self._settings.glance_base, view)

    def _image_ref(self, request: pb.GetImageMetaRequest | pb.GetImageRequest) -> str:
        if request.WhichOneof("image") == "image_uri":
            return validation.image_id_from_uri(request.image_uri, self._settings.glance_base)
        return validation.image_id(request.image_id)
