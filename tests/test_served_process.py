"""The built service as a subprocess, reached as users and other languages
reach it: grpcurl (with server reflection) and a Python client; SIGKILL right
after an acknowledged override, restart, and everything is still there;
SIGTERM shuts down cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from playlog.v1 import audit_service_pb2 as audit
from playlog.v1 import audit_service_pb2_grpc as audit_grpc
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import clock_service_pb2 as clk
from playlog.v1 import clock_service_pb2_grpc as clk_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, date_of, day_of_entries, entry, schedule_day

BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, data_dir: Path, port: int, *extra: str) -> None:
        self.address = f"127.0.0.1:{port}"
        self.log = data_dir.parent / f"server-{port}.log"
        self.proc = subprocess.Popen(
            [str(BIN / "playlog"), "serve", "--data-dir", str(data_dir), "--listen", self.address, *extra],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log.read_text()}")
            with grpc.insecure_channel(self.address) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return
                except grpc.FutureTimeoutError:
                    continue
        raise AssertionError("server did not become ready")

    def log_events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def grpcurl(address: str, method: str, body: dict[str, object] | None = None) -> dict[str, object]:
    args = [GRPCURL, "-plaintext"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    result = subprocess.run([*args, address, method], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Path, int]]:
    data_dir, port = tmp_path / "data", free_port()
    server = Served(data_dir, port, "--clock", "manual", "--start-utc-ms", str(T0))
    yield server, data_dir, port
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def test_grpcurl_lists_describes_and_drives_the_service(served: tuple[Served, Path, int]) -> None:
    server, _, _ = served
    listing = subprocess.run(
        [GRPCURL, "-plaintext", server.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert {
        "playlog.v1.ChannelService",
        "playlog.v1.ExecutionWindowService",
        "playlog.v1.ScheduleDayService",
        "playlog.v1.AuditService",
        "playlog.v1.ClockService",
        "playlog.v1.EngineService",
        "grpc.health.v1.Health",
    } <= set(listing)
    described = subprocess.run(
        [GRPCURL, "-plaintext", server.address, "describe", "playlog.v1.ExecutionWindowService"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "rpc WatchWindow" in described and "returns ( stream .playlog.v1.WindowEvent )" in described
    a = server.address
    assert grpcurl(a, "playlog.v1.ClockService/GetTime")["now_utc_ms"] == str(T0)
    grpcurl(a, "playlog.v1.ChannelService/DeclareChannel", {"channel_id": "news", "locked_window_ms": HOUR})
    date = date_of(T0)
    stored = grpcurl(
        a,
        "playlog.v1.ScheduleDayService/StoreScheduleDay",
        {"schedule_day": {"channel_id": "news", "programming_day_date": date, "plan_id": "p1"}},
    )
    assert stored["ok"] is True
    entries = [json.loads(_to_json(e)) for e in day_of_entries(T0)]
    refused = grpcurl(
        a,
        "playlog.v1.ExecutionWindowService/PublishAtomicReplace",
        {"channel_id": "news", "range_start_utc_ms": T0, "range_end_utc_ms": T0 + DAY, "entries": entries},
    )
    assert refused.get("ok") is not True
    assert refused["error_code"] == "ERROR_CODE_LOCKED_WINDOW_VIOLATION"
    overridden = grpcurl(
        a,
        "playlog.v1.ExecutionWindowService/PublishAtomicReplace",
        {
            "channel_id": "news",
            "range_start_utc_ms": T0,
            "range_end_utc_ms": T0 + DAY,
            "entries": entries,
            "operator_override": True,
            "reason_code": "LAUNCH_DAY",
        },
    )
    assert overridden["ok"] is True and overridden["published_generation_id"] == "1"
    snap = grpcurl(
        a,
        "playlog.v1.ExecutionWindowService/ReadWindowSnapshot",
        {"channel_id": "news", "start_utc_ms": T0, "end_utc_ms": T0 + HOUR},
    )
    assert [e["block_id"] for e in snap["entries"]] == ["d0", "d1"]
    grpcurl(a, "playlog.v1.ClockService/AdvanceTime", {"delta_ms": 2 * HOUR})
    now = grpcurl(
        a, "playlog.v1.ExecutionWindowService/GetEntryAt", {"channel_id": "news", "at_utc_ms": T0 + 2 * HOUR}
    )
    assert now["found"] is True and now["entry"]["block_id"] == "d4"
    records = grpcurl(a, "playlog.v1.AuditService/ListOverrideRecords", {"channel_id": "news"})
    assert [r["reason_code"] for r in records["records"]] == ["LAUNCH_DAY"]
    rejected = [e for e in server.log_events() if e.get("event") == "mutation_rejected"]
    assert rejected and rejected[-1]["invariant"] == "INV-HORIZON-LOCKED-IMMUTABLE-001-VIOLATED"


def _to_json(message: pb.ExecutionEntry) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(message, preserving_proto_field_name=True)


def test_an_acknowledged_override_survives_sigkill(served: tuple[Served, Path, int]) -> None:
    server, data_dir, port = served
    with grpc.insecure_channel(server.address) as channel:
        ch_grpc.ChannelServiceStub(channel).DeclareChannel(
            ch.DeclareChannelRequest(channel_id="c", locked_window_ms=HOUR)
        )
        sd_grpc.ScheduleDayServiceStub(channel).StoreScheduleDay(
            sd.StoreScheduleDayRequest(schedule_day=schedule_day("c", date_of(T0 + DAY)))
        )
        window = ew_grpc.ExecutionWindowServiceStub(channel)
        assert window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id="c",
                range_start_utc_ms=T0 + DAY,
                range_end_utc_ms=T0 + 2 * DAY,
                entries=day_of_entries(T0 + DAY),
            )
        ).ok
        clk_grpc.ClockServiceStub(channel).AdvanceTime(clk.AdvanceTimeRequest(delta_ms=DAY))
        result = window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id="c",
                range_start_utc_ms=T0 + DAY,
                range_end_utc_ms=T0 + DAY + 30 * MINUTE,
                entries=[entry("breaking", T0 + DAY, T0 + DAY + 30 * MINUTE)],
                operator_override=True,
                reason_code="BREAKING_NEWS",
            )
        )
        assert result.ok, result
    server.proc.kill()  # SIGKILL right after the acknowledgement
    server.proc.wait()
    restarted = Served(data_dir, port, "--clock", "manual", "--start-utc-ms", str(T0 + DAY))
    try:
        with grpc.insecure_channel(restarted.address) as channel:
            snap = ew_grpc.ExecutionWindowServiceStub(channel).ReadWindowSnapshot(
                ew.ReadWindowSnapshotRequest(
                    channel_id="c", start_utc_ms=T0 + DAY, end_utc_ms=T0 + DAY + HOUR
                )
            )
            assert [e.block_id for e in snap.entries] == ["breaking", "d1"]
            assert snap.entries[0].override_record_id == result.override_record_id
            assert snap.channel_generation_id == 2
            record = (
                audit_grpc.AuditServiceStub(channel)
                .GetOverrideRecord(audit.GetOverrideRecordRequest(id=result.override_record_id))
                .record
            )
            assert record.reason_code == "BREAKING_NEWS" and record.resulting_generation_id == 2
            # Generations continue after a restart; they never start over.
            next_publish = ew_grpc.ExecutionWindowServiceStub(channel).PublishAtomicReplace(
                ew.PublishAtomicReplaceRequest(
                    channel_id="c",
                    range_start_utc_ms=T0 + DAY + 23 * HOUR,
                    range_end_utc_ms=T0 + 2 * DAY,
                    entries=day_of_entries(T0 + DAY, "n")[46:],
                )
            )
            assert next_publish.ok and next_publish.published_generation_id == 3
        assert restarted.stop(signal.SIGTERM) == 0
        events = [e.get("event") for e in restarted.log_events()]
        assert "shutting_down" in events and "stopped" in events
    finally:
        if restarted.proc.poll() is None:
            restarted.proc.kill()


def test_the_manual_clock_never_moves_backwards_across_a_restart(served: tuple[Served, Path, int]) -> None:
    server, data_dir, port = served
    with grpc.insecure_channel(server.address) as channel:
        clk_grpc.ClockServiceStub(channel).AdvanceTime(clk.AdvanceTimeRequest(delta_ms=3 * HOUR))
    server.proc.kill()
    server.proc.wait()
    restarted = Served(data_dir, port, "--clock", "manual", "--start-utc-ms", str(T0))
    try:
        with grpc.insecure_channel(restarted.address) as channel:
            now = clk_grpc.ClockServiceStub(channel).GetTime(clk.GetTimeRequest()).now_utc_ms
        assert now == T0 + 3 * HOUR
        assert any(e.get("event") == "manual_clock_resumes" for e in restarted.log_events())
    finally:
        restarted.stop()


def test_sigint_lets_an_open_watch_end_with_unavailable_and_exits_cleanly(
    served: tuple[Served, Path, int],
) -> None:
    server, _, _ = served
    with grpc.insecure_channel(server.address) as channel:
        ch_grpc.ChannelServiceStub(channel).DeclareChannel(
            ch.DeclareChannelRequest(channel_id="w", locked_window_ms=HOUR)
        )
        stream = ew_grpc.ExecutionWindowServiceStub(channel).WatchWindow(
            ew.WatchWindowRequest(channel_id="w")
        )
        first = next(stream)
        assert first.snapshot.complete
        server.proc.send_signal(signal.SIGINT)
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert server.proc.wait(timeout=30) == 0


def test_a_non_loopback_address_without_auth_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "playlog"), "serve", "--data-dir", str(tmp_path), "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--insecure" in result.stderr


def test_the_system_clock_refuses_clock_service_calls(tmp_path: Path) -> None:
    server = Served(tmp_path / "data", free_port())
    try:
        with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
            clk_grpc.ClockServiceStub(channel).AdvanceTime(clk.AdvanceTimeRequest(delta_ms=1))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "--clock manual" in (info.value.details() or "")  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_the_served_system_clock_never_starts_before_the_instant_it_last_acted_on(tmp_path: Path) -> None:
    """A host clock stepped back (here: the data directory last acted a day
    ahead of it) holds now still, across the restart, instead of reopening air."""
    from playlog.clock import host_clock_utc_ms
    from playlog.store.sqlite import SqliteStore

    data = tmp_path / "data"
    acted = host_clock_utc_ms() + DAY
    store = SqliteStore(data)
    with store.write() as w:
        w.note_acted_at(acted)
    store.close()
    served = Served(data, free_port())  # the system clock
    try:
        grpcurl(
            served.address,
            "playlog.v1.ChannelService/DeclareChannel",
            {"channel_id": "c", "locked_window_ms": HOUR},
        )
        snap = grpcurl(
            served.address,
            "playlog.v1.ExecutionWindowService/ReadWindowSnapshot",
            {"channel_id": "c", "start_utc_ms": acted, "end_utc_ms": acted + HOUR},
        )
        assert int(str(snap["now_utc_ms"])) == acted  # held, not the host's earlier time
        assert int(str(snap["locked_until_utc_ms"])) == acted + HOUR
    finally:
        assert served.stop() == 0
    events = served.log_events()
    behind = [e for e in events if e["event"] == "clock_behind"]
    assert len(behind) == 1 and behind[0]["now_utc_ms"] == acted
    serving = next(e for e in events if e["event"] == "serving")
    assert serving["now_utc_ms"] == acted
