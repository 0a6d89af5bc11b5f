"""The SQL of engines' evidence (SPEC section 12), shared by both stores:
acknowledgements, NACKs and as-run. A mixin of store.sql.SqlView, written in
the same dialect (SQLite syntax, translated for PostgreSQL by its view)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from playlog.domain.as_run import (
    Acknowledgement,
    AsRunEvent,
    AsRunRecord,
    AsRunStatus,
    EngineStatus,
    EntryVersion,
)

_AS_RUN_COLUMNS = (
    "event_id, block_id, generation_id, segment_id, asset_uri, started_utc_ms, ended_utc_ms, "
    "status, detail, engine_id, channel_id, received_utc_ms, traced"
)
_ENGINE_COLUMNS = (
    "engine_id, channel_id, applied_generation_id, last_acknowledged_utc_ms, "
    "last_as_run_received_utc_ms, last_as_run_ended_utc_ms, last_nack_generation_id, "
    "last_nack_utc_ms, last_nack_detail"
)
# LIMIT for "all" in both dialects (SQLite has no LIMIT ALL).
_NO_LIMIT = 2**62


def _as_run(row: Sequence[Any]) -> AsRunRecord:
    return AsRunRecord(
        AsRunEvent(
            event_id=row[0],
            block_id=row[1],
            generation_id=row[2],
            segment_id=row[3],
            asset_uri=row[4],
            started_utc_ms=row[5],
            ended_utc_ms=row[6],
            status=AsRunStatus(row[7]),
            detail=row[8],
        ),
        engine_id=row[9],
        channel_id=row[10],
        received_utc_ms=row[11],
        traced=bool(row[12]),
    )


class EngineEvidenceSql:
    """Reads and writes of acknowledgements and as-run; the host view
    provides `_q` (one statement), `_qmany`, `_in_list` and `_list`."""

    def _q(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    def _qmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _in_list(self, param: str) -> str:
        raise NotImplementedError

    def _list(self, values: Iterable[str]) -> Any:
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------

    def as_run_by_event_ids(self, engine_id: str, event_ids: Sequence[str]) -> dict[str, AsRunRecord]:
        """This engine's stored events among event_ids (the idempotency key)."""
        if not event_ids:
            return {}
        rows = self._q(
            f"SELECT {_AS_RUN_COLUMNS} FROM as_run WHERE engine_id = :g AND event_id {self._in_list('ids')}",
            {"g": engine_id, "ids": self._list(event_ids)},
        ).fetchall()
        return {r[0]: _as_run(r) for r in rows}

    def traced_versions(
        self, channel_id: str, block_ids: Iterable[str]
    ) -> dict[tuple[str, int], EntryVersion]:
        """Every stored version of these blocks (current or superseded), with
        when it was superseded (the superseding publish's commit)."""
        wanted = sorted(set(block_ids))
        if not wanted:
            return {}
        rows = self._q(
            "SELECT e.block_id, e.generation_id, e.start_utc_ms, e.end_utc_ms, "
            "COALESCE(e.superseded_by_generation, 0), COALESCE(p.committed_utc_ms, 0) "
            "FROM entries e LEFT JOIN publishes p ON p.channel_id = e.channel_id "
            "AND p.generation_id = e.superseded_by_generation "
            f"WHERE e.channel_id = :c AND e.block_id {self._in_list('b')}",
            {"c": channel_id, "b": self._list(wanted)},
        ).fetchall()
        return {(r[0], r[1]): EntryVersion(*r) for r in rows}

    def as_run_overlapping(
        self,
        channel_id: str,
        start_utc_ms: int,
        end_utc_ms: int,
        engine_id: str = "",
        after: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, AsRunRecord]]:
        """(seq, record) of events overlapping [start, end), oldest start
        first, after the (started_utc_ms, seq) cursor. The index is searched
        from start minus the channel's longest event, so the cost follows the
        events returned, not the events stored."""
        row = self._q("SELECT longest_ms FROM as_run_spans WHERE channel_id = ?", (channel_id,)).fetchone()
        if row is None:
            return []
        lower = start_utc_ms - int(row[0])
        cursor_start, cursor_seq = after if after is not None else (lower - 1, 0)
        rows = self._q(
            f"SELECT seq, {_AS_RUN_COLUMNS} FROM as_run WHERE channel_id = :c "
            "AND started_utc_ms >= :lo AND started_utc_ms < :e AND ended_utc_ms > :s "
            "AND (started_utc_ms > :cs OR (started_utc_ms = :cs AND seq > :cq)) "
            "AND (:g = '' OR engine_id = :g) "
            "ORDER BY started_utc_ms, seq LIMIT :n",
            {
                "c": channel_id,
                "lo": lower,
                "s": start_utc_ms,
                "e": end_utc_ms,
                "cs": cursor_start,
                "cq": cursor_seq,
                "g": engine_id,
                "n": _NO_LIMIT if limit is None else limit,
            },
        ).fetchall()
        return [(int(r[0]), _as_run(r[1:])) for r in rows]

    def engine_statuses(self, channel_id: str) -> list[EngineStatus]:
        """Every engine that acknowledged or reported on the channel ('' : on
        every channel), with how long it has been behind."""
        rows = self._q(
            f"SELECT {_ENGINE_COLUMNS}, c.current_generation_id, "
            "COALESCE((SELECT p.committed_utc_ms FROM publishes p WHERE p.channel_id = s.channel_id "
            "  AND p.generation_id > s.applied_generation_id ORDER BY p.generation_id LIMIT 1), 0) "
            "FROM engine_status s JOIN channels c USING (channel_id) "
            f"{'WHERE s.channel_id = :c ' if channel_id else ''}ORDER BY s.channel_id, s.engine_id",
            {"c": channel_id},
        ).fetchall()
        out = []
        for r in rows:
            behind = r[9] > r[2]
            out.append(
                EngineStatus(
                    engine_id=r[0],
                    channel_id=r[1],
                    applied_generation_id=r[2],
                    channel_generation_id=r[9],
                    # Publishes pruned from the history: the oldest kept one
                    # above the applied generation is the best lower bound.
                    behind_since_utc_ms=int(r[10]) if behind else 0,
                    last_acknowledged_utc_ms=r[3],
                    last_as_run_received_utc_ms=r[4],
                    last_as_run_ended_utc_ms=r[5],
                    last_nack_generation_id=r[6],
                    last_nack_utc_ms=r[7],
                    last_nack_detail=r[8],
                )
            )
        return out

    def runway_ends(self) -> dict[str, int]:
        """Each channel's end of its last current entry (0: no entries)."""
        rows = self._q(
            "SELECT c.channel_id, COALESCE((SELECT e.end_utc_ms FROM entries e "
            "  WHERE e.channel_id = c.channel_id AND e.superseded_by_generation IS NULL "
            "  ORDER BY e.start_utc_ms DESC LIMIT 1), 0) FROM channels c"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- writes -----------------------------------------------------------------------

    def _touch_engine(self, channel_id: str, engine_id: str) -> None:
        self._q(
            "INSERT INTO engine_status (channel_id, engine_id) VALUES (?, ?) "
            "ON CONFLICT (channel_id, engine_id) DO NOTHING",
            (channel_id, engine_id),
        )

    def insert_acknowledgement(self, ack: Acknowledgement) -> None:
        """The engine's latest acknowledgement; a NACK is also kept for ever."""
        self._touch_engine(ack.channel_id, ack.engine_id)
        if ack.accepted:
            # The applied generation only moves forward: an acknowledgement that
            # arrives late (a retry after a reconnect, a slower replica) never
            # makes the engine look behind.
            self._q(
                "UPDATE engine_status SET applied_generation_id = CASE WHEN applied_generation_id < :g "
                "THEN :g ELSE applied_generation_id END, last_acknowledged_utc_ms = :t "
                "WHERE channel_id = :c AND engine_id = :e",
                {
                    "g": ack.generation_id,
                    "t": ack.acknowledged_utc_ms,
                    "c": ack.channel_id,
                    "e": ack.engine_id,
                },
            )
            return
        self._q(
            "INSERT INTO engine_nacks (channel_id, engine_id, generation_id, detail, nacked_utc_ms, "
            "channel_generation_id) VALUES (?, ?, ?, ?, ?, ?)",
            (
                ack.channel_id,
                ack.engine_id,
                ack.generation_id,
                ack.detail,
                ack.acknowledged_utc_ms,
                ack.channel_generation_id,
            ),
        )
        self._q(
            "UPDATE engine_status SET last_acknowledged_utc_ms = :t, last_nack_generation_id = :g, "
            "last_nack_utc_ms = :t, last_nack_detail = :d WHERE channel_id = :c AND engine_id = :e",
            {
                "g": ack.generation_id,
                "t": ack.acknowledged_utc_ms,
                "d": ack.detail,
                "c": ack.channel_id,
                "e": ack.engine_id,
            },
        )

    def insert_as_run(self, records: Sequence[AsRunRecord]) -> None:
        if not records:
            return
        self._qmany(
            f"INSERT INTO as_run ({_AS_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.event.event_id,
                    r.event.block_id,
                    r.event.generation_id,
                    r.event.segment_id,
                    r.event.asset_uri,
                    r.event.started_utc_ms,
                    r.event.ended_utc_ms,
                    r.event.status.value if r.event.status else "",
                    r.event.detail,
                    r.engine_id,
                    r.channel_id,
                    r.received_utc_ms,
                    int(r.traced),
                )
                for r in records
            ],
        )
        first = records[0]
        longest = max(r.event.ended_utc_ms - r.event.started_utc_ms for r in records)
        self._q(
            "INSERT INTO as_run_spans (channel_id, longest_ms) VALUES (:c, :n) "
            "ON CONFLICT (channel_id) DO UPDATE SET longest_ms = :n WHERE as_run_spans.longest_ms < :n",
            {"c": first.channel_id, "n": longest},
        )
        self._touch_engine(first.channel_id, first.engine_id)
        self._q(
            "UPDATE engine_status SET last_as_run_received_utc_ms = :t, "
            "last_as_run_ended_utc_ms = CASE WHEN last_as_run_ended_utc_ms > :end "
            "  THEN last_as_run_ended_utc_ms ELSE :end END "
            "WHERE channel_id = :c AND engine_id = :e",
            {
                "t": first.received_utc_ms,
                "end": max(r.event.ended_utc_ms for r in records),
                "c": first.channel_id,
                "e": first.engine_id,
            },
        )
