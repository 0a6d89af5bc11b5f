"""A broadcast day aired by both example engines (clients/cpp, clients/node)
against the real server (SPEC section 12): acknowledgements, a NACK, as-run
with a cut on air, a server restart mid-day, and reconciliation.

`playlog serve --clock manual` runs as a subprocess with auth: each client is
an engine principal of its own (the engine id is the authenticated principal),
the test is the operator's desk. The clock moves in steps; every step is
waited for in both clients' output (their PROGRESS line at the new now, then
their as-run acknowledged by the server), never with sleeps.

The server restart loses an answer on purpose: each client talks to the
server through a TCP relay of the test's (LossyRelay) that, once armed,
stops passing the server's bytes back on the connection that carried a
report naming block h12, so the report is stored but its answer never
arrives; the server is then SIGKILLed and restarted, and the client's retry
of the same event ids must come back as `duplicates`, stored once.

Planted discrepancies, and only these, must come out of ReconcileAsRun:
- block h05: both clients are told not to report it (--skip-as-run): MISSING_AS_RUN;
- block h07: the Node engine reports it started 5 s late (--late-start): START_OFF;
- block h15: a third engine reports, through the Python stub, the wrong asset
  for its first segment: CONTENT_MISMATCH.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from playlog.v1 import (
    channel_service_pb2,
    channel_service_pb2_grpc,
    clock_service_pb2,
    clock_service_pb2_grpc,
    engine_service_pb2,
    engine_service_pb2_grpc,
    schedule_day_service_pb2,
    schedule_day_service_pb2_grpc,
)
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import types_pb2 as pb
from tests.builders import DAY, HOUR, MINUTE, T0, blocks, date_of, entry, schedule_day
from tests.test_auth import Principal, write_auth_file
from tests.test_engine_clients import (  # noqa: F401  (clients_built, processes: fixtures)
    CHANNEL,
    TIMEOUT,
    ClientProcess,
    Line,
    ServerProcess,
    clients_built,
    free_port,
    processes,
)

LOCK_MS = 30 * MINUTE
TOKENS = {
    "desk": "desk-token",
    "engine-cpp": "cpp-token",
    "engine-node": "node-token",
    "engine-bench": "bench-token",
}
NACK_ASSET = "asset://h20-bad/"
LATE_MS = 5_000


class Desk:
    """The operator's calls, with the operator's token."""

    def __init__(self, port: int, token: str) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.md = (("authorization", f"Bearer {token}"),)
        self.window = ew_grpc.ExecutionWindowServiceStub(self.channel)
        self.clock = clock_service_pb2_grpc.ClockServiceStub(self.channel)
        self.engines = engine_service_pb2_grpc.EngineServiceStub(self.channel)
        self.channels = channel_service_pb2_grpc.ChannelServiceStub(self.channel)
        self.days = schedule_day_service_pb2_grpc.ScheduleDayServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def set_time(self, now: int) -> None:
        self.clock.SetTime(clock_service_pb2.SetTimeRequest(now_utc_ms=now), metadata=self.md, timeout=10)

    def publish(
        self, start: int, end: int, entries: list[pb.ExecutionEntry], *, override: bool = False
    ) -> int:
        result = self.window.PublishAtomicReplace(
            ew.PublishAtomicReplaceRequest(
                channel_id=CHANNEL,
                range_start_utc_ms=start,
                range_end_utc_ms=end,
                entries=entries,
                operator_override=override,
                reason_code="BREAKING_NEWS" if override else "",
            ),
            metadata=self.md,
            timeout=10,
        )
        assert result.ok, result
        return int(result.published_generation_id)

    def entries(self, start: int, end: int) -> list[pb.ExecutionEntry]:
        snap = self.window.ReadWindowSnapshot(
            ew.ReadWindowSnapshotRequest(channel_id=CHANNEL, start_utc_ms=start, end_utc_ms=end),
            metadata=self.md,
            timeout=10,
        )
        return list(snap.entries)

    def as_run(self, start: int, end: int) -> list[engine_service_pb2.AsRunRecord]:
        out: list[engine_service_pb2.AsRunRecord] = []
        token = ""
        while True:
            page = self.engines.ListAsRun(
                engine_service_pb2.ListAsRunRequest(
                    channel_id=CHANNEL, start_utc_ms=start, end_utc_ms=end, page_size=1000, page_token=token
                ),
                metadata=self.md,
                timeout=10,
            )
            out.extend(page.records)
            token = page.next_page_token
            if not token:
                return out


class LossyRelay:
    """A TCP relay from a port of its own to the server's. Once armed with a
    marker, the first client bytes containing it freeze the way back on that
    connection: the request reaches the server, its answer (and anything after
    it on that connection) never reaches the client, as on a network that
    loses answers. Other and later connections are relayed whole."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.marker = b""
        self.froze = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def arm(self, marker: bytes) -> None:
        with self._lock:
            self.marker = marker

    def stop(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the server is down: the client sees the connection fail
                continue
            with self._lock:
                self._sockets += [client, upstream]
            frozen = threading.Event()
            threading.Thread(target=self._pump, args=(client, upstream, frozen, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, frozen, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, frozen: threading.Event, outbound: bool) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                if outbound:
                    with self._lock:
                        if self.marker and self.marker in tail + data:
                            self.marker = b""
                            frozen.set()  # before the request goes on: no answer can slip back
                            self.froze.set()
                    tail = data[-64:]
                elif frozen.is_set():
                    continue  # lost
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _start_client(name: str, prefix: list[str], port: int, tmp_path: Path, *extra: str) -> ClientProcess:
    return ClientProcess.start(
        name,
        [
            *prefix,
            "--target",
            f"127.0.0.1:{port}",
            "--channel",
            CHANNEL,
            "--token",
            TOKENS[f"engine-{name}"],
            "--engine-id",
            name,
            "--progress-interval-ms",
            "200",
            "--max-backoff-ms",
            "500",
            "--nack-asset",
            NACK_ASSET,
            "--skip-as-run",
            "h05",
            *extra,
        ],
        tmp_path,
    )


def _produced(c: ClientProcess) -> list[Line]:
    return [line for line in c.snapshot() if line.kind == "ASRUN"]


def _all_sent(c: ClientProcess) -> None:
    """Waits until the server has answered every as-run the client produced."""

    def done(lines: list[Line]) -> bool | None:
        produced = sum(1 for line in lines if line.kind == "ASRUN")
        sent = sum(int(line.fields["events"]) for line in lines if line.kind == "ASRUN_SENT")
        return True if sent == produced else None

    try:
        c.output.wait_for(done, TIMEOUT, f"{c.name}: every as-run answered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{c.dump()}") from None


def _at(clients: list[ClientProcess], desk: Desk, now: int) -> None:
    """Moves the clock; returns once both engines have seen it and reported
    what aired up to it."""
    desk.set_time(now)
    for c in clients:
        c.wait_for(lambda line: line.kind == "PROGRESS" and line.fields["now"] == str(now), f"now={now}")
    for c in clients:
        _all_sent(c)


def test_two_engines_air_a_day_acknowledge_nack_report_and_reconcile(
    clients_built: dict[str, list[str]],  # noqa: F811
    tmp_path: Path,
    processes: list[Any],  # noqa: F811
) -> None:
    auth = write_auth_file(
        tmp_path / "auth.toml",
        [
            Principal("desk", ["operator"], token=TOKENS["desk"]),
            Principal("engine-cpp", ["engine"], token=TOKENS["engine-cpp"]),
            Principal("engine-node", ["engine"], token=TOKENS["engine-node"]),
            Principal("engine-bench", ["engine"], token=TOKENS["engine-bench"]),
        ],
    )
    server = ServerProcess(tmp_path / "data", tmp_path)
    processes.append(server)
    port = free_port()
    start = T0 - 2 * HOUR
    server.start(port, start, extra=["--auth-file", str(auth)])
    desk = Desk(port, TOKENS["desk"])
    try:
        desk.channels.DeclareChannel(
            channel_service_pb2.DeclareChannelRequest(channel_id=CHANNEL, locked_window_ms=LOCK_MS),
            metadata=desk.md,
            timeout=10,
        )
        for day in (T0, T0 + DAY):
            stored = desk.days.StoreScheduleDay(
                schedule_day_service_pb2.StoreScheduleDayRequest(
                    schedule_day=schedule_day(CHANNEL, date_of(day))
                ),
                metadata=desk.md,
                timeout=10,
            )
            assert stored.ok, stored

        # The day: 24 hourly blocks h00..h23 (two 30-minute segments each),
        # published in two generations before air.
        day = blocks(T0, 24, HOUR, prefix="h")
        for e, i in zip(day, range(24), strict=True):
            e.block_id = f"h{i:02d}"
            for k, seg in enumerate(e.segments):
                seg.segment_id = f"h{i:02d}-s{k}"
                seg.asset_uri = f"asset://h{i:02d}/{k}"
        assert desk.publish(T0, T0 + 12 * HOUR, day[:12]) == 1
        assert desk.publish(T0 + 12 * HOUR, T0 + DAY, day[12:]) == 2

        relays = {name: LossyRelay(port) for name in ("cpp", "node")}
        processes.extend(relays.values())
        cpp = _start_client("cpp", clients_built["cpp"], relays["cpp"].port, tmp_path)
        node = _start_client(
            "node", clients_built["node"], relays["node"].port, tmp_path, "--late-start", f"h07={LATE_MS}"
        )
        clients = [cpp, node]
        processes.extend(clients)
        for c in clients:
            c.wait_for(
                lambda line: line.text.startswith("ACKED generation=2 accepted=1 "), "generation 2 acked"
            )

        # The day airs, hour by hour.
        for hour in range(0, 4):
            _at(clients, desk, T0 + hour * HOUR)

        # A NACK: generation 3 names an asset the engines cannot load; they
        # keep their window and say so. Generation 4 fixes it before it airs.
        bad = entry("h20-bad", T0 + 20 * HOUR, T0 + 21 * HOUR)
        assert bad.segments[0].asset_uri.startswith(NACK_ASSET)
        assert desk.publish(T0 + 20 * HOUR, T0 + 21 * HOUR, [bad]) == 3
        for c in clients:
            c.wait_for(lambda line: line.kind == "NACK" and line.fields["generation"] == "3", "the NACK")
            c.wait_for(lambda line: line.text.startswith("ACKED generation=3 accepted=0 "), "the NACK stored")
        assert not [
            line for c in clients for line in c.snapshot() if line.text.startswith("REPLACED generation=3 ")
        ]
        fixed = entry("h20b", T0 + 20 * HOUR, T0 + 21 * HOUR)
        assert desk.publish(T0 + 20 * HOUR, T0 + 21 * HOUR, [fixed]) == 4
        for c in clients:
            c.wait_for(
                lambda line: line.text.startswith("ACKED generation=4 accepted=1 "), "generation 4 acked"
            )

        for hour in range(4, 10):
            _at(clients, desk, T0 + hour * HOUR)

        # h09 is on air at 09:20; the operator cuts it at 09:40 for breaking
        # news: h09 keeps [09:00, 09:40) (its second segment shortened), the
        # news fills [09:40, 10:00).
        _at(clients, desk, T0 + 9 * HOUR + 20 * MINUTE)
        cut_at = T0 + 9 * HOUR + 40 * MINUTE
        assert (
            desk.publish(cut_at, T0 + 10 * HOUR, [entry("news", cut_at, T0 + 10 * HOUR)], override=True) == 5
        )
        for c in clients:
            c.wait_for(lambda line: line.text.startswith("ACKED generation=5 accepted=1 "), "the cut acked")
        _at(clients, desk, T0 + 10 * HOUR)
        for c in clients:
            cut_short = [line for line in _produced(c) if line.fields["status"] == "CUT_SHORT"]
            assert [
                (x.fields["block"], x.fields["segment"], x.fields["end"], x.fields["generation"])
                for x in cut_short
            ] == [("h09", "h09-s1", str(cut_at), "5")], c.dump()

        for hour in range(11, 13):
            _at(clients, desk, T0 + hour * HOUR)

        # Mid-day: at 13:00 each engine reports h12; the report is stored but
        # its answer is lost (the relays), then the server dies hard and comes
        # back on the same store. The engines resume, and retry what had no
        # answer with the same event ids.
        for relay in relays.values():
            relay.arm(b"/h12/")
        desk.set_time(T0 + 13 * HOUR)
        for name, relay in relays.items():
            assert relay.froze.wait(TIMEOUT), f"{name} sent no report naming h12"
        deadline = time.monotonic() + TIMEOUT
        while {r.engine_id for r in desk.as_run(T0 + 12 * HOUR, T0 + 13 * HOUR)} != {
            "engine-cpp",
            "engine-node",
        }:
            assert time.monotonic() < deadline, "the reports naming h12 were not stored"
            time.sleep(0.05)  # polling the server's store, through the desk's own connection
        for c in clients:
            assert not [
                line for line in c.snapshot() if line.kind == "ASRUN_SENT" and "duplicates=0" not in line.text
            ]
        desk.close()
        server.stop(signal.SIGKILL)
        server.start(port, T0 + 13 * HOUR, extra=["--auth-file", str(auth)])
        desk = Desk(port, TOKENS["desk"])
        for hour in range(14, 25):
            _at(clients, desk, T0 + hour * HOUR)
        day_end = T0 + DAY

        # -- acknowledgements and NACKs, as ListEngines shows them
        engines = desk.engines.ListEngines(
            engine_service_pb2.ListEnginesRequest(channel_id=CHANNEL), metadata=desk.md, timeout=10
        )
        assert engines.channel_generation_id == 5
        status = {e.engine_id: e for e in engines.engines}
        assert set(status) == {"engine-cpp", "engine-node"}, engines
        for name in ("engine-cpp", "engine-node"):
            s = status[name]
            assert s.applied_generation_id == 5, s
            assert s.generations_behind == 0, s
            assert s.last_nack_generation_id == 3, s
            assert NACK_ASSET in s.last_nack_detail, s
            assert s.last_as_run_ended_utc_ms == day_end, s

        # -- as-run: what each engine printed, stored once
        records = desk.as_run(T0, day_end)
        for name, c in (("cpp", cpp), ("node", node)):
            produced = [line.fields["event_id"] for line in _produced(c)]
            assert len(produced) == len(set(produced)), c.dump()
            stored = [r.event.event_id for r in records if r.engine_id == f"engine-{name}"]
            assert Counter(stored) == Counter(produced), c.dump()
            assert all(r.traced for r in records), records
            sent = [line for line in c.snapshot() if line.kind == "ASRUN_SENT"]
            assert sum(int(x.fields["stored"]) for x in sent) + sum(
                int(x.fields["duplicates"]) for x in sent
            ) == sum(int(x.fields["events"]) for x in sent), c.dump()
            # The retry of the report whose answer was lost: duplicates, and
            # only those h12 events (stored before the kill) can be.
            h12 = {line.fields["event_id"] for line in _produced(c) if line.fields["block"] == "h12"}
            duplicates = sum(int(x.fields["duplicates"]) for x in sent)
            assert 1 <= duplicates <= len(h12) == 2, c.dump()
            assert [line for line in c.snapshot() if line.kind == "REPORT_RETRY"], c.dump()
            assert {line.fields["block"] for line in c.snapshot() if line.kind == "ASRUN_SKIP"} == {"h05"}
            # Every block of the day was reported by segment, but h05; h20
            # as the fix (h20b) of generation 4, never the refused h20-bad.
            blocks_reported = {line.fields["block"] for line in _produced(c)}
            expected_blocks = {e.block_id for e in desk.entries(T0, day_end)} - {"h05"}
            assert blocks_reported == expected_blocks, c.dump()
            assert "h20-bad" not in blocks_reported
            assert not [line for line in c.snapshot() if line.kind in ("REPORT_REFUSED", "REPORTS_OFF")], (
                c.dump()
            )

        # -- a planted content mismatch, reported directly by a third engine
        h15 = next(e for e in desk.entries(T0 + 15 * HOUR, T0 + 16 * HOUR) if e.block_id == "h15")
        wrong = engine_service_pb2.AsRunEvent(
            event_id="bench/h15/0",
            block_id="h15",
            generation_id=h15.generation_id,
            segment_id="h15-s0",
            asset_uri="asset://wrong/0",
            started_utc_ms=h15.start_utc_ms,
            ended_utc_ms=h15.start_utc_ms + 30 * MINUTE,
            status=engine_service_pb2.AS_RUN_STATUS_AIRED,
        )
        bench = (("authorization", f"Bearer {TOKENS['engine-bench']}"),)
        report = desk.engines.ReportAsRun(
            engine_service_pb2.ReportAsRunRequest(channel_id=CHANNEL, events=[wrong]),
            metadata=bench,
            timeout=10,
        )
        assert report.ok and report.stored == 1, report

        # -- reconciliation: exactly what was planted
        rec = desk.engines.ReconcileAsRun(
            engine_service_pb2.ReconcileAsRunRequest(channel_id=CHANNEL, start_utc_ms=T0, end_utc_ms=day_end),
            metadata=desk.md,
            timeout=10,
        )
        found = sorted(
            (engine_service_pb2.DiscrepancyKind.Name(d.kind), d.block_id, d.engine_id, d.event_id)
            for d in rec.discrepancies
        )
        late_id = next(
            line.fields["event_id"]
            for line in _produced(node)
            if line.fields["block"] == "h07" and line.fields["segment"] == "h07-s0"
        )
        assert found == sorted(
            [
                ("DISCREPANCY_KIND_MISSING_AS_RUN", "h05", "", ""),
                ("DISCREPANCY_KIND_START_OFF", "h07", "engine-node", late_id),
                ("DISCREPANCY_KIND_CONTENT_MISMATCH", "h15", "engine-bench", "bench/h15/0"),
            ]
        ), rec
        start_off = next(d for d in rec.discrepancies if d.block_id == "h07")
        assert start_off.actual_utc_ms - start_off.expected_utc_ms == LATE_MS, start_off
        assert rec.blocks_due == len(desk.entries(T0, day_end)), rec
    finally:
        desk.close()
