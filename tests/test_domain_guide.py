"""The guide's derivation (SPEC section 14) as a plain function: examples of
each rule, and hypothesis properties for any window and days: programmes
never overlap, leave no gap where the window has none, cover exactly the
published span (and the planned slots beyond it), each traces to its entries
or its slot, and a later range gives the same programmes (identity)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from playlog.domain.guide import (
    DEFAULT_FILLER_TYPES,
    Programme,
    ProgrammeStatus,
    derive,
    is_filler_only,
    lookback_from,
    now_and_next,
    status_of,
)
from playlog.domain.model import Entry, ScheduleDay, ScheduleSlot, Segment

M = 60_000
H = 60 * M
T0 = 1_795_305_600_000  # 2026-11-22T00:00Z
DATE = "2026-11-22"


def seg(kind: str, ms: int, title: str = "") -> Segment:
    return Segment(f"s-{kind}-{title}", kind, f"asset://{title}", 0, ms, title)


def e(block: str, start: int, end: int, *segments: Segment, override: bool = False, gen: int = 1) -> Entry:
    segments = segments or (seg("program", end - start, block),)
    return Entry("ch", block, 0, start, end, segments, DATE, "", override, gen, "rec-1" if override else "")


def day(*slots: tuple[int, int, str], day_id: str = "day-1", date: str = DATE) -> ScheduleDay:
    return ScheduleDay(
        day_id, "ch", date, "plan", False, "",
        tuple(ScheduleSlot(a, b, f"prog-{t}", "", t) for a, b, t in slots), 0,
    )  # fmt: skip


def test_a_film_over_three_blocks_is_one_programme() -> None:
    d = day((T0, T0 + 90 * M, "The Film"), (T0 + 90 * M, T0 + 2 * H, "News"))
    entries = [e(f"film-{i}", T0 + i * 30 * M, T0 + (i + 1) * 30 * M) for i in range(3)]
    entries.append(e("news", T0 + 90 * M, T0 + 2 * H))
    got = derive(entries, [d], T0, T0 + 2 * H).programmes
    assert [(p.title, p.start_utc_ms, p.end_utc_ms) for p in got] == [
        ("The Film", T0, T0 + 90 * M),
        ("News", T0 + 90 * M, T0 + 2 * H),
    ]
    film = got[0]
    assert film.block_ids == ("film-0", "film-1", "film-2")
    assert (film.schedule_day_id, film.slot_index, film.program_id) == ("day-1", 0, "prog-The Film")


def test_filler_is_never_listed_and_a_filler_only_entry_joins_the_programme_before() -> None:
    d = day((T0, T0 + H, "Show"), (T0 + H, T0 + 2 * H, "Next Show"))
    entries = [
        # The programme's own filler segment is not a programme either.
        e("show", T0, T0 + 50 * M, seg("program", 45 * M, "Show part"), seg("filler", 5 * M, "logo loop")),
        # Made only of filler, and in the next slot's time: still the show's.
        e("pad", T0 + 50 * M, T0 + 70 * M, seg("bumper", 10 * M, "ident"), seg("padding", 10 * M, "")),
        e("next", T0 + 70 * M, T0 + 2 * H),
    ]
    got = derive(entries, [d], T0, T0 + 2 * H).programmes
    assert [(p.title, p.start_utc_ms, p.end_utc_ms, p.block_ids) for p in got] == [
        ("Show", T0, T0 + 70 * M, ("show", "pad")),
        ("Next Show", T0 + 70 * M, T0 + 2 * H, ("next",)),
    ]
    assert all("ident" not in p.title and "logo" not in p.title for p in got)


def test_filler_types_are_configurable_and_case_blind() -> None:
    entry = e("x", T0, T0 + M, seg("Station-ID", M, "id"))
    assert not is_filler_only(entry, DEFAULT_FILLER_TYPES)
    assert is_filler_only(entry, frozenset({"station-id"}))


def test_an_override_insert_is_its_own_programme_titled_by_its_first_segment_that_is_not_filler() -> None:
    d = day((T0, T0 + 90 * M, "The Film"))
    entries = [
        e("film-0", T0, T0 + 30 * M),
        e("flash", T0 + 30 * M, T0 + 60 * M, seg("bumper", M, "sting"), seg("live", 29 * M, "Newsflash"),
          override=True, gen=2),
        e("film-2", T0 + 60 * M, T0 + 90 * M),
    ]  # fmt: skip
    got = derive(entries, [d], T0, T0 + 90 * M).programmes
    assert [(p.title, p.block_ids, p.override_record_id, p.schedule_day_id) for p in got] == [
        ("The Film", ("film-0",), "", "day-1"),
        ("Newsflash", ("flash",), "rec-1", ""),
        ("The Film", ("film-2",), "", "day-1"),
    ]
    assert got[1].generation_id == 2


def test_beyond_the_window_the_slots_are_planned_and_nothing_else() -> None:
    d = day((T0, T0 + H, "A"), (T0 + H, T0 + 2 * H, "B"), (T0 + 2 * H, T0 + 3 * H, "C"))
    entries = [e("a0", T0, T0 + 30 * M), e("a1", T0 + 30 * M, T0 + H), e("b0", T0 + H, T0 + 90 * M)]
    result = derive(entries, [d], T0, T0 + 3 * H, covered_until_utc_ms=T0 + 90 * M)
    got = result.programmes
    assert [(p.title, p.start_utc_ms, p.end_utc_ms, p.planned) for p in got] == [
        ("A", T0, T0 + H, False),
        ("B", T0 + H, T0 + 90 * M, False),
        ("B", T0 + 90 * M, T0 + 2 * H, True),  # the rest of the slot the window ends in
        ("C", T0 + 2 * H, T0 + 3 * H, True),
    ]
    assert (result.covered_until_utc_ms, result.planned_until_utc_ms) == (T0 + 90 * M, T0 + 3 * H)
    # No clock arithmetic over a plan: before the window's first entry, nothing.
    assert derive(entries, [day((T0 - H, T0, "Earlier"))], T0 - H, T0).programmes == ()


def test_an_entry_no_slot_contains_is_its_own_programme() -> None:
    d = day((T0, T0 + H, "A"))
    got = derive([e("long", T0, T0 + 2 * H, seg("program", 2 * H, "Marathon"))], [d], T0, T0 + 2 * H)
    assert [(p.title, p.schedule_day_id) for p in got.programmes] == [("Marathon", "")]


def test_status_follows_now_and_the_lock() -> None:
    p = Programme(T0 + H, T0 + 2 * H, "x", last_entry_start_utc_ms=T0 + 90 * M)
    assert status_of(p, T0 + 2 * H, T0 + 3 * H) is ProgrammeStatus.AIRED
    assert status_of(p, T0 + H, T0 + 2 * H) is ProgrammeStatus.ON_AIR
    assert status_of(p, T0, T0 + 91 * M) is ProgrammeStatus.LOCKED  # every entry of it is locked
    assert status_of(p, T0, T0 + 90 * M) is ProgrammeStatus.FLEXIBLE  # its last entry is not yet
    assert status_of(Programme(0, 1, "p", planned=True), 5, 6) is ProgrammeStatus.PLANNED


def test_now_and_next() -> None:
    ps = (Programme(T0, T0 + H, "a"), Programme(T0 + 2 * H, T0 + 3 * H, "b"))
    assert now_and_next(ps, T0 + M) == (ps[0], ps[1])
    assert now_and_next(ps, T0 + 90 * M) == (None, ps[1])  # a gap: nothing on air
    assert now_and_next(ps, T0 + 3 * H) == (None, None)


def test_lookback_names_where_the_programme_of_the_first_entry_may_start() -> None:
    d = day((T0, T0 + 90 * M, "Film"))
    assert lookback_from(e("f1", T0 + 30 * M, T0 + H), [d], DEFAULT_FILLER_TYPES) == T0
    assert lookback_from(e("f0", T0, T0 + 30 * M), [d], DEFAULT_FILLER_TYPES) is None
    filler = e("pad", T0 + H, T0 + 70 * M, seg("filler", 10 * M, ""))
    assert lookback_from(filler, [d], DEFAULT_FILLER_TYPES) == T0 + H - 1
    assert lookback_from(e("x", T0 + 30 * M, T0 + H, override=True), [d], DEFAULT_FILLER_TYPES) is None


# -- properties -----------------------------------------------------------------------------

KINDS = ["program", "commercial", "filler", "bumper", "live"]


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[Entry], list[ScheduleDay]]:
    """Entries by start with gaps now and then, of random segment kinds, some
    by override, naming one of three dates; days whose slots may or may not
    fit the entries, and may even overlap another day's."""
    dates = ["2026-11-21", "2026-11-22", "2026-11-23"]
    at = T0 + draw(st.integers(0, 4)) * 10 * M
    entries = []
    for i in range(draw(st.integers(0, 14))):
        if draw(st.integers(0, 6)) == 0:
            at += draw(st.integers(1, 6)) * 10 * M  # a gap
        length = draw(st.sampled_from([10, 20, 30, 60])) * M
        kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
        part = length // len(kinds)
        segments = tuple(
            Segment(
                f"s{j}",
                k,
                "",
                0,
                part if j < len(kinds) - 1 else length - part * (len(kinds) - 1),
                f"t{i}{j}",
            )
            for j, k in enumerate(kinds)
        )
        override = draw(st.integers(0, 5)) == 0
        entries.append(
            Entry(
                "ch",
                f"b{i}",
                i,
                at,
                at + length,
                segments,
                draw(st.sampled_from(dates)),
                "",
                override,
                draw(st.integers(1, 5)),
                "r" if override else "",
            )
        )
        at += length
    days = []
    for k, date in enumerate(dates):
        if draw(st.booleans()):
            s = T0 + draw(st.integers(-4, 12)) * 30 * M
            slots = []
            for _ in range(draw(st.integers(0, 8))):
                s += draw(st.integers(0, 2)) * 30 * M
                length = draw(st.integers(1, 4)) * 30 * M
                slots.append(ScheduleSlot(s, s + length, f"p{k}-{len(slots)}", "", f"Slot {k}.{len(slots)}"))
                s += length
            days.append(ScheduleDay(f"d{k}", "ch", date, "plan", False, "", tuple(slots), 0))
    return entries, days


def spans(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of intervals, as sorted disjoint ones."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def clip(intervals: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    return spans([(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)])


@settings(max_examples=120, deadline=None)
@given(windows(), st.integers(-2, 20), st.integers(1, 24))
def test_programmes_never_overlap_leave_no_gap_cover_exactly_and_trace_to_entries_or_slots(
    window: tuple[list[Entry], list[ScheduleDay]], start_step: int, length_steps: int
) -> None:
    entries, days = window
    lo = T0 + start_step * 30 * M
    hi = lo + length_steps * 30 * M
    covered = entries[-1].end_utc_ms if entries else 0
    result = derive(entries, days, lo, hi, covered)
    ps = result.programmes
    # Never overlap (INV-EPG-NO-OVERLAP-001), each a real interval, by start.
    for a, b in itertools.pairwise(ps):
        assert a.end_utc_ms <= b.start_utc_ms
    assert all(p.start_utc_ms < p.end_utc_ms for p in ps)
    # Cover exactly the published span and the planned slots beyond it, and
    # nothing else: no gap where the window has none (INV-EPG-NO-GAP-001).
    slot_parts = [
        (max(s.start_utc_ms, covered), s.end_utc_ms) for d in days for s in d.slots if s.end_utc_ms > covered
    ]
    expected = clip([(x.start_utc_ms, x.end_utc_ms) for x in entries] + slot_parts, lo, hi)
    assert clip([(p.start_utc_ms, p.end_utc_ms) for p in ps], lo, hi) == expected
    by_block = {x.block_id: x for x in entries}
    by_day = {d.id: d for d in days}
    for p in ps:
        if p.planned:
            # Traces to its slot, beyond the window's last entry.
            slot = by_day[p.schedule_day_id].slots[p.slot_index]
            assert slot.start_utc_ms <= p.start_utc_ms < p.end_utc_ms == slot.end_utc_ms
            assert p.start_utc_ms >= covered and not p.block_ids and p.title == slot.title
            continue
        # Traces to its entries: consecutive, together exactly its span.
        mine = [by_block[b] for b in p.block_ids]
        assert mine and mine[0].start_utc_ms == p.start_utc_ms and mine[-1].end_utc_ms == p.end_utc_ms
        assert all(a.end_utc_ms == b.start_utc_ms for a, b in itertools.pairwise(mine))
        assert p.generation_id == max(x.generation_id for x in mine)
        shown = [x for x in mine if not is_filler_only(x, DEFAULT_FILLER_TYPES)]
        if p.schedule_day_id:
            # A slot's programme: every entry of it that is not only filler lies in that slot.
            d = by_day[p.schedule_day_id]
            slot = d.slots[p.slot_index]
            assert p.title == slot.title
            assert all(
                not x.is_operator_override and x.programming_day_date == d.programming_day_date
                and slot.start_utc_ms <= x.start_utc_ms and x.end_utc_ms <= slot.end_utc_ms
                for x in shown
            )  # fmt: skip
        else:
            # A programme of its own: one entry that is not only filler (or only filler, alone).
            assert len(shown) <= 1
    # Every entry shown once, filler included (inside a programme, never on its own).
    listed = [b for p in ps for b in p.block_ids]
    assert len(listed) == len(set(listed))


@settings(max_examples=120, deadline=None)
@given(windows(), st.integers(0, 16), st.integers(1, 8))
def test_a_programme_is_the_same_whatever_range_is_asked(
    window: tuple[list[Entry], list[ScheduleDay]], later: int, length_steps: int
) -> None:
    """INV-EPG-IDENTITY-STABLE-001: the programmes of a later, shorter range are
    the programmes of the whole window that overlap it, whole."""
    entries, days = window
    covered = entries[-1].end_utc_ms if entries else 0
    whole = derive(entries, days, T0 - 4 * H, T0 + 24 * H, covered).programmes
    lo = T0 + later * 30 * M
    hi = lo + length_steps * 30 * M
    part = derive(entries, days, lo, hi, covered).programmes
    assert part == tuple(p for p in whole if p.end_utc_ms > lo and p.start_utc_ms < hi)
