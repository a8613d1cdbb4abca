"""The store RPCs: the stores Glance keeps image data in, and removing an image's data from one of them."""

from __future__ import annotations

from gateway import validation
from gateway.convert import info
from gateway.errors import Operation
from gateway.rpc_group import Context, RpcGroup
from gateway.rpc_scope import RpcScope
from generated.glance.gateway.v1 import image_service_pb2 as pb


class StoreRpcs(RpcGroup):
    async def ListStores(self, request: pb.ListStoresRequest, context: Context) -> pb.ListStoresResponse:
        async with RpcScope(context, "ListStores") as call:
            # None when Glance runs without enabled_backends: one store, which has no id.
            stores = await self._glance.stores(call)
            return pb.ListStoresResponse(stores=info.stores_to_proto(stores or []))

    async def DeleteImageFromStore(
        self, request: pb.DeleteImageFromStoreRequest, context: Context
    ) -> pb.DeleteImageFromStoreResponse:
        async with RpcScope(context, "DeleteImageFromStore") as call:
            image_id = validation.image_id(request.image_id)
            store = validation.store_id(request.store_id)
            await self._glance.send(
                "DELETE",
                f"/v2/stores/{store}/{image_id}",
                Operation.DELETE_FROM_STORE,
                call,
                image_id=image_id,
            )
            return pb.DeleteImageFromStoreResponse()
