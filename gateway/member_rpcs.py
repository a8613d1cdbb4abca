"""The image sharing RPCs: an image's members (projects it is shared with) and their statuses."""

from __future__ import annotations

from urllib.parse import quote

from gateway import validation
from gateway.convert.member import member_to_proto, members_to_proto, status_body
from gateway.errors import Operation
from gateway.rpc_group import Context, RpcGroup
from gateway.rpc_scope import RpcScope
from generated.glance.gateway.v1 import image_service_pb2 as pb


def _members_path(image_id: str) -> str:
    return f"/v2/images/{image_id}/members"


def _member_path(image_id: str, member_id: str) -> str:
    # "@" goes out as %40; quoting also keeps one segment should validation.member_id ever allow more.
    return f"{_members_path(image_id)}/{quote(member_id, safe='')}"


class MemberRpcs(RpcGroup):
    async def CreateImageMember(
        self, request: pb.CreateImageMemberRequest, context: Context
    ) -> pb.CreateImageMemberResponse:
        async with RpcScope(context, "CreateImageMember") as call:
            image_id = validation.image_id(request.image_id)
            # Checked as strictly as in a path: a member Glance stores must be one it can find again by path.
            member_id = validation.member_id(request.member_id)
            body = await self._glance.request_json(
                "POST",
                _members_path(image_id),
                Operation.CREATE_MEMBER,
                call,
                image_id=image_id,
                json_body={"member": member_id},
            )
            return pb.CreateImageMemberResponse(member=member_to_proto(body))

    async def ListImageMembers(
        self, request: pb.ListImageMembersRequest, context: Context
    ) -> pb.ListImageMembersResponse:
        async with RpcScope(context, "ListImageMembers") as call:
            image_id = validation.image_id(request.image_id)
            body = await self._glance.request_json(
                "GET", _members_path(image_id), Operation.LIST_MEMBERS, call, image_id=image_id
            )
            return pb.ListImageMembersResponse(members=members_to_proto(body))

    async def GetImageMember(
        self, request: pb.GetImageMemberRequest, context: Context
    ) -> pb.GetImageMemberResponse:
        async with RpcScope(context, "GetImageMember") as call:
            image_id = validation.image_id(request.image_id)
            member_id = validation.member_id(request.member_id)
            body = await self._glance.request_json(
                "GET", _member_path(image_id, member_id), Operation.SHOW_MEMBER, call, image_id=image_id
            )
            return pb.GetImageMemberResponse(member=member_to_proto(body))

    async def UpdateImageMember(
        self, request: pb.UpdateImageMemberRequest, context: Context
    ) -> pb.UpdateImageMemberResponse:
        async with RpcScope(context, "UpdateImageMember") as call:
            image_id = validation.image_id(request.image_id)
            member_id = validation.member_id(request.member_id)
            body = await self._glance.request_json(
                "PUT",
                _member_path(image_id, member_id),
                Operation.UPDATE_MEMBER,
                call,
                image_id=image_id,
                json_body=status_body(request.status),
            )
            return pb.UpdateImageMemberResponse(member=member_to_proto(body))

    async def DeleteImageMember(
        self, request: pb.DeleteImageMemberRequest, context: Context
    ) -> pb.DeleteImageMemberResponse:
        async with RpcScope(context, "DeleteImageMember") as call:
            image_id = validation.image_id(request.image_id)
            member_id = validation.member_id(request.member_id)
            await self._glance.send(
                "DELETE", _member_path(image_id, member_id), Operation.DELETE_MEMBER, call, image_id=image_id
            )
            return pb.DeleteImageMemberResponse()
