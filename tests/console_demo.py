"""A demo channel for the console, in the domain's words: served for the
browser tests (tests/test_console_browser.py) and for `make screenshots`
(tests/screenshots.py), through the public gRPC API of a served process.

news: a 1 h lock, a ScheduleDay, twelve half-hour programmes from T0, an
engine that acknowledged generation 1 and reported the first programme as
aired; the manual clock at T0 + 40 min, so the rundown has every status:
past (n0), on air (n1), locked (n2, n3) and flexible (n4 on). sports: a
second channel, with nothing on air yet, for the overview.
"""

from __future__ import annotations

import grpc

from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import clock_service_pb2_grpc as clk_grpc
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import engine_service_pb2_grpc as eng_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb
from tests.builders import HOUR, MINUTE, T0, date_of, entry, schedule_day

START = T0 - 2 * HOUR  # the manual clock starts here, before anything is locked
NOW = T0 + 40 * MINUTE
HALF_HOUR = 30 * MINUTE
TITLES = [
    "Morning News", "Weather", "Markets Today", "World Report", "Sport Desk", "Documentary: Rivers",
    "Documentary: Rivers (2)", "Midday News", "Talk of the Town", "Film: The Long Road", "Film (cont.)",
    "Evening Preview",
]  # fmt: skip

Metadata = tuple[tuple[str, str], ...]


def programmes(
    channel_id: str, prefix: str, start: int, count: int, offset: int = 0
) -> list[pb.ExecutionEntry]:
    out = []
    for i in range(count):
        e = entry(f"{prefix}{i + offset}", start + i * HALF_HOUR, start + (i + 1) * HALF_HOUR,
                  title=TITLES[(i + offset) % len(TITLES)])  # fmt: skip
        e.channel_id = channel_id
        out.append(e)
    return out


def plan(channel_id: str) -> pb.ScheduleDay:
    """The day's plan: a half-hour slot per programme, titled as it airs."""
    day = schedule_day(channel_id, date_of(T0))
    del day.slots[:]
    for i in range(48):
        day.slots.add(
            start_utc_ms=T0 + i * HALF_HOUR,
            end_utc_ms=T0 + (i + 1) * HALF_HOUR,
            program_id=f"prog-{i}",
            asset_uri=f"asset://prog-{i}",
            title=TITLES[i % len(TITLES)],
        )
    return day


class Demo:
    def __init__(self, address: str, operator: Metadata = (), engine: Metadata | None = ()) -> None:
        """`operator`, `engine`: the callers' credentials (empty: auth off);
        engine None: no engine reports."""
        self.channel = grpc.insecure_channel(address)
        self.operator, self.engine_md = operator, engine
        self.channels = ch_grpc.ChannelServiceStub(self.channel)
        self.window = ew_grpc.ExecutionWindowServiceStub(self.channel)
        self.days = sd_grpc.ScheduleDayServiceStub(self.channel)
        self.clock = clk_grpc.ClockServiceStub(self.channel)
        self.engines = eng_grpc.EngineServiceStub(self.channel)

    def seed(self) -> None:
        md = self.operator
        for channel_id, name, number in (("news", "News 24", "4.1"), ("sports", "Sports One", "5.1")):
            self.channels.DeclareChannel(
                ch.DeclareChannelRequest(channel_id=channel_id, locked_window_ms=HOUR, display_name=name,
                                         guide_number=number),
                metadata=md,
            )  # fmt: skip
            self.days.StoreScheduleDay(sd.StoreScheduleDayRequest(schedule_day=plan(channel_id)), metadata=md)
        self.publish("news", T0, programmes("news", "n", T0, 12))
        self.publish("sports", T0 + 2 * HOUR, programmes("sports", "s", T0 + 2 * HOUR, 8))
        self.set_time(T0 + 31 * MINUTE)
        if self.engine_md is not None:
            self.engines.AcknowledgeWindow(
                eng.AcknowledgeWindowRequest(channel_id="news", applied_generation_id=1, accepted=True),
                metadata=self.engine_md,
            )
            # The first programme's first segment aired two seconds late.
            segment = programmes("news", "n", T0, 1)[0].segments[0]
            aired = eng.AsRunEvent(
                event_id="ev-n0",
                block_id="n0",
                generation_id=1,
                segment_id=segment.segment_id,
                asset_uri=segment.asset_uri,
                started_utc_ms=T0 + 2000,
                ended_utc_ms=T0 + segment.duration_ms + 2000,
                status=eng.AS_RUN_STATUS_AIRED,
            )
            self.engines.ReportAsRun(
                eng.ReportAsRunRequest(channel_id="news", events=[aired]), metadata=self.engine_md
            )
        self.set_time(NOW)

    def publish(
        self, channel_id: str, start: int, entries: list[pb.ExecutionEntry], **kw: object
    ) -> pb.PublishResult:
        result: pb.PublishResult = self.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(channel_id=channel_id, range_start_utc_ms=start,
                                           range_end_utc_ms=entries[-1].end_utc_ms, entries=entries, **kw),
            metadata=self.operator,
        )  # fmt: skip
        assert result.ok, result
        return result

    def set_time(self, now: int) -> None:
        self.clock.SetTime(clk.SetTimeRequest(now_utc_ms=now), metadata=self.operator)

    def advance(self, delta: int) -> int:
        answer = self.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=delta), metadata=self.operator)
        return int(answer.now_utc_ms)

    def close(self) -> None:
        self.channel.close()
