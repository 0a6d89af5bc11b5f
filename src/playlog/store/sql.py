"""The SQL behind both stores: one view class whose queries serve SQLite and
PostgreSQL alike, and the row <-> domain conversions."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from playlog import wire
from playlog.domain.model import (
    Channel,
    ChannelMetadata,
    Entry,
    OverrideLayer,
    OverrideRecord,
    PublishRecord,
    ScheduleDay,
    ScheduleSlot,
    Segment,
    SupersededEntry,
)
from playlog.domain.publish import PublishPlan
from playlog.events import emit
from playlog.store import integrity
from playlog.store.base import (
    FaultInjector,
    FaultStep,
    IntegrityFinding,
    OverrideRecordPersistError,
    StoredEntry,
    StoreError,
)
from playlog.store.engines_sql import EngineEvidenceSql
from playlog.store.guide_sql import GuideSql

# What checks and indexes need; the whole entry is its wire form, `payload`.
_SPAN_COLUMNS = (
    "channel_id, block_id, block_index, start_utc_ms, end_utc_ms, programming_day_date, "
    "is_operator_override, generation_id, override_record_id"
)
_STORED_COLUMNS = "start_utc_ms, end_utc_ms, generation_id, payload"
_CHANNEL_COLUMNS = (
    "channel_id, locked_window_ms, current_generation_id, "
    "display_name, guide_number, icon_url, stream_url, guide_id"
)
_INSERT_ENTRY = (
    "INSERT INTO entries (channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json, "
    "programming_day_date, transmission_log_ref, is_operator_override, generation_id, override_record_id, "
    "payload) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)"
)
_T = TypeVar("_T")
log = logging.getLogger("playlog.store")
_CURRENT = "channel_id = :c AND superseded_by_generation IS NULL"
_DAY_COLUMNS = (
    "id, channel_id, programming_day_date, plan_id, is_manual_override, supersedes_id, "
    "slots_json, resolved_utc_ms, is_authoritative, override_record_id"
)
_RECORD_COLUMNS = (
    "seq, id, layer, channel_id, target, reason_code, actor, actor_note, created_utc_ms, "
    "resulting_generation_id, superseded_json, superseded_schedule_day_id, "
    "previous_locked_window_ms, range_start_utc_ms, range_end_utc_ms, programming_day_date"
)


def _span(row: Sequence[Any]) -> Entry:
    """An entry's span and identity, for the checks (its segments are not read)."""
    return Entry(
        channel_id=row[0],
        block_id=row[1],
        block_index=row[2],
        start_utc_ms=row[3],
        end_utc_ms=row[4],
        segments=(),
        programming_day_date=row[5],
        is_operator_override=bool(row[6]),
        generation_id=row[7],
        override_record_id=row[8] or "",
    )


def _channel(row: Sequence[Any]) -> Channel:
    return Channel(row[0], row[1], row[2], ChannelMetadata(*row[3:8]))


def _stored(row: Sequence[Any]) -> StoredEntry:
    payload = row[3]
    return StoredEntry(row[0], row[1], row[2], payload if type(payload) is bytes else bytes(payload))


def legacy_entry(row: Sequence[Any]) -> Entry:
    """An entry of schema version 3 or older, from its columns and segments_json
    (`LEGACY_ENTRY_COLUMNS`): migration 4 encodes it once as its payload."""
    return Entry(
        channel_id=row[0],
        block_id=row[1],
        block_index=row[2],
        start_utc_ms=row[3],
        end_utc_ms=row[4],
        segments=tuple(Segment(*s) for s in json.loads(row[5])),
        programming_day_date=row[6],
        transmission_log_ref=row[7],
        is_operator_override=bool(row[8]),
        generation_id=row[9],
        override_record_id=row[10] or "",
    )


LEGACY_ENTRY_COLUMNS = (
    "channel_id, block_id, block_index, start_utc_ms, end_utc_ms, segments_json, "
    "programming_day_date, transmission_log_ref, is_operator_override, generation_id, "
    "override_record_id"
)


def backfill_payloads(execute: Callable[..., Any]) -> None:
    """Migration 4's data step: each older entry's wire form, encoded once."""
    rows = execute(f"SELECT id, {LEGACY_ENTRY_COLUMNS} FROM entries WHERE payload IS NULL").fetchall()
    for row in rows:
        execute(
            "UPDATE entries SET payload = ? WHERE id = ?", (wire.encode_entry(legacy_entry(row[1:])), row[0])
        )


def _day(row: Sequence[Any]) -> ScheduleDay:
    return ScheduleDay(
        id=row[0],
        channel_id=row[1],
        programming_day_date=row[2],
        plan_id=row[3] or "",
        is_manual_override=bool(row[4]),
        supersedes_id=row[5] or "",
        slots=tuple(ScheduleSlot(*s) for s in json.loads(row[6])),
        resolved_utc_ms=row[7],
        is_authoritative=bool(row[8]),
        override_record_id=row[9] or "",
    )


def _record(row: Sequence[Any]) -> OverrideRecord:
    return OverrideRecord(
        id=row[1],
        layer=OverrideLayer(row[2]),
        channel_id=row[3],
        target=row[4],
        reason_code=row[5],
        actor=row[6],
        actor_note=row[7],
        created_utc_ms=row[8],
        resulting_generation_id=row[9],
        superseded_entries=tuple(SupersededEntry(*s) for s in json.loads(row[10])),
        superseded_schedule_day_id=row[11],
        previous_locked_window_ms=row[12],
        range_start_utc_ms=row[13],
        range_end_utc_ms=row[14],
        programming_day_date=row[15],
    )


class SqlView(EngineEvidenceSql, GuideSql):
    """Read (and, for the writer, write) access inside one transaction.

    The SQL is shared by both dialects: written for SQLite (`?` and `:name`
    parameters, flags as 0/1 integers) and translated for PostgreSQL by its
    subclass; the few real differences are the methods under "dialect".
    """

    # Errors of the database driver that mean "the write failed".
    db_errors: tuple[type[Exception], ...] = ()
    # The current entries by block id. (SQLite's planner, given an IN over
    # json_each, prefers the index of every version of a block, which grows
    # with the history, over the partial index of current entries.)
    _current_by_block_id = "entries"
    # How store.guide_sql reads schedule_days rows.
    _day_columns = _DAY_COLUMNS
    _day_from_row = staticmethod(_day)

    def __init__(self, conn: Any, faults: FaultInjector) -> None:
        self._conn = conn
        self._faults = faults

    @property
    def conn(self) -> Any:
        return self._conn

    # -- dialect -------------------------------------------------------------

    def _q(self, sql: str, params: Any = ()) -> Any:
        return self._conn.execute(sql, params)

    def _qmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    def _in_list(self, param: str) -> str:
        """SQL for "is one of the list passed as parameter `param`"."""
        return f"IN (SELECT value FROM json_each(:{param}))"

    def _list(self, values: Iterable[str]) -> Any:
        return json.dumps(list(values))

    def _insert_entries(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows in _INSERT_ENTRY's column order."""
        self._qmany(_INSERT_ENTRY, rows)

    def _after_publish(self, plan: PublishPlan) -> None:
        """Runs last inside a publish's transaction."""

    # -- reads ---------------------------------------------------------------

    def get_channel(self, channel_id: str) -> Channel | None:
        row = self._q(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE channel_id = ?", (channel_id,)
        ).fetchone()
        return _channel(row) if row else None

    def list_channels(self) -> list[Channel]:
        rows = self._q(f"SELECT {_CHANNEL_COLUMNS} FROM channels ORDER BY channel_id").fetchall()
        return [_channel(r) for r in rows]

    def _overlapping(
        self, columns: str, channel_id: str, start_utc_ms: int, end_utc_ms: int, limit: int | None = None
    ) -> list[Any]:
        # Entries never overlap, so the first one overlapping the range is the
        # one with the latest start at or before start_utc_ms (or later ones):
        # the scan is bounded by the entries returned, not the entries stored.
        params: dict[str, Any] = {"c": channel_id, "s": start_utc_ms, "e": end_utc_ms}
        if limit is not None:
            params["n"] = limit
        rows: list[Any] = self._q(
            f"SELECT {columns} FROM entries WHERE {_CURRENT} "
            "AND start_utc_ms >= COALESCE((SELECT MAX(start_utc_ms) FROM entries "
            f"  WHERE {_CURRENT} AND start_utc_ms <= :s), :s) "
            "AND start_utc_ms < :e AND end_utc_ms > :s ORDER BY start_utc_ms"
            + (" LIMIT :n" if limit is not None else ""),
            params,
        ).fetchall()
        return rows

    def entry_spans_overlapping(self, channel_id: str, start_utc_ms: int, end_utc_ms: int) -> list[Entry]:
        return [_span(r) for r in self._overlapping(_SPAN_COLUMNS, channel_id, start_utc_ms, end_utc_ms)]

    def stored_overlapping(self, channel_id: str, start_utc_ms: int, end_utc_ms: int) -> list[StoredEntry]:
        return [_stored(r) for r in self._overlapping(_STORED_COLUMNS, channel_id, start_utc_ms, end_utc_ms)]

    def stored_overlapping_page(
        self, channel_id: str, start_utc_ms: int, end_utc_ms: int, after_start_utc_ms: int | None, limit: int
    ) -> list[StoredEntry]:
        """At most `limit` entries overlapping the range, by start: the first
        ones, or those starting after after_start_utc_ms (a later page)."""
        if after_start_utc_ms is None:
            rows = self._overlapping(_STORED_COLUMNS, channel_id, start_utc_ms, end_utc_ms, limit)
        else:
            rows = self._q(
                f"SELECT {_STORED_COLUMNS} FROM entries WHERE {_CURRENT} AND start_utc_ms > :a "
                "AND start_utc_ms < :e ORDER BY start_utc_ms LIMIT :n",
                {"c": channel_id, "a": after_start_utc_ms, "e": end_utc_ms, "n": limit},
            ).fetchall()
        return [_stored(r) for r in rows]

    def stored_ending_after(
        self, channel_id: str, at_utc_ms: int, after_start_utc_ms: int | None, limit: int
    ) -> list[StoredEntry]:
        """Entries ending after at_utc_ms, by start; paged by the last start seen."""
        if after_start_utc_ms is None:
            first = self.stored_entry_at(channel_id, at_utc_ms)
            lower = first.start_utc_ms if first else at_utc_ms
            rows = self._q(
                f"SELECT {_STORED_COLUMNS} FROM entries WHERE {_CURRENT} AND start_utc_ms >= :lo "
                "AND end_utc_ms > :t ORDER BY start_utc_ms LIMIT :n",
                {"c": channel_id, "lo": lower, "t": at_utc_ms, "n": limit},
            ).fetchall()
        else:
            rows = self._q(
                f"SELECT {_STORED_COLUMNS} FROM entries WHERE {_CURRENT} AND start_utc_ms > :lo "
                "ORDER BY start_utc_ms LIMIT :n",
                {"c": channel_id, "lo": after_start_utc_ms, "n": limit},
            ).fetchall()
        return [_stored(r) for r in rows]

    def _at(self, columns: str, channel_id: str, at_utc_ms: int) -> Any:
        """The current entry containing at_utc_ms; its end is the columns' second."""
        row = self._q(
            f"SELECT {columns} FROM entries WHERE {_CURRENT} AND start_utc_ms <= :t "
            "ORDER BY start_utc_ms DESC LIMIT 1",
            {"c": channel_id, "t": at_utc_ms},
        ).fetchone()
        return row

    def stored_entry_at(self, channel_id: str, at_utc_ms: int) -> StoredEntry | None:
        row = self._at(_STORED_COLUMNS, channel_id, at_utc_ms)
        return _stored(row) if row is not None and row[1] > at_utc_ms else None

    def entry_at(self, channel_id: str, at_utc_ms: int) -> Entry | None:
        """The whole entry containing at_utc_ms, segments included."""
        row = self._at("start_utc_ms, end_utc_ms, payload", channel_id, at_utc_ms)
        return wire.decode_entry(bytes(row[2])) if row is not None and row[1] > at_utc_ms else None

    def current_span(self, channel_id: str, block_id: str) -> Entry | None:
        row = self._q(
            f"SELECT {_SPAN_COLUMNS} FROM entries WHERE {_CURRENT} AND block_id = :b",
            {"c": channel_id, "b": block_id},
        ).fetchone()
        return _span(row) if row else None

    def left_neighbour(self, channel_id: str, at_utc_ms: int) -> Entry | None:
        row = self._q(
            f"SELECT {_SPAN_COLUMNS} FROM entries WHERE {_CURRENT} AND start_utc_ms < :t "
            "AND end_utc_ms <= :t ORDER BY start_utc_ms DESC LIMIT 1",
            {"c": channel_id, "t": at_utc_ms},
        ).fetchone()
        return _span(row) if row else None

    def right_neighbour(self, channel_id: str, at_utc_ms: int) -> Entry | None:
        row = self._q(
            f"SELECT {_SPAN_COLUMNS} FROM entries WHERE {_CURRENT} AND start_utc_ms >= :t "
            "ORDER BY start_utc_ms LIMIT 1",
            {"c": channel_id, "t": at_utc_ms},
        ).fetchone()
        return _span(row) if row else None

    def block_ids_in_use_outside(
        self, channel_id: str, block_ids: Sequence[str], start_utc_ms: int, end_utc_ms: int
    ) -> frozenset[str]:
        if not block_ids:
            return frozenset()
        rows = self._q(
            f"SELECT block_id FROM {self._current_by_block_id} WHERE {_CURRENT} "
            f"AND block_id {self._in_list('ids')} "
            "AND NOT (start_utc_ms < :e AND end_utc_ms > :s)",
            {
                "c": channel_id,
                "ids": self._list(block_ids),
                "s": start_utc_ms,
                "e": end_utc_ms,
            },
        ).fetchall()
        return frozenset(r[0] for r in rows)

    def dates_with_schedule_day(self, channel_id: str, dates: Iterable[str]) -> frozenset[str]:
        wanted = sorted(set(dates))
        if not wanted:
            return frozenset()
        rows = self._q(
            "SELECT programming_day_date FROM schedule_days WHERE channel_id = :c "
            f"AND is_authoritative = 1 AND programming_day_date {self._in_list('d')}",
            {"c": channel_id, "d": self._list(wanted)},
        ).fetchall()
        return frozenset(r[0] for r in rows)

    def get_override_record(self, record_id: str) -> OverrideRecord | None:
        row = self._q(f"SELECT {_RECORD_COLUMNS} FROM override_records WHERE id = ?", (record_id,)).fetchone()
        return _record(row) if row else None

    def list_override_records(
        self, channel_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, OverrideRecord]]:
        if channel_id:
            rows = self._q(
                f"SELECT {_RECORD_COLUMNS} FROM override_records WHERE channel_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (channel_id, after_seq, limit),
            ).fetchall()
        else:
            rows = self._q(
                f"SELECT {_RECORD_COLUMNS} FROM override_records WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [(r[0], _record(r)) for r in rows]

    def publishes_after(self, channel_id: str, after_generation_id: int, limit: int) -> list[PublishRecord]:
        rows = self._q(
            "SELECT channel_id, generation_id, previous_generation_id, range_start_utc_ms, "
            "range_end_utc_ms, reason_code, actor, operator_override, override_record_id, "
            "committed_utc_ms, cut_block_id FROM publishes WHERE channel_id = ? AND generation_id > ? "
            "ORDER BY generation_id LIMIT ?",
            (channel_id, after_generation_id, limit),
        ).fetchall()
        if not rows:
            return []
        # Every entry a publish wrote carries its generation: the entries of
        # all these publishes in one indexed range read, not one query each.
        by_generation: dict[int, list[bytes]] = {int(r[1]): [] for r in rows}
        for generation, payload in self._q(
            "SELECT generation_id, payload FROM entries WHERE channel_id = ? AND generation_id > ? "
            "AND generation_id <= ? ORDER BY generation_id, start_utc_ms",
            (channel_id, after_generation_id, rows[-1][1]),
        ):
            kept = by_generation.get(int(generation))
            if kept is not None:
                kept.append(bytes(payload))
        out = []
        for r in rows:
            out.append(
                PublishRecord(
                    channel_id=r[0],
                    generation_id=r[1],
                    previous_generation_id=r[2],
                    range_start_utc_ms=r[3],
                    range_end_utc_ms=r[4],
                    reason_code=r[5],
                    actor=r[6],
                    operator_override=bool(r[7]),
                    override_record_id=r[8] or "",
                    committed_utc_ms=r[9],
                    cut_block_id=r[10] or "",
                    payloads=tuple(by_generation[int(r[1])]),
                )
            )
        return out

    def history_floor(self, channel_id: str) -> int:
        row = self._q(
            "SELECT history_floor_generation FROM channels WHERE channel_id = ?", (channel_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def authoritative_day(self, channel_id: str, date: str) -> ScheduleDay | None:
        row = self._q(
            f"SELECT {_DAY_COLUMNS} FROM schedule_days WHERE channel_id = ? "
            "AND programming_day_date = ? AND is_authoritative = 1",
            (channel_id, date),
        ).fetchone()
        return _day(row) if row else None

    def schedule_day_history(self, channel_id: str, date: str) -> list[ScheduleDay]:
        rows = self._q(
            f"SELECT {_DAY_COLUMNS} FROM schedule_days WHERE channel_id = ? "
            "AND programming_day_date = ? ORDER BY seq DESC",
            (channel_id, date),
        ).fetchall()
        return [_day(r) for r in rows]

    def manual_clock_utc_ms(self) -> int | None:
        row = self._q("SELECT manual_now_utc_ms FROM clock_state WHERE id = 1").fetchone()
        return int(row[0]) if row else None

    def save_manual_clock_utc_ms(self, now_utc_ms: int) -> None:
        self._q(
            "INSERT INTO clock_state (id, manual_now_utc_ms) VALUES (1, :t) "
            "ON CONFLICT (id) DO UPDATE SET manual_now_utc_ms = excluded.manual_now_utc_ms",
            {"t": now_utc_ms},
        )

    def verify_integrity(self, channel_id: str) -> list[IntegrityFinding]:
        return integrity.run(self._q, channel_id)

    # -- writes (writer connection only) --------------------------------------

    def insert_override_record(self, record: OverrideRecord) -> None:
        try:
            self._faults.check(FaultStep.OVERRIDE_RECORD)
            self._q(
                "INSERT INTO override_records (id, layer, channel_id, target, reason_code, actor, "
                "actor_note, created_utc_ms, resulting_generation_id, superseded_json, "
                "superseded_schedule_day_id, previous_locked_window_ms, range_start_utc_ms, "
                "range_end_utc_ms, programming_day_date) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.layer.value,
                    record.channel_id,
                    record.target,
                    record.reason_code,
                    record.actor,
                    record.actor_note,
                    record.created_utc_ms,
                    record.resulting_generation_id,
                    json.dumps(
                        [
                            [s.block_id, s.generation_id, s.start_utc_ms, s.end_utc_ms]
                            for s in record.superseded_entries
                        ]
                    ),
                    record.superseded_schedule_day_id,
                    record.previous_locked_window_ms,
                    record.range_start_utc_ms,
                    record.range_end_utc_ms,
                    record.programming_day_date,
                ),
            )
        except Exception as exc:
            if isinstance(exc, (*self.db_errors, StoreError)):
                raise OverrideRecordPersistError(str(exc)) from exc
            raise

    def insert_channel(self, channel: Channel) -> None:
        self._faults.check(FaultStep.CHANNEL)
        m = channel.metadata
        self._q(
            f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (channel.channel_id, channel.locked_window_ms, channel.current_generation_id,
             m.display_name, m.guide_number, m.icon_url, m.stream_url, m.guide_id),
        )  # fmt: skip

    def update_channel_locked_window(self, channel_id: str, locked_window_ms: int) -> None:
        self._faults.check(FaultStep.CHANNEL)
        self._q(
            "UPDATE channels SET locked_window_ms = ? WHERE channel_id = ?",
            (locked_window_ms, channel_id),
        )

    def apply_publish(self, plan: PublishPlan) -> PublishRecord:
        c = plan.channel_id
        if plan.superseded:
            # The superseded entries are the current ones overlapping the range:
            # one run by start (entries never overlap), found by the index.
            self._q(
                "UPDATE entries SET superseded_by_generation = :g "
                f"WHERE {_CURRENT} AND start_utc_ms >= :first AND start_utc_ms <= :last",
                {
                    "c": c,
                    "g": plan.generation_id,
                    "first": plan.superseded[0].start_utc_ms,
                    "last": plan.superseded[-1].start_utc_ms,
                },
            )
        self._faults.check(FaultStep.ENTRIES)
        record_id = plan.override_record_id
        override = plan.operator_override
        rows: list[tuple[Any, ...]] = []
        payloads: list[bytes] = []
        if plan.cut is not None:
            cut = plan.cut
            payload = wire.encode_entry(cut)  # read from this channel: its channel_id is set
            payloads.append(payload)
            rows.append(
                (c, cut.block_id, cut.block_index, cut.start_utc_ms, cut.end_utc_ms, cut.programming_day_date,
                 cut.transmission_log_ref, 1, cut.generation_id, cut.override_record_id or None, payload)
            )  # fmt: skip
        # The server's fields, encoded once and appended to each entry's bytes.
        suffix = wire.stamp_suffix(c, plan.generation_id, override, record_id)
        for e in plan.new_entries:
            payload = (e.wire or wire.encode_entry(e)) + suffix
            payloads.append(payload)
            rows.append(
                (c, e.block_id, e.block_index, e.start_utc_ms, e.end_utc_ms, e.programming_day_date,
                 e.transmission_log_ref, int(override), plan.generation_id, record_id or None, payload)
            )  # fmt: skip
        self._insert_entries(rows)
        self._faults.check(FaultStep.PUBLISH_HISTORY)
        self._q(
            "INSERT INTO publishes (channel_id, generation_id, previous_generation_id, "
            "range_start_utc_ms, range_end_utc_ms, reason_code, actor, operator_override, "
            "override_record_id, committed_utc_ms, cut_block_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                c,
                plan.generation_id,
                plan.previous_generation_id,
                plan.range_start_utc_ms,
                plan.range_end_utc_ms,
                plan.reason_code,
                plan.actor,
                int(override),
                record_id or None,
                plan.committed_utc_ms,
                plan.cut_block_id or None,
            ),
        )
        self._q(
            "UPDATE channels SET current_generation_id = ?, history_publishes = history_publishes + 1 "
            "WHERE channel_id = ?",
            (plan.generation_id, c),
        )
        self._after_publish(plan)
        return PublishRecord(
            channel_id=c,
            generation_id=plan.generation_id,
            previous_generation_id=plan.previous_generation_id,
            range_start_utc_ms=plan.range_start_utc_ms,
            range_end_utc_ms=plan.range_end_utc_ms,
            reason_code=plan.reason_code,
            actor=plan.actor,
            operator_override=override,
            override_record_id=record_id,
            committed_utc_ms=plan.committed_utc_ms,
            cut_block_id=plan.cut_block_id,
            payloads=tuple(payloads),
        )

    def insert_schedule_day(self, day: ScheduleDay, superseded_id: str) -> None:
        if superseded_id:
            self._q("UPDATE schedule_days SET is_authoritative = 0 WHERE id = ?", (superseded_id,))
        self._faults.check(FaultStep.SCHEDULE_DAY)
        self._q(
            f"INSERT INTO schedule_days ({_DAY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                day.id,
                day.channel_id,
                day.programming_day_date,
                day.plan_id or None,
                int(day.is_manual_override),
                day.supersedes_id or None,
                json.dumps(
                    [[s.start_utc_ms, s.end_utc_ms, s.program_id, s.asset_uri, s.title] for s in day.slots]
                ),
                day.resolved_utc_ms,
                1,
                day.override_record_id or None,
            ),
        )

    def prune_history(self, channel_id: str, keep_publishes: int) -> None:
        """Forget replay history older than the channel's last keep_publishes
        publishes: a count of publishes, whatever their generation numbers.

        The floor becomes the oldest kept publish's previous generation: a
        resume from there or above replays, from below resets. Superseded
        entries only older publishes needed go too; current entries (and so
        the past) are never touched.
        """
        row = self._q("SELECT history_publishes FROM channels WHERE channel_id = ?", (channel_id,)).fetchone()
        if row is None or row[0] <= keep_publishes:
            return
        excess = int(row[0]) - keep_publishes
        oldest_kept = self._q(
            "SELECT generation_id, previous_generation_id FROM publishes WHERE channel_id = ? "
            "ORDER BY generation_id LIMIT 1 OFFSET ?",
            (channel_id, excess),
        ).fetchone()
        kept_generation, floor = int(oldest_kept[0]), int(oldest_kept[1])
        self._q(
            "DELETE FROM entries WHERE channel_id = ? AND superseded_by_generation < ?",
            (channel_id, kept_generation),
        )
        self._q(
            "DELETE FROM publishes WHERE channel_id = ? AND generation_id < ?", (channel_id, kept_generation)
        )
        self._q(
            "UPDATE channels SET history_floor_generation = ?, history_publishes = ? WHERE channel_id = ?",
            (floor, keep_publishes, channel_id),
        )

    def note_acted_at(self, now_utc_ms: int, channel_id: str = "") -> None:
        """Raises the clock's durable floor to now_utc_ms (never lowers it): on
        the channel's row for a write to a channel (writes to other channels
        never wait on it), else on the one shared row."""
        if channel_id:
            self._q(
                "UPDATE channels SET acted_utc_ms = :t WHERE channel_id = :c AND acted_utc_ms < :t",
                {"t": now_utc_ms, "c": channel_id},
            )
            return
        self._q(
            "UPDATE clock_floor SET acted_utc_ms = :t WHERE id = 1 AND acted_utc_ms < :t",
            {"t": now_utc_ms},
        )

    def clock_floor_utc_ms(self) -> int:
        row = self._q(
            "SELECT (SELECT acted_utc_ms FROM clock_floor WHERE id = 1), "
            "(SELECT MAX(acted_utc_ms) FROM channels)"
        ).fetchone()
        return max(int(row[0] or 0), int(row[1] or 0)) if row else 0


class _WriteJob:
    """One caller's write in a group commit: run by whichever caller leads
    the batch, its outcome handed back to the caller that submitted it."""

    __slots__ = ("after_commit", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Any], Any], after_commit: Callable[[Any], None] | None) -> None:
        self.fn = fn
        self.after_commit = after_commit
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class SqlStore:
    """What both stores share: a read runs one transaction on a reader
    connection (one consistent snapshot); a write runs one transaction on a
    writer connection, rolled back whole on any failure. Subclasses say where
    connections come from and how writes are scheduled (run_write)."""

    view_class: type[SqlView] = SqlView
    begin_read = "BEGIN"
    begin_write = "BEGIN"
    shared = False

    def __init__(self) -> None:
        self.faults = FaultInjector()
        self._closed = threading.Event()

    def _read_connection(self) -> AbstractContextManager[Any]:
        """A reader connection with its transaction begun."""
        raise NotImplementedError

    def _write_connection(self) -> AbstractContextManager[Any]:
        """A writer connection with its transaction begun."""
        raise NotImplementedError

    def _started_write(self, conn: Any, channel_id: str) -> Any:
        """Runs first in every write transaction; what it returns is handed to
        _commit."""
        return None

    def _commit(self, conn: Any, started: Any) -> None:
        conn.execute("COMMIT")

    def _store_error(self, exc: BaseException) -> BaseException:
        """The driver's error as a StoreError (or as it is)."""
        if isinstance(exc, self.view_class.db_errors):
            return StoreError(str(exc))
        return exc

    def _raise_translated(self, exc: BaseException) -> None:
        translated = self._store_error(exc)
        if translated is exc:
            raise exc
        raise translated from exc

    def _rollback(self, conn: Any, cause: BaseException) -> None:
        """Rolls back; a failing ROLLBACK (the connection is gone) is logged,
        and the error that made the write fail is the one that stands."""
        try:
            conn.execute("ROLLBACK")
        except self.view_class.db_errors as exc:
            emit(log, logging.WARNING, "rollback_failed", error=str(exc), cause=str(cause))

    @staticmethod
    def _tell(after_commit: Callable[[Any], None] | None, result: Any) -> None:
        """after_commit(result), once the write is durable; a listener's
        failure is not the write's."""
        if after_commit is None:
            return
        try:
            after_commit(result)
        except Exception as exc:
            emit(log, logging.ERROR, "after_commit_failed", exc_info=exc, error=repr(exc))

    @contextmanager
    def read(self) -> Iterator[SqlView]:
        try:
            with self._read_connection() as conn:
                try:
                    yield self.view_class(conn, self.faults)
                finally:
                    conn.execute("COMMIT")
        except BaseException as exc:
            self._raise_translated(exc)

    @contextmanager
    def write(self, channel_id: str = "") -> Iterator[SqlView]:
        """One write transaction of its own."""
        try:
            with self._write_connection() as conn:
                try:
                    started = self._started_write(conn, channel_id)
                    yield self.view_class(conn, self.faults)
                    self.faults.check(FaultStep.COMMIT)
                    self._commit(conn, started)
                except BaseException as exc:
                    self._rollback(conn, exc)
                    raise
        except BaseException as exc:
            self._raise_translated(exc)


class GroupCommitStore(SqlStore):
    """One writer connection whose write transactions are serialized by a
    lock, and a fixed set of reader connections (the embedded store).

    Writes submitted together are group-committed (`run_write`): the caller
    that finds the writer free leads a batch of every write waiting, runs each
    in its own savepoint of one transaction (so each is refused or accepted on
    its own, in the order they arrived), commits once (one fsync) and only
    then hands each caller its outcome. Callers arriving during that commit
    form the next batch.
    """

    # Most writes one transaction carries.
    max_batch = 64

    def __init__(self, writer: Any, readers: list[Any]) -> None:
        super().__init__()
        self._writer = writer
        self._write_lock = threading.Lock()
        self._all_readers = readers
        self._readers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for conn in readers:
            self._readers.put(conn)
        self._batching = threading.Condition()
        self._waiting: list[_WriteJob] = []
        self._leading = False
        # Tests: called with each batch's size before it commits.
        self.before_batch_commit: Callable[[int], None] | None = None

    @contextmanager
    def _read_connection(self) -> Iterator[Any]:
        conn = self._readers.get()
        try:
            conn.execute(self.begin_read)
            yield conn
        finally:
            self._readers.put(conn)

    @contextmanager
    def _write_connection(self) -> Iterator[Any]:
        with self._write_lock:
            if self._closed.is_set():
                raise StoreError("the store is closed")
            self._writer.execute(self.begin_write)
            yield self._writer

    def run_write(
        self, fn: Callable[[Any], _T], after_commit: Callable[[_T], None] | None = None, channel_id: str = ""
    ) -> _T:
        """Runs fn(view) in a write transaction, group-committed with the
        writes of other threads waiting at the same time; after_commit(result)
        runs after the commit, in commit order, before any caller returns."""
        job = _WriteJob(fn, after_commit)
        with self._batching:
            self._waiting.append(job)
            self._batching.notify_all()  # (tests wait for writers to queue)
            while not job.done and self._leading:
                self._batching.wait()
            if job.done:
                return self._outcome(job)  # type: ignore[no-any-return]
            self._leading = True
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        try:
            self._commit_batch(batch)
        finally:
            with self._batching:
                self._leading = False
                self._batching.notify_all()
        return self._outcome(job)  # type: ignore[no-any-return]

    @staticmethod
    def _outcome(job: _WriteJob) -> Any:
        if job.error is not None:
            raise job.error
        return job.result

    def _commit_batch(self, batch: list[_WriteJob]) -> None:
        try:
            with self.write() as view:
                conn = view.conn
                for i, job in enumerate(batch):
                    conn.execute(f"SAVEPOINT w{i}")
                    try:
                        job.result = job.fn(view)
                    except BaseException as exc:
                        # This write alone is undone; the others go on.
                        conn.execute(f"ROLLBACK TO w{i}")
                        translated = self._store_error(exc)
                        job.error = translated
                        if translated is not exc:
                            translated.__cause__ = exc
                    conn.execute(f"RELEASE w{i}")
                if self.before_batch_commit is not None:
                    self.before_batch_commit(len(batch))
        except BaseException as exc:
            # The commit failed: nothing of the batch exists.
            for job in batch:
                if job.error is None:
                    job.error = exc
                job.done = True
            if not isinstance(exc, Exception):
                raise
            return
        for job in batch:
            if job.error is None:
                self._tell(job.after_commit, job.result)
            job.done = True

    def _close_connections(self, before_writer_closes: Callable[[Any], None] | None = None) -> bool:
        """Closes every connection once; False if the store was closed already."""
        with self._write_lock:
            if self._closed.is_set():
                return False
            self._closed.set()
            for conn in self._all_readers:
                conn.close()
            if before_writer_closes is not None:
                before_writer_closes(self._writer)
            self._writer.close()
            return True
