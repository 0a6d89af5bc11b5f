from playlog.v1 import execution_window_service_pb2 as ew
from tests.builders import HOUR, T0, day_of_entries
from tests.conftest import Running


async def test_publish_a_day_in_the_flexible_future_and_read_it_back(running: Running) -> None:
    await running.declare("ch1", HOUR)
    start = T0 + 2 * HOUR
    await running.store_days("ch1", start, start + 24 * HOUR - 1)
    entries = day_of_entries(start)
    result = await running.stubs.window.PublishAtomicReplace(
        ew.PublishAtomicReplaceRequest(
            channel_id="ch1", range_start_utc_ms=start, range_end_utc_ms=start + 24 * HOUR, entries=entries
        )
    )
    assert result.ok, result
    assert result.published_generation_id == 1
    snap = await running.stubs.window.ReadWindowSnapshot(
        ew.ReadWindowSnapshotRequest(channel_id="ch1", start_utc_ms=start, end_utc_ms=start + 24 * HOUR)
    )
    assert [e.block_id for e in snap.entries] == [e.block_id for e in entries]
    assert {e.generation_id for e in snap.entries} == {1}
