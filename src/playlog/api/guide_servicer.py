"""GuideService: the guide over gRPC, as thin as the other servicers; the
HTTP guide (playlog.http.guide) calls the same use cases (app.guide)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc

from playlog.api import Context, convert
from playlog.api.servicers import _Base
from playlog.app.guide import Guide
from playlog.app.service import Playlog
from playlog.domain.guide import validate_request
from playlog.v1 import guide_service_pb2 as guide_pb
from playlog.v1 import guide_service_pb2_grpc as guide_grpc


class GuideServicer(_Base, guide_grpc.GuideServiceServicer):
    def __init__(
        self, playlog: Playlog, guide: Guide, executor: ThreadPoolExecutor, max_message_bytes: int
    ) -> None:
        super().__init__(playlog, executor)
        self.guide = guide
        self.max_message_bytes = max_message_bytes

    async def GetGuide(
        self, request: guide_pb.GetGuideRequest, context: Context
    ) -> guide_pb.GetGuideResponse:
        channel_ids = list(request.channel_ids)
        validate_request(channel_ids, request.start_utc_ms, request.end_utc_ms)
        read = await self.run(self.guide.read, channel_ids, request.start_utc_ms, request.end_utc_ms)
        response = convert.guide_to_pb(read)
        size = response.ByteSize()
        if size > self.max_message_bytes:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the guide of {len(read.channels)} channels over this range is {size} bytes, above the "
                f"server's message limit of {self.max_message_bytes}: ask fewer channels_ids or a "
                "shorter range",
            )
        return response

    async def GetNowNext(
        self, request: guide_pb.GetNowNextRequest, context: Context
    ) -> guide_pb.GetNowNextResponse:
        channel_ids = list(request.channel_ids)
        validate_request(channel_ids)
        now, answers = await self.run(self.guide.now_next, channel_ids)
        return convert.now_next_to_pb(now, answers)
