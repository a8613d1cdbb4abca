"""glance.gateway.v1.ImageService: every RPC as Glance Images API v2 calls, one group of RPCs per module.

wire.add_image_service registers what this class has for each method of the service; a method no group
defines is the generated base's, which registration refuses (it is not a coroutine).
"""

from __future__ import annotations

from gateway.image_rpcs import ImageRpcs
from gateway.import_rpcs import ImportRpcs
from gateway.lifecycle_rpcs import LifecycleRpcs
from gateway.member_rpcs import MemberRpcs
from gateway.store_rpcs import StoreRpcs


class ImageService(
    ImageRpcs,
    ImportRpcs,
    MemberRpcs,
    StoreRpcs,
    LifecycleRpcs,
):
    """Built as every RpcGroup is: ImageService(settings, glance, uploads)."""
