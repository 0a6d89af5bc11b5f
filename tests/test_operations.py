"""Operations (issue 5): refusing to start insecure on a non-loopback address,
`playlog token`, the Prometheus metrics listener, the limits that protect the
server, deadlines, and the one configuration model (default < TOML < env < flag)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import subprocess
import sys
import threading
import tomllib
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from playlog import auth, cli, config
from playlog.clock import ManualClock
from playlog.config import ConfigError, Settings
from playlog.server import PlaylogServer, describe_startup
from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import clock_service_pb2_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, blocks, date_of, day_of_entries, entry, schedule_day
from tests.conftest import Running, make_stubs, start_server
from tests.test_auth import Principal, bearer, details, write_auth_file

CH = "ch1"
DAY1 = T0 + DAY


async def _declare_and_plan(r: Running) -> None:
    await r.declare(CH, HOUR)
    await r.store_days(CH, DAY1, DAY1 + DAY)


def _publish(start: int, entries: list[pb.ExecutionEntry], **kw: Any) -> ew.PublishAtomicReplaceRequest:
    return ew.PublishAtomicReplaceRequest(
        channel_id=CH,
        range_start_utc_ms=start,
        range_end_utc_ms=entries[-1].end_utc_ms,
        entries=entries,
        reason_code=kw.pop("reason_code", "SCHEDULE"),
        **kw,
    )


# -- refusing to start insecure -------------------------------------------------------


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return dataclasses.replace(Settings(), data_dir=str(tmp_path / "data"), clock="manual", **kw)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.10:50051", "example.org:50051"])
def test_refuses_a_non_loopback_address_without_auth(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        PlaylogServer(_settings(tmp_path, listen=listen), clock=ManualClock(T0))


async def test_starts_on_a_non_loopback_address_when_told_insecure(tmp_path: Path) -> None:
    server = PlaylogServer(_settings(tmp_path, listen="0.0.0.0:0", insecure=True), clock=ManualClock(T0))
    port = await server.start()
    try:
        assert port > 0
        info = describe_startup(server)
        assert info["auth"].startswith("none")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await make_stubs(channel).channel.ListChannels(ch.ListChannelsRequest())
    finally:
        await server.stop(0)


async def test_starts_on_a_non_loopback_address_with_auth(tmp_path: Path) -> None:
    path = write_auth_file(tmp_path / "auth.toml", [Principal("r", ["reader"], token=auth.new_token())])
    server = PlaylogServer(
        _settings(tmp_path, listen="0.0.0.0:0", auth_file=str(path)), clock=ManualClock(T0)
    )
    await server.start()
    try:
        assert describe_startup(server)["auth"] == "tokens/certificates"
    finally:
        await server.stop(0)


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:0", "[::1]:0", "127.0.0.2:0"])
async def test_loopback_needs_no_auth(tmp_path: Path, listen: str) -> None:
    """On a loopback address without an auth file the server starts, and every
    caller is the local principal with every role: reader, scheduler and
    operator calls all succeed without credentials."""
    server = PlaylogServer(_settings(tmp_path, listen=listen), clock=ManualClock(T0))
    assert server.credentials is None
    port = await server.start()
    try:
        assert describe_startup(server)["auth"] == "none: every caller is the local principal (all roles)"
        async with grpc.aio.insecure_channel(f"{listen.rpartition(':')[0]}:{port}") as channel:
            stubs = make_stubs(channel)
            # operator
            await stubs.channel.DeclareChannel(ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=HOUR))
            await stubs.clock.AdvanceTime(clk.AdvanceTimeRequest(delta_ms=MINUTE))
            # scheduler
            stored = await stubs.days.StoreScheduleDay(
                sd.StoreScheduleDayRequest(schedule_day=schedule_day(CH, date_of(DAY1)))
            )
            assert stored.ok, stored
            published = await stubs.window.PublishAtomicReplace(_publish(DAY1, day_of_entries(DAY1)))
            assert published.ok, published
            # operator override: the record's actor is the local principal
            overridden = await stubs.window.PublishAtomicReplace(
                _publish(DAY1, day_of_entries(DAY1, "o"), operator_override=True, reason_code="TEST")
            )
            assert overridden.ok, overridden
            records = await stubs.audit.ListOverrideRecords(audit.ListOverrideRecordsRequest(channel_id=CH))
            assert [r.actor for r in records.records] == ["local"]
            # reader
            listed = await stubs.channel.ListChannels(ch.ListChannelsRequest())
            assert [c.channel_id for c in listed.channels] == [CH]
            assert (await stubs.clock.GetTime(clk.GetTimeRequest())).now_utc_ms == T0 + MINUTE
    finally:
        await server.stop(0)


def test_the_cli_says_why_it_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # `serve` configures logging on the root logger for the process
        code = cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--listen", "0.0.0.0:50051"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 2
    assert "refusing to listen on 0.0.0.0:50051 without authentication" in capsys.readouterr().err


def test_without_auth_the_server_says_so_at_start(tmp_path: Path) -> None:
    """`playlog serve` with no auth: loopback, the local principal, said in the log."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "playlog", "serve", "--clock", "manual", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data")],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    events: dict[str, dict[str, Any]] = {}
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            doc = json.loads(line)
            events[doc["event"]] = doc
            if doc["event"] == "auth_disabled":
                # Answered only once serve() is past its start (signal handlers installed).
                with grpc.insecure_channel(f"127.0.0.1:{events['serving']['port']}") as channel:
                    clock = clock_service_pb2_grpc.ClockServiceStub(channel)
                    assert clock.GetTime(clk.GetTimeRequest(), timeout=10).manual
                proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert events["serving"]["auth"] == "none: every caller is the local principal (all roles)"
    assert "every caller is 'local' with all roles" in events["auth_disabled"]["message"]
    assert "stopped" in events


# -- playlog token ------------------------------------------------------------------------


def test_playlog_token_prints_an_auth_file_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "--name", "scheduler-7", "--role", "scheduler", "--role", "reader"]) == 0
    out, err = capsys.readouterr()
    doc = tomllib.loads(out)
    [entry_] = doc["principal"]
    assert entry_["name"] == "scheduler-7"
    assert entry_["roles"] == ["reader", "scheduler"]
    token_lines = [line for line in err.splitlines() if line.startswith("#   ")]
    assert len(token_lines) == 1
    token = token_lines[0].removeprefix("#   ").strip()
    assert len(token) >= 32
    assert entry_["token_sha256"] == auth.hash_token(token)
    assert token not in out  # only the hash goes into the file
    # The printed entry is an auth file as it stands.
    path = tmp_path / "auth.toml"
    path.write_text(out)
    principal = auth.Credentials.load(path).by_token(token)
    assert principal is not None and principal.name == "scheduler-7"
    assert principal.has(auth.Role.SCHEDULER) and not principal.has(auth.Role.OPERATOR)


def test_playlog_token_makes_a_new_token_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["token", "--name", "a", "--role", "reader"])
    first = capsys.readouterr().out
    cli.main(["token", "--name", "a", "--role", "reader"])
    assert capsys.readouterr().out != first


# -- metrics ---------------------------------------------------------------------------------


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return str(response.read().decode())


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample, 0 if absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        if metric.partition("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in metric for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.fixture
async def metered(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Running]:
    r = await start_server(tmp_path / "data", clock, metrics_listen="127.0.0.1:0")
    yield r
    await r.server.stop(0)


async def test_metrics_listener_serves_the_counters(metered: Running) -> None:
    r = metered
    port = r.server.metrics_port
    assert port > 0
    before = await asyncio.to_thread(_scrape, port)
    await _declare_and_plan(r)
    ok = await r.stubs.window.PublishAtomicReplace(_publish(DAY1, day_of_entries(DAY1)))
    assert ok.ok
    # Rejected: into the locked window without an override.
    r.clock.set_utc_ms(DAY1)
    locked = blocks(DAY1, 2, 30 * MINUTE, prefix="x")
    rejected = await r.stubs.window.PublishAtomicReplace(_publish(DAY1, locked))
    assert rejected.error_code == pb.ERROR_CODE_LOCKED_WINDOW_VIOLATION
    overridden = await r.stubs.window.PublishAtomicReplace(
        _publish(DAY1, locked, operator_override=True, reason_code="BREAKING_NEWS")
    )
    assert overridden.ok, overridden
    with pytest.raises(grpc.aio.AioRpcError):
        await r.stubs.channel.GetChannel(ch.GetChannelRequest(channel_id="nope"))
    watch = r.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH))
    await watch.read()
    try:
        during = await asyncio.to_thread(_scrape, port)
    finally:
        watch.cancel()

    publish = "/playlog.v1.ExecutionWindowService/PublishAtomicReplace"
    get_channel = "/playlog.v1.ChannelService/GetChannel"

    def delta(name: str, **labels: str) -> float:
        return _sample(during, name, **labels) - _sample(before, name, **labels)

    assert delta("playlog_requests_total", method=publish, status="OK") == 3
    assert delta("playlog_requests_total", method=get_channel, status="NOT_FOUND") == 1
    assert delta("playlog_request_seconds_count", method=publish) == 3
    assert delta("playlog_publishes_total", rpc="PublishAtomicReplace", override="false") == 1
    assert delta("playlog_publishes_total", rpc="PublishAtomicReplace", override="true") == 1
    assert (
        delta("playlog_rejections_total", rpc="PublishAtomicReplace", error_code="LOCKED_WINDOW_VIOLATION")
        == 1
    )
    assert delta("playlog_overrides_total", layer="EXECUTION_WINDOW") == 1
    assert _sample(during, "playlog_watch_subscribers") >= 1
    for name in ("playlog_store_commit_seconds", "playlog_auth_refusals_total", "playlog_watch_resets_total"):
        assert f"# TYPE {name} " in during


async def test_auth_refusals_are_counted(tmp_path: Path, clock: ManualClock) -> None:
    path = write_auth_file(tmp_path / "auth.toml", [Principal("r", ["reader"], token=auth.new_token())])
    r = await start_server(tmp_path / "data", clock, auth_file=str(path), metrics_listen="127.0.0.1:0")
    try:
        before = await asyncio.to_thread(_scrape, r.server.metrics_port)
        with pytest.raises(grpc.aio.AioRpcError):
            await r.stubs.channel.ListChannels(ch.ListChannelsRequest())
        after = await asyncio.to_thread(_scrape, r.server.metrics_port)
        kind = {"kind": "unauthenticated"}
        assert (
            _sample(after, "playlog_auth_refusals_total", **kind)
            - _sample(before, "playlog_auth_refusals_total", **kind)
            == 1
        )
        method = {"method": "/playlog.v1.ChannelService/ListChannels", "status": "UNAUTHENTICATED"}
        assert (
            _sample(after, "playlog_requests_total", **method)
            - _sample(before, "playlog_requests_total", **method)
            == 1
        )
    finally:
        await r.server.stop(0)


async def test_the_metrics_listener_stops_with_the_server(tmp_path: Path, clock: ManualClock) -> None:
    r = await start_server(tmp_path / "data", clock, metrics_listen="127.0.0.1:0")
    port = r.server.metrics_port
    await r.server.stop(0)
    with pytest.raises(OSError):
        await asyncio.to_thread(_scrape, port)


def test_a_bad_metrics_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        config.validate(Settings(metrics_listen="9090"))


# -- limits ------------------------------------------------------------------------------


async def test_an_oversized_message_is_resource_exhausted(tmp_path: Path, clock: ManualClock) -> None:
    r = await start_server(tmp_path / "data", clock, max_message_bytes=64 * 1024)
    try:
        await _declare_and_plan(r)
        big = [entry("huge", DAY1, DAY1 + HOUR, title="x" * 100_000)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stubs.window.PublishAtomicReplace(_publish(DAY1, big))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The server is fine, and nothing was written.
        snap = await r.stubs.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
        )
        assert not snap.entries
    finally:
        await r.server.stop(0)


async def _window_bigger_than_one_message(tmp_path: Path, clock: ManualClock, database_url: str) -> Running:
    """48 entries of about 1.5 KB in a server whose messages carry 32 KiB."""
    r = await start_server(tmp_path / "data", clock, database_url=database_url, max_message_bytes=32 * 1024)
    await _declare_and_plan(r)
    for i in range(6):
        start = DAY1 + i * 4 * HOUR
        result = await r.stubs.window.PublishAtomicReplace(
            _publish(start, blocks(start, 8, 30 * MINUTE, prefix=f"p{i}-", title="t" * 1500))
        )
        assert result.ok, result
    return r


async def test_an_oversized_answer_is_resource_exhausted_not_a_crash(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Small publishes that add up to a window bigger than one message.
    r = await _window_bigger_than_one_message(tmp_path, clock, "")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stubs.window.ReadWindowSnapshot(
                ew.ReadWindowSnapshotRequest(channel_id=CH, start_utc_ms=DAY1, end_utc_ms=DAY1 + DAY)
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "page_size" in details(refused.value)
        await r.stubs.channel.ListChannels(ch.ListChannelsRequest())
    finally:
        await r.server.stop(0)


# -- paged reads (AIP-158) -------------------------------------------------------------


def _page(token: str = "", size: int = 0, end: int = DAY1 + DAY) -> ew.ReadWindowSnapshotRequest:
    return ew.ReadWindowSnapshotRequest(
        channel_id=CH, start_utc_ms=DAY1, end_utc_ms=end, page_size=size, page_token=token
    )


async def _read_all_pages(r: Running) -> list[pb.WindowSnapshot]:
    pages: list[pb.WindowSnapshot] = []
    token = ""
    while True:
        page = await r.stubs.window.ReadWindowSnapshot(_page(token, size=1000))
        pages.append(page)
        assert page.ByteSize() <= 32 * 1024
        token = page.next_page_token
        if not token:
            return pages


async def test_a_window_larger_than_one_message_is_read_whole_in_pages(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await _window_bigger_than_one_message(tmp_path, clock, database_url)
    try:
        pages = await _read_all_pages(r)
        # More than one page (the byte budget cut them), every entry exactly once, in order.
        assert len(pages) > 1
        ids = [e.block_id for p in pages for e in p.entries]
        assert ids == [f"p{i}-{j}" for i in range(6) for j in range(8)]
        assert {p.channel_generation_id for p in pages} == {6}
        # page_size bounds the entries of a page.
        small = await r.stubs.window.ReadWindowSnapshot(_page(size=5))
        assert [e.block_id for e in small.entries] == [f"p0-{j}" for j in range(5)] and small.next_page_token
        rest = await r.stubs.window.ReadWindowSnapshot(_page(small.next_page_token, size=5))
        assert [e.block_id for e in rest.entries] == ["p0-5", "p0-6", "p0-7", "p1-0", "p1-1"]
    finally:
        await r.server.stop(0)


async def test_a_later_page_after_a_publish_is_aborted_never_a_mix_of_two_generations(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await _window_bigger_than_one_message(tmp_path, clock, database_url)
    try:
        first = await r.stubs.window.ReadWindowSnapshot(_page(size=10))
        assert first.next_page_token
        start = DAY1 + 18 * HOUR
        moved = await r.stubs.window.PublishAtomicReplace(
            _publish(start, blocks(start, 12, 30 * MINUTE, prefix="new-", title="t"))
        )
        assert moved.ok, moved
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stubs.window.ReadWindowSnapshot(_page(first.next_page_token, size=10))
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert "generation 6 to 7" in details(refused.value) and "first page" in details(refused.value)
        again = await _read_all_pages(r)
        assert {p.channel_generation_id for p in again} == {7}
        assert [e.block_id for e in again[-1].entries][-1] == "new-11"
    finally:
        await r.server.stop(0)


@pytest.mark.parametrize(
    ("request_", "field", "rule"),
    [
        (_page(size=-1), "page_size", "must be >= 0"),
        (_page("not a token", size=10), "page_token", "must be the next_page_token of an earlier answer"),
        (_page("AAAA", size=10), "page_token", "must be the next_page_token of an earlier answer"),
    ],
)
async def test_a_bad_page_size_or_token_is_invalid_argument_naming_the_field(
    running: Running, request_: ew.ReadWindowSnapshotRequest, field: str, rule: str
) -> None:
    await _declare_and_plan(running)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stubs.window.ReadWindowSnapshot(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}: {rule}" in details(refused.value)


async def test_a_page_token_of_another_range_is_refused_and_a_huge_page_size_is_lowered(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await _window_bigger_than_one_message(tmp_path, clock, database_url)
    try:
        first = await r.stubs.window.ReadWindowSnapshot(_page(size=3))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stubs.window.ReadWindowSnapshot(_page(first.next_page_token, size=3, end=DAY1 + HOUR))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token: was given for another request" in details(refused.value)
        huge = await r.stubs.window.ReadWindowSnapshot(_page(size=2**31 - 1))
        assert huge.entries and huge.next_page_token  # the byte budget still cut it
    finally:
        await r.server.stop(0)


async def test_too_many_entries_per_publish_is_invalid_argument(tmp_path: Path, clock: ManualClock) -> None:
    r = await start_server(tmp_path / "data", clock, max_entries_per_publish=6)
    try:
        await _declare_and_plan(r)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stubs.window.PublishAtomicReplace(_publish(DAY1, blocks(DAY1, 7, 30 * MINUTE)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "entries" in details(refused.value)
        status = rpc_status.from_call(refused.value)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad)
        assert [v.field for v in bad.field_violations] == ["entries"]
        assert "at most 6" in bad.field_violations[0].description
        ok = await r.stubs.window.PublishAtomicReplace(_publish(DAY1, blocks(DAY1, 6, 30 * MINUTE)))
        assert ok.ok, ok
    finally:
        await r.server.stop(0)


async def test_more_watch_streams_than_allowed_is_resource_exhausted(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    r = await start_server(tmp_path / "data", clock, database_url=database_url, max_concurrent_streams=2)
    try:
        await r.declare(CH, HOUR)
        streams = [r.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH)) for _ in range(2)]
        for s in streams:
            assert (await s.read()).HasField("snapshot")
        third = r.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await third.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_concurrent_streams" in details(refused.value)
        # One ends: there is room again.
        streams[0].cancel()
        await asyncio.wait_for(r.server.watch.wait_until_subscribers(lambda n: n < 2), 20)
        again = r.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH))
        assert (await again.read()).HasField("snapshot")
        again.cancel()
        streams[1].cancel()
    finally:
        await r.server.stop(0)


# -- deadlines ----------------------------------------------------------------------------


async def test_a_deadline_shorter_than_a_watch_is_honoured(running: Running) -> None:
    await running.declare(CH, HOUR)
    watch = running.stubs.window.WatchWindow(ew.WatchWindowRequest(channel_id=CH), timeout=0.3)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in watch:
            pass
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server lets go of the subscription.
    await asyncio.wait_for(running.server.watch.wait_until_subscribers(lambda n: n == 0), 20)
    await running.stubs.clock.GetTime(clk.GetTimeRequest())


async def test_a_deadline_shorter_than_a_slow_call_is_honoured(metered: Running) -> None:
    """A store call that outlasts its deadline: the caller gets DEADLINE_EXCEEDED
    on time, the server keeps serving and counts the call as such."""
    r = metered
    gate = threading.Event()
    playlog = r.server.playlog
    original = playlog.list_channels

    def slow() -> Any:
        gate.wait(5)
        return original()

    playlog.list_channels = slow  # type: ignore[method-assign]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await r.stubs.channel.ListChannels(ch.ListChannelsRequest(), timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - started < 2
        await r.stubs.clock.GetTime(clk.GetTimeRequest(), timeout=2)
    finally:
        gate.set()
        playlog.list_channels = original  # type: ignore[method-assign]
    text = await asyncio.to_thread(_scrape, r.server.metrics_port)
    method = "/playlog.v1.ChannelService/ListChannels"
    assert _sample(text, "playlog_requests_total", method=method, status="DEADLINE_EXCEEDED") >= 1


# -- one configuration model -----------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_configuration_precedence_default_toml_env_flag(tmp_path: Path) -> None:
    toml = tmp_path / "playlog.toml"
    toml.write_text(
        'listen = "127.0.0.1:6000"\n'
        "max_entries_per_publish = 100\n"
        "max_concurrent_streams = 10\n"
        'metrics-listen = "127.0.0.1:9100"\n'
        "insecure = true\n"
    )
    env = {
        "PLAYLOG_MAX_ENTRIES_PER_PUBLISH": "200",
        "PLAYLOG_MAX_CONCURRENT_STREAMS": "20",
        "PLAYLOG_INSECURE": "false",
    }
    s = config.load(_parse(["--config", str(toml), "--max-concurrent-streams", "30"]), env)
    assert s.max_message_bytes == Settings().max_message_bytes  # default
    assert s.listen == "127.0.0.1:6000"  # TOML
    assert s.metrics_listen == "127.0.0.1:9100"  # TOML, dashes allowed
    assert s.max_entries_per_publish == 200  # env over TOML
    assert s.insecure is False  # env over TOML
    assert s.max_concurrent_streams == 30  # flag over env

    # The config file may also come from the environment.
    s = config.load(_parse([]), {"PLAYLOG_CONFIG": str(toml)})
    assert s.max_entries_per_publish == 100
    assert s.insecure is True


def test_configuration_errors_name_their_source(tmp_path: Path) -> None:
    toml = tmp_path / "playlog.toml"
    toml.write_text("max_entries_per_publsh = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_entries_per_publsh'"):
        config.load(_parse(["--config", str(toml)]), {})
    with pytest.raises(ConfigError, match="environment PLAYLOG_MAX_MESSAGE_BYTES"):
        config.load(_parse([]), {"PLAYLOG_MAX_MESSAGE_BYTES": "lots"})
    with pytest.raises(ConfigError, match="max_concurrent_streams must be > 0"):
        config.load(_parse(["--max-concurrent-streams", "0"]), {})
    with pytest.raises(ConfigError, match="needs auth_file"):
        config.load(_parse(["--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"]), {})


def test_every_setting_has_a_flag_an_environment_variable_and_help() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    flags = {a.dest for a in parser._actions}
    for f in dataclasses.fields(Settings):
        assert f.name in flags
        assert f.name in config.HELP


async def test_a_token_works_over_the_whole_path(tmp_path: Path, clock: ManualClock) -> None:
    """End to end with the CLI's entry: token -> auth file -> server -> call."""
    token = auth.new_token()
    path = write_auth_file(tmp_path / "auth.toml", [Principal("ops", ["operator"], token=token)])
    r = await start_server(tmp_path / "data", clock, auth_file=str(path))
    try:
        await r.stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id=CH, locked_window_ms=HOUR), metadata=bearer(token)
        )
    finally:
        await r.server.stop(0)
