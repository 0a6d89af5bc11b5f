"""`playlog ctl` driven in-process for the BXF tests: its main(argv) in a
worker thread (it is a blocking gRPC client) against the real servicer on a
grpc.aio server of the test's event loop, on the manual clock at T0
(2026-11-22T00:00Z). No subprocess per step: each call costs milliseconds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from playlog.clock import ManualClock
from playlog.ctl.main import main as ctl_main
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from tests.builders import HOUR, T0
from tests.conftest import Running, start_server

SAMPLE = Path(__file__).parent / "bxf" / "news-2026-11-22.xml"
# The sample's profile: local times of New York at 29.97 drop-frame, broadcast day from 06:00.
PROFILE = ["--frame-rate", "29.97df", "--zone", "America/New_York", "--day-start", "06:00"]


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Desk:
    """The operator's desk: ctl against one in-process server."""

    r: Running
    capsys: pytest.CaptureFixture[str]

    async def ctl(self, *argv: str) -> Result:
        self.capsys.readouterr()
        code = await asyncio.to_thread(ctl_main, ["--server", self.r.address, *argv])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    async def ok(self, *argv: str) -> str:
        res = await self.ctl(*argv)
        assert res.code == 0, (argv, res.out, res.err)
        return res.out

    async def set_time(self, ms: int) -> None:
        await self.r.stubs.clock.SetTime(clk.SetTimeRequest(now_utc_ms=ms))

    async def declare(self, channel_id: str = "news", lock_ms: int = HOUR) -> None:
        await self.r.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=channel_id, locked_window_ms=lock_ms)
        )


@pytest.fixture
async def desk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    for key in [k for k in os.environ if k.startswith("PLAYLOG_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # not the user's ctl.toml
    r = await start_server(tmp_path / "data", ManualClock(T0))
    yield Desk(r, capsys)
    await r.server.stop(0)
