"""The seeds' audit queries, run on the database itself.

Each query finds one kind of violation; a clean store returns nothing. They
are plain SQL shared by the SQLite store and `playlog verify`, and written in
the subset PostgreSQL understands as well.
"""

from __future__ import annotations

from typing import Any, Protocol

from playlog.store.base import IntegrityFinding


class _Query(Protocol):
    def __call__(self, sql: str, params: Any = ...) -> Any: ...


_CH = "(:c = '' OR {alias}channel_id = :c)"

QUERIES: list[tuple[str, str]] = [
    (
        "OVERRIDE_WITHOUT_RECORD",
        f"""SELECT e.channel_id, 'override entry ' || e.block_id || ' (generation '
               || e.generation_id || ') names override record '
               || COALESCE(e.override_record_id, '(none)') || ', which does not exist'
           FROM entries e LEFT JOIN override_records r ON r.id = e.override_record_id
           WHERE e.is_operator_override = 1 AND r.id IS NULL AND {_CH.format(alias="e.")}""",
    ),
    (
        "OVERRIDE_WITHOUT_RECORD",
        f"""SELECT p.channel_id, 'override publish of generation ' || p.generation_id
               || ' names override record ' || COALESCE(p.override_record_id, '(none)')
               || ', which does not exist'
           FROM publishes p LEFT JOIN override_records r ON r.id = p.override_record_id
           WHERE p.operator_override = 1 AND r.id IS NULL AND {_CH.format(alias="p.")}""",
    ),
    (
        "OVERRIDE_WITHOUT_RECORD",
        f"""SELECT d.channel_id, 'manual ScheduleDay ' || d.id || ' for ' || d.programming_day_date
               || ' names override record ' || COALESCE(d.override_record_id, '(none)')
               || ', which does not exist'
           FROM schedule_days d LEFT JOIN override_records r ON r.id = d.override_record_id
           WHERE d.is_manual_override = 1 AND r.id IS NULL AND {_CH.format(alias="d.")}""",
    ),
    (
        # An entry older than a publish whose range it lies in should have been
        # replaced by that publish: the range holds two generations.
        "MIXED_GENERATIONS",
        f"""SELECT e.channel_id, 'publish of generation ' || p.generation_id || ' over ['
               || p.range_start_utc_ms || ', ' || p.range_end_utc_ms || ') still holds block '
               || e.block_id || ' of generation ' || e.generation_id
           FROM entries e JOIN publishes p ON p.channel_id = e.channel_id
               AND p.generation_id > e.generation_id
               AND e.start_utc_ms < p.range_end_utc_ms AND e.end_utc_ms > p.range_start_utc_ms
           WHERE e.superseded_by_generation IS NULL AND {_CH.format(alias="e.")}""",
    ),
    (
        "MIXED_GENERATIONS",
        f"""SELECT e.channel_id, 'block ' || e.block_id || ' carries generation ' || e.generation_id
               || ' but lies outside that publish''s range ['
               || p.range_start_utc_ms || ', ' || p.range_end_utc_ms || ')'
           FROM entries e JOIN publishes p ON p.channel_id = e.channel_id
               AND p.generation_id = e.generation_id
           WHERE (e.start_utc_ms < p.range_start_utc_ms OR e.end_utc_ms > p.range_end_utc_ms)
               AND NOT (e.block_id = p.cut_block_id AND e.end_utc_ms = p.range_start_utc_ms)
               AND {_CH.format(alias="e.")}""",
    ),
    (
        # A cut keeps the aired part of the entry on air under the cut's
        # generation: that entry ends exactly where the publish's range starts.
        "MIXED_GENERATIONS",
        f"""SELECT p.channel_id, 'publish of generation ' || p.generation_id || ' cut block '
               || p.cut_block_id || ' at ' || p.range_start_utc_ms
               || ', but no entry of that generation ends there'
           FROM publishes p
           WHERE p.cut_block_id IS NOT NULL AND {_CH.format(alias="p.")}
               AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.channel_id = p.channel_id
                   AND e.generation_id = p.generation_id AND e.block_id = p.cut_block_id
                   AND e.end_utc_ms = p.range_start_utc_ms)""",
    ),
    (
        "GENERATION_BEHIND",
        f"""SELECT c.channel_id, 'channel generation ' || c.current_generation_id
               || ' is below generation ' || MAX(e.generation_id) || ' of its entries'
           FROM channels c JOIN entries e ON e.channel_id = c.channel_id
           WHERE {_CH.format(alias="c.")}
           GROUP BY c.channel_id, c.current_generation_id
           HAVING MAX(e.generation_id) > c.current_generation_id""",
    ),
    (
        "GAP",
        f"""SELECT channel_id, 'gap [' || prev_end || ', ' || start_utc_ms || ') before block '
               || block_id
           FROM (SELECT channel_id, block_id, start_utc_ms,
                        LAG(end_utc_ms) OVER (PARTITION BY channel_id ORDER BY start_utc_ms, end_utc_ms)
                            AS prev_end
                 FROM entries WHERE superseded_by_generation IS NULL AND {_CH.format(alias="")}) s
           WHERE prev_end IS NOT NULL AND start_utc_ms > prev_end""",
    ),
    (
        "OVERLAP",
        f"""SELECT channel_id, 'block ' || block_id || ' starts at ' || start_utc_ms
               || ', before block ' || prev_block || ' ends (' || prev_end || ')'
           FROM (SELECT channel_id, block_id, start_utc_ms,
                        LAG(end_utc_ms) OVER (PARTITION BY channel_id ORDER BY start_utc_ms, end_utc_ms)
                            AS prev_end,
                        LAG(block_id) OVER (PARTITION BY channel_id ORDER BY start_utc_ms, end_utc_ms)
                            AS prev_block
                 FROM entries WHERE superseded_by_generation IS NULL AND {_CH.format(alias="")}) s
           WHERE prev_end IS NOT NULL AND start_utc_ms < prev_end""",
    ),
    (
        "ENTRY_WITHOUT_SCHEDULE_DAY",
        f"""SELECT e.channel_id, 'block ' || e.block_id || ' names programming day '
               || e.programming_day_date || ', which has no ScheduleDay'
           FROM entries e
           WHERE e.superseded_by_generation IS NULL AND e.is_operator_override = 0
               AND {_CH.format(alias="e.")}
               AND NOT EXISTS (SELECT 1 FROM schedule_days d WHERE d.channel_id = e.channel_id
                   AND d.programming_day_date = e.programming_day_date AND d.is_authoritative = 1)""",
    ),
    (
        "DAY_WITHOUT_PLAN",
        f"""SELECT channel_id, 'ScheduleDay ' || id || ' for ' || programming_day_date
               || ' has no plan_id and is not a manual override'
           FROM schedule_days
           WHERE (plan_id IS NULL OR plan_id = '') AND is_manual_override = 0
               AND {_CH.format(alias="")}""",
    ),
    (
        "OVERRIDE_DAY_WITHOUT_SUPERSEDED",
        f"""SELECT d.channel_id, 'manual ScheduleDay ' || d.id || ' for ' || d.programming_day_date
               || ' supersedes ' || COALESCE(d.supersedes_id, '(nothing)')
               || ', which does not exist'
           FROM schedule_days d LEFT JOIN schedule_days s ON s.id = d.supersedes_id
           WHERE d.is_manual_override = 1 AND s.id IS NULL AND {_CH.format(alias="d.")}""",
    ),
    (
        # LAW-DERIVATION from what aired: as-run -> entry (block, generation).
        # An event that did trace may name a version pruned since (its
        # generation at or below the history floor): that is not a finding.
        "AS_RUN_UNTRACED",
        f"""SELECT a.channel_id, 'as-run event ' || a.event_id || ' of engine ' || a.engine_id
               || ' names block ' || a.block_id || ' of generation ' || a.generation_id
               || ', which no entry ever had'
           FROM as_run a JOIN channels c ON c.channel_id = a.channel_id
           WHERE {_CH.format(alias="a.")}
               AND (a.traced = 0 OR a.generation_id > c.history_floor_generation)
               AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.channel_id = a.channel_id
                   AND e.block_id = a.block_id AND e.generation_id = a.generation_id)""",
    ),
    (
        "DUPLICATE_SCHEDULE_DAY",
        f"""SELECT channel_id, COUNT(*) || ' authoritative ScheduleDays for ' || programming_day_date
           FROM schedule_days WHERE is_authoritative = 1 AND {_CH.format(alias="")}
           GROUP BY channel_id, programming_day_date HAVING COUNT(*) > 1""",
    ),
]


def run(query: _Query, channel_id: str) -> list[IntegrityFinding]:
    """Runs every audit query through `query(sql, params)` (a store view's)."""
    findings: list[IntegrityFinding] = []
    for kind, sql in QUERIES:
        for row in query(sql, {"c": channel_id}).fetchall():
            findings.append(IntegrityFinding(kind=kind, channel_id=row[0], detail=row[1]))
    return findings
