"""The SQL of the guide (SPEC section 14), shared by both stores: a channel's
guide metadata, and the authoritative ScheduleDays of a range of dates with
their versions (a day's id: a regenerated or overridden day is a new row).
A mixin of store.sql.SqlView, in its dialect (SQLite syntax, translated for
PostgreSQL by its view)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from playlog.domain.model import ChannelMetadata, ScheduleDay


class GuideSql:
    """The host view provides `_q`, `_in_list`, `_list`, and the day row
    columns and conversion of its schedule_days reads."""

    _day_columns: str = ""
    _day_from_row: Callable[[Sequence[Any]], ScheduleDay]

    def _q(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    def _in_list(self, param: str) -> str:
        raise NotImplementedError

    def _list(self, values: Iterable[str]) -> Any:
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------

    def authoritative_days_between(
        self, channel_id: str, first_date: str, last_date: str
    ) -> list[ScheduleDay]:
        """The channel's authoritative days dated first_date ..= last_date
        (YYYY-MM-DD compares as text), by date."""
        rows = self._q(
            f"SELECT {self._day_columns} FROM schedule_days WHERE channel_id = :c AND is_authoritative = 1 "
            "AND programming_day_date >= :a AND programming_day_date <= :b ORDER BY programming_day_date",
            {"c": channel_id, "a": first_date, "b": last_date},
        ).fetchall()
        return [self._day_from_row(r) for r in rows]

    def day_versions_between(
        self, channel_ids: Sequence[str], first_date: str, last_date: str
    ) -> dict[str, tuple[str, ...]]:
        """Per channel, the ids of its authoritative days dated first_date ..=
        last_date, by date: what a guide of those dates was derived from."""
        if not channel_ids:
            return {}
        rows = self._q(
            "SELECT channel_id, id FROM schedule_days WHERE is_authoritative = 1 "
            f"AND channel_id {self._in_list('c')} AND programming_day_date >= :a "
            "AND programming_day_date <= :b ORDER BY channel_id, programming_day_date",
            {"c": self._list(channel_ids), "a": first_date, "b": last_date},
        ).fetchall()
        out: dict[str, list[str]] = {}
        for channel_id, day_id in rows:
            out.setdefault(channel_id, []).append(day_id)
        return {c: tuple(ids) for c, ids in out.items()}

    # -- writes -----------------------------------------------------------------------

    def update_channel_metadata(self, channel_id: str, metadata: ChannelMetadata) -> None:
        m = metadata
        self._q(
            "UPDATE channels SET display_name = ?, guide_number = ?, icon_url = ?, stream_url = ?, "
            "guide_id = ? WHERE channel_id = ?",
            (m.display_name, m.guide_number, m.icon_url, m.stream_url, m.guide_id, channel_id),
        )
