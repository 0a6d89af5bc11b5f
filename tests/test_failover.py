"""Failover of the example playout-engine clients (clients/cpp, clients/node)
between replicas (SPEC section 10: "an engine that loses its replica resumes on
another with nothing missed or repeated").

Two `playlog serve` replicas run as subprocesses on one fresh PostgreSQL
database, on the manual clock (which lives in the database, so both tell the
same time). A client given both addresses follows replica A; A is SIGKILLed
between publishes; the client must resume on B from its last applied
generation (WatchWindow's after_generation_id), so its output shows every
generation exactly once, in order, with no second (reset) snapshot, and its
final window equals B's ReadWindowSnapshot. Its acknowledgements
(EngineService) fail over the same way: B stores them.

The C++ client is given the addresses as one comma-separated --target, the
Node one as repeated --server flags: both forms of the list are exercised.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from playlog.v1 import engine_service_pb2, engine_service_pb2_grpc
from tests.builders import HOUR, MINUTE, T0, blocks, date_of, entry
from tests.postgres import fresh_postgres_database
from tests.test_engine_clients import (  # noqa: F401  (clients_built, processes: fixtures)
    CHANNEL,
    LOCK_MS,
    TIMEOUT,
    ClientProcess,
    Line,
    ServerProcess,
    check_chain,
    clients_built,
    follow_argv,
    free_port,
    processes,
)


def _replica(tmp_path: Path, name: str, url: str, now: int) -> Replica:
    """A replica on the shared database (its data dir holds nothing of the store)."""
    (tmp_path / name).mkdir()
    server = Replica(tmp_path / name / "data", tmp_path / name)
    server.start(free_port(), now, extra=["--database-url", url])
    return server


class Replica(ServerProcess):
    def applied_generations(self) -> dict[str, int]:
        """ListEngines: each engine's acknowledged generation (no auth: the
        one local principal)."""
        stub = engine_service_pb2_grpc.EngineServiceStub(self._ch())
        engines = stub.ListEngines(engine_service_pb2.ListEnginesRequest(channel_id=CHANNEL), timeout=10)
        return {e.engine_id: int(e.applied_generation_id) for e in engines.engines}


def _address_args(client: str, addresses: list[str]) -> list[str]:
    if client == "cpp":
        return ["--target", ",".join(addresses)]
    return [arg for address in addresses for arg in ("--server", address)]


@pytest.mark.parametrize("client", ["cpp", "node"])
def test_client_fails_over_to_the_next_replica_missing_and_repeating_nothing(
    client: str,
    clients_built: dict[str, list[str]],  # noqa: F811
    tmp_path: Path,
    processes: list[Any],  # noqa: F811
) -> None:
    now = T0 - 2 * HOUR  # locked until T0 - 1h: the day ahead is flexible
    with fresh_postgres_database() as url:
        a = _replica(tmp_path, "a", url, now)
        processes.append(a)
        b = _replica(tmp_path, "b", url, now)
        processes.append(b)
        addr_a, addr_b = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"

        a.declare(CHANNEL, LOCK_MS)
        a.store_day(CHANNEL, date_of(T0))
        assert a.published(T0, T0 + 6 * HOUR, blocks(T0, 12, 30 * MINUTE, prefix="a")) == 1

        c = ClientProcess.start(
            client,
            follow_argv(
                clients_built[client], _address_args(client, [addr_a, addr_b]), "--exit-after-generation", "7"
            ),
            tmp_path,
        )
        processes.append(c)
        subscribed = c.wait_for(lambda line: line.kind == "SUBSCRIBE", "the first subscription")
        assert subscribed.fields["target"] == addr_a, c.dump()
        c.wait_for(lambda line: line.kind == "SNAPSHOT" and line.fields["complete"] == "1", "the snapshot")

        # Two publishes through A, followed live from A.
        assert (
            a.published(T0 + 6 * HOUR, T0 + 7 * HOUR, blocks(T0 + 6 * HOUR, 2, 30 * MINUTE, prefix="b")) == 2
        )
        assert a.published(T0 + 2 * HOUR, T0 + 3 * HOUR, [entry("c0", T0 + 2 * HOUR, T0 + 3 * HOUR)]) == 3
        c.wait_generation(3)

        # A dies without a word; B takes publishes at once, before the client
        # is back: they must be replayed to it after generation 3.
        a.stop(signal.SIGKILL)
        assert (
            b.published(T0 + 7 * HOUR, T0 + 8 * HOUR, blocks(T0 + 7 * HOUR, 2, 30 * MINUTE, prefix="d")) == 4
        )
        assert b.published(T0 + 4 * HOUR, T0 + 5 * HOUR, [entry("e0", T0 + 4 * HOUR, T0 + 5 * HOUR)]) == 5
        c.wait_generation(5)

        # Then live from B: a publish, and the clock moving on (b's progress).
        assert b.published(T0 + 8 * HOUR, T0 + 9 * HOUR, [entry("f0", T0 + 8 * HOUR, T0 + 9 * HOUR)]) == 6
        c.wait_generation(6)
        # The acknowledgements failed over too: B stored the one of 6 (A is dead).
        c.wait_for(
            lambda line: line.text.startswith("ACKED generation=6 accepted=1 "), "6 acknowledged via B"
        )
        assert b.applied_generations() == {"local": 6}
        now = T0 + 30 * MINUTE
        b.set_time(now)
        c.wait_for(lambda line: line.text == f"ONAIR now=a1 next=a2 at={now}", "the clock moving, via B")
        assert b.published(T0 + 9 * HOUR, T0 + 10 * HOUR, [entry("g0", T0 + 9 * HOUR, T0 + 10 * HOUR)]) == 7

        c.wait_for(lambda line: line.text == "EXIT reason=generation", "the exit")
        assert c.proc.wait(timeout=TIMEOUT) == 0, c.dump()

        # Every generation once, in order, each naming the one before it; one
        # snapshot only (the one at the start, not a reset after the failover).
        check_chain(c, 1, [2, 3, 4, 5, 6, 7])
        lines = c.snapshot()
        out = c.dump()
        three = _index(lines, lambda line: line.text.startswith("REPLACED generation=3 "))
        four = _index(lines, lambda line: line.text.startswith("REPLACED generation=4 "))
        assert [line.fields["code"] for line in lines[three:four] if line.kind == "DISCONNECT"] == [
            "UNAVAILABLE"
        ], out
        # Each attempt after the kill resumed after 3; the one that got
        # generation 4 was on B.
        attempts = [line for line in lines[three:four] if line.kind == "RECONNECT"]
        assert attempts, out
        assert {r.fields["after_generation"] for r in attempts} == {"3"}, out
        assert attempts[0].fields["target"] == addr_b, out
        assert attempts[-1].fields["target"] == addr_b, out
        # And no attempt after that: B kept the stream to the end.
        assert not [line for line in lines[four:] if line.kind in ("RECONNECT", "DISCONNECT")], out

        # One stderr line per attempt, naming the address tried and why.
        stderr = c.stderr_path.read_text().splitlines()
        explained = [t for t in stderr if "subscribing to" in t]
        assert len(explained) == len(attempts), out
        assert f"subscribing to {addr_b} after generation 3" in explained[0], out
        assert f"{addr_a} ended the stream: UNAVAILABLE" in explained[0], out

        # The window held is B's.
        expected = b.window_block_ids(now, T0 + 48 * HOUR)
        assert expected == "a1 a2 a3 c0 a6 a7 e0 a10 a11 b0 b1 d0 d1 f0 g0".split()
        window = c.wait_for(lambda line: line.kind == "WINDOW", "the window")
        assert window.fields == {
            "generation": "7",
            "entries": str(len(expected)),
            "blocks": ",".join(expected),
        }, out


def _index(lines: list[Line], predicate: Any) -> int:
    return next(i for i, line in enumerate(lines) if predicate(line))
