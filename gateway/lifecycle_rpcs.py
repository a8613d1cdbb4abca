"""The lifecycle RPCs: deactivating and reactivating an image, and the caller's project's quota usage (what
Glance lets a project keep)."""

from __future__ import annotations

from gateway import validation
from gateway.call_context import CallContext
from gateway.convert import info
from gateway.errors import Operation
from gateway.rpc_group import Context, RpcGroup
from gateway.rpc_scope import RpcScope
from generated.glance.gateway.v1 import image_service_pb2 as pb


class LifecycleRpcs(RpcGroup):
    async def DeactivateImage(
        self, request: pb.DeactivateImageRequest, context: Context
    ) -> pb.DeactivateImageResponse:
        async with RpcScope(context, "DeactivateImage") as call:
            await self._image_action(request.image_id, "deactivate", Operation.DEACTIVATE, call)
            return pb.DeactivateImageResponse()

    async def ReactivateImage(
        self, request: pb.ReactivateImageRequest, context: Context
    ) -> pb.ReactivateImageResponse:
        async with RpcScope(context, "ReactivateImage") as call:
            await self._image_action(request.image_id, "reactivate", Operation.REACTIVATE, call)
            return pb.ReactivateImageResponse()

    async def GetQuotaUsage(
        self, request: pb.GetQuotaUsageRequest, context: Context
    ) -> pb.GetQuotaUsageResponse:
        async with RpcScope(context, "GetQuotaUsage") as call:
            body = await self._glance.request_json("GET", "/v2/info/usage", Operation.USAGE, call)
            return info.usage_to_proto(body)

    async def _image_action(self, raw_id: str, action: str, operation: Operation, call: CallContext) -> None:
        image_id = validation.image_id(raw_id)
        # Glance answers 204 and no body; doing it twice is a no-op for Glance, and so here.
        await self._glance.send(
            "POST", f"/v2/images/{image_id}/actions/{action}", operation, call, image_id=image_id
        )
