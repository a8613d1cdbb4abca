"""The store RPCs: the stores Glance keeps image data in, and removing an image's data from one of them."""

from __future__ import annotations

import httpx

from gateway import validation
from gateway.convert import info
from gateway.errors import Operation, from_outcome
from gateway.glance_client import JsonObject
from gateway.rpc_group import Context, RpcGroup
from gateway.rpc_scope import RpcScope
from generated.glance.gateway.v1 import image_service_pb2 as pb


class StoreRpcs(RpcGroup):
    async def ListStores(self, request: pb.ListStoresRequest, context: Context) -> pb.ListStoresResponse:
        async with RpcScope(context, "ListStores") as call:
            response = await self._glance.send(
                "GET", "/v2/info/stores", Operation.STORES, call, accept_statuses=(404,)
            )
            # Glance answers 404 when it runs without enabled_backends: one store, which has no id.
            if response.status_code == 404:
                return pb.ListStoresResponse()
            return pb.ListStoresResponse(stores=info.stores_to_proto(_json_object(response)))

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


def _json_object(response: httpx.Response) -> JsonObject:
    # As GlanceClient.request_json, which cannot accept the 404 above.
    try:
        body = response.json()
    except ValueError:
        raise from_outcome(500, Operation.STORES, "Glance answered with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise from_outcome(500, Operation.STORES, "Glance answered with JSON that is not an object")
    return body
