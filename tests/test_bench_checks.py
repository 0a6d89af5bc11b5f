"""The benchmark's own judgements: the soak's per-event checks (what counts
as a silent gap, a duplicate, a reset) and the summary's met / not met. A
bench that miscounts reports goals it did not measure, so these are tested
without a server (the measurements themselves run in `make bench` and
`make soak`, never in the test suite)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from playlog.v1 import types_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import benchlib
import soak


def replaced(generation: int, previous: int, entry_generation: int | None = None) -> pb.WindowEvent:
    g = generation if entry_generation is None else entry_generation
    return pb.WindowEvent(
        replaced=pb.ReplacedEvent(
            generation_id=generation,
            previous_generation_id=previous,
            entries=[pb.ExecutionEntry(block_id="b1", generation_id=g)],
        )
    )


def snapshot(generation: int, *, reset: bool = False, complete: bool = True) -> pb.WindowEvent:
    return pb.WindowEvent(
        snapshot=pb.SnapshotEvent(channel_generation_id=generation, reset=reset, complete=complete)
    )


def progress(generation: int) -> pb.WindowEvent:
    return pb.WindowEvent(progress=pb.ProgressEvent(channel_generation_id=generation))


def watched(*events: pb.WindowEvent) -> tuple[soak.Sub, list[str]]:
    sub = soak.Sub(0, "c", "steady")
    kinds = [kind for event in events for kind, _ in sub.check(event)]
    return sub, kinds


def test_a_chained_stream_is_clean() -> None:
    sub, kinds = watched(snapshot(5), replaced(6, 5), progress(6), replaced(7, 6))
    assert kinds == []
    assert (sub.last, sub.counts.deliveries, sub.counts.snapshots, sub.counts.progress) == (7, 2, 1, 1)
    assert sub.counts.silent_gaps == sub.counts.duplicates == sub.counts.resets == 0


def test_a_missing_generation_is_a_silent_gap() -> None:
    sub, kinds = watched(snapshot(5), replaced(6, 5), replaced(8, 7))
    assert kinds == ["silent gap"]
    assert sub.counts.silent_gaps == 1
    assert sub.last == 8  # and the chain goes on from what it got


def test_a_repeated_generation_is_a_duplicate_and_not_delivered() -> None:
    sub, kinds = watched(snapshot(5), replaced(6, 5), replaced(6, 5), replaced(5, 4))
    assert kinds == ["duplicate", "duplicate"]
    assert (sub.counts.duplicates, sub.counts.deliveries, sub.last) == (2, 1, 6)


def test_a_reset_snapshot_in_parts_legitimately_jumps() -> None:
    sub, kinds = watched(
        snapshot(5),
        replaced(6, 5),
        snapshot(20, reset=True, complete=False),
        snapshot(20, complete=True),  # the last part need not repeat the flag
        replaced(21, 20),
    )
    assert kinds == []
    assert (sub.counts.resets, sub.counts.silent_gaps, sub.last) == (1, 0, 21)


def test_a_snapshot_that_jumps_without_reset_after_the_first_is_a_silent_gap() -> None:
    _, kinds = watched(snapshot(5), snapshot(9))
    assert kinds == ["snapshot jump without reset"]
    _, kinds = watched(snapshot(5), snapshot(5))  # the same generation again: nothing lost
    assert kinds == []


def test_a_snapshot_going_back_is_a_duplicate() -> None:
    sub, kinds = watched(snapshot(5), replaced(6, 5), snapshot(4, reset=True))
    assert kinds == ["snapshot behind"]
    assert (sub.counts.duplicates, sub.last) == (1, 6)


def test_entries_and_progress_must_name_the_right_generation() -> None:
    sub, kinds = watched(snapshot(5), replaced(6, 5, entry_generation=5), progress(7))
    assert kinds == ["entry with another generation", "progress names another generation"]
    assert (sub.counts.bad_entries, sub.counts.progress_mismatch) == (1, 1)


def row(
    key: str,
    *,
    rate: float | None = None,
    p50_ms: float | None = 1.0,
    cpu_us_per_op: float | None = None,
    extra: dict[str, float] | None = None,
    side: str = "playlog",
) -> benchlib.Result:
    return benchlib.Result(
        key,
        "",
        "",
        rate,
        "ops/s",
        p50_ms,
        2.0,
        10,
        None,
        dict(extra or {}),
        side=side,
        cpu_us_per_op=cpu_us_per_op,
    )


@pytest.mark.parametrize(
    ("playlog", "etcd", "met", "reached"),
    [(150.0, 100.0, True, True), (120.0, 100.0, True, False), (99.0, 100.0, False, False)],
)
def test_a_throughput_goal_is_met_at_or_above_its_bound(
    playlog: float, etcd: float, met: bool, reached: bool
) -> None:
    goal = benchlib.Goal("publishes/s", "p", "e", "rate", "etcd", ">= 1.0", ">= 1.5")
    (line,) = benchlib.summary([row("p", rate=playlog), row("e", rate=etcd, side="etcd")], [goal])
    assert line["ratio"] == pytest.approx(playlog / etcd)
    assert (line["met"], line["reached"]) == (met, reached)


def test_a_cpu_goal_is_met_at_or_below_its_bound() -> None:
    goal = benchlib.Goal("CPU per publish", "p", "n", "cpu", "no-op RPC", "<= 3.0")
    rows = [row("p", cpu_us_per_op=900.0), row("n", cpu_us_per_op=300.0)]
    assert benchlib.summary(rows, [goal])[0]["met"] is True
    rows[0].cpu_us_per_op = 901.0
    assert benchlib.summary(rows, [goal])[0]["met"] is False


def test_an_absolute_cpu_goal_counts_the_auxiliary_processes_in_ms() -> None:
    goal = benchlib.Goal("CPU per publish", "r", None, "cpu_total", must="<= 2.0")
    (line,) = benchlib.summary([row("r", cpu_us_per_op=1500.0, extra={"aux_cpu_us_per_op": 400.0})], [goal])
    assert line["compared"] == pytest.approx(1.9) and line["met"] is True and line["ratio"] is None
    (line,) = benchlib.summary([row("r", cpu_us_per_op=1500.0, extra={"aux_cpu_us_per_op": 600.0})], [goal])
    assert line["met"] is False


def test_a_goal_whose_other_side_was_skipped_is_not_measured() -> None:
    goal = benchlib.Goal("publishes/s", "p", "e", "rate", "etcd", ">= 1.0")
    skipped = benchlib.skipped_result("e", "etcd Txn", "", "skipped: --no-etcd")
    (line,) = benchlib.summary([row("p", rate=100.0), skipped], [goal])
    assert line["met"] is None and line["other_value"] == "skipped"
    assert "not measured" in benchlib.render_summary([line])[-1]


def test_the_answer_goal_reads_the_publish_calls_own_latency() -> None:
    goal = benchlib.Goal("answer p50", "w", "q", "answer_p50_ms", "no subscribers", "<= 2.0")
    rows = [row("w", extra={"answer_p50_ms": 30.0}), row("q", p50_ms=None, extra={"answer_p50_ms": 10.0})]
    (line,) = benchlib.summary(rows, [goal])
    assert line["ratio"] == pytest.approx(3.0) and line["met"] is False


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert benchlib.percentile(values, 50) == 50
    assert benchlib.percentile(values, 99) == 99
    assert benchlib.percentile([7], 99) == 7
