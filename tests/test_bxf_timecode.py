"""Timecode arithmetic a broadcast engineer can trust (SPEC section 16):
label -> frames -> label at every rate, drop-frame labels that do not exist
refused, milliseconds from frames monotonic and exact to the documented rule
floor(frames * 1000 * den / num), and a table of known values."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playlog.bxf.timecode import (
    ALL_RATES,
    FrameRate,
    TimecodeError,
    frame_rate,
    frames_to_label,
    frames_to_ms,
    label_to_frames,
    ms_to_frames,
)

rates = st.sampled_from(ALL_RATES)
EXAMPLES = settings(max_examples=300, deadline=None)


@st.composite
def rate_and_frame(draw: st.DrawFn) -> tuple[FrameRate, int]:
    rate = draw(rates)
    return rate, draw(st.integers(0, rate.frames_per_day - 1))


@EXAMPLES
@given(rate_and_frame())
def test_frames_to_label_to_frames_round_trips_at_every_rate(case: tuple[FrameRate, int]) -> None:
    rate, frames = case
    label = frames_to_label(frames, rate)
    assert label_to_frames(label, rate) == frames
    assert frames_to_label(label_to_frames(label, rate), rate) == label


@EXAMPLES
@given(
    rates,
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 59),
)
def test_every_label_either_round_trips_or_is_refused_for_a_named_rule(
    rate: FrameRate, hh: int, mm: int, ss: int, ff: int
) -> None:
    label = f"{hh:02d}:{mm:02d}:{ss:02d}{';' if rate.drop_frame else ':'}{ff:02d}"
    dropped = rate.drop_frame and ss == 0 and mm % 10 != 0 and ff < rate.dropped
    if ff >= rate.nominal or dropped:
        with pytest.raises(TimecodeError, match="does not exist"):
            label_to_frames(label, rate)
        return
    assert frames_to_label(label_to_frames(label, rate), rate) == label


@EXAMPLES
@given(st.sampled_from([r for r in ALL_RATES if r.drop_frame]), st.integers(0, 23), st.integers(0, 59))
def test_drop_frame_labels_that_do_not_exist_are_refused(rate: FrameRate, hh: int, mm: int) -> None:
    for ff in range(rate.dropped):
        label = f"{hh:02d}:{mm:02d}:00;{ff:02d}"
        if mm % 10 == 0:
            assert frames_to_label(label_to_frames(label, rate), rate) == label
        else:
            with pytest.raises(TimecodeError, match="drop-frame counting skips"):
                label_to_frames(label, rate)


@EXAMPLES
@given(rate_and_frame())
def test_ms_from_frames_is_exactly_the_documented_floor_and_monotonic(case: tuple[FrameRate, int]) -> None:
    rate, frames = case
    exact = Fraction(frames * 1000 * rate.den, rate.num)
    ms = frames_to_ms(frames, rate)
    assert ms == int(exact)  # floor of the exact rational (frames >= 0)
    assert 0 <= exact - ms < 1
    assert frames_to_ms(frames + 1, rate) > ms  # a frame is longer than a millisecond at every rate
    assert ms_to_frames(ms, rate) == frames  # the frame that contains the instant is the frame


@EXAMPLES
@given(rates, st.integers(0, 86_400_000))
def test_ms_to_frames_names_the_frame_that_contains_the_instant(rate: FrameRate, ms: int) -> None:
    frames = ms_to_frames(ms, rate)
    assert frames_to_ms(frames, rate) <= ms < frames_to_ms(frames + 1, rate)


KNOWN = [
    # rate, label, frames since 00:00:00:00, ms by the rule
    ("29.97df", "00:00:59;29", 1799, 60_026),
    ("29.97df", "00:01:00;02", 1800, 60_060),
    ("29.97df", "00:10:00;00", 17982, 599_999),
    ("29.97df", "01:00:00;00", 107_892, 3_599_996),
    ("29.97df", "06:00:00;00", 647_352, 21_599_978),
    ("29.97df", "23:59:59;29", 2_589_407, 86_399_880),
    ("29.97", "01:00:00:00", 108_000, 3_603_600),
    ("59.94df", "00:01:00;04", 3600, 60_060),
    ("59.94df", "01:00:00;00", 215_784, 3_599_996),
    ("59.94", "01:00:00:00", 216_000, 3_603_600),
    ("23.976", "01:00:00:00", 86_400, 3_603_600),
    ("24", "01:00:00:00", 86_400, 3_600_000),
    ("25", "00:00:01:24", 49, 1_960),
    ("25", "23:59:59:24", 2_159_999, 86_399_960),
    ("30", "00:00:00:29", 29, 966),
    ("50", "00:00:01:49", 99, 1_980),
    ("60", "12:00:00:00", 2_592_000, 43_200_000),
]


@pytest.mark.parametrize(("rate", "label", "frames", "ms"), KNOWN)
def test_known_values(rate: str, label: str, frames: int, ms: int) -> None:
    r = frame_rate(rate)
    assert label_to_frames(label, r) == frames
    assert frames_to_label(frames, r) == label
    assert frames_to_ms(frames, r) == ms


def test_a_drop_frame_day_is_86_ms_short_of_the_clock_which_the_frame_count_keeps() -> None:
    """Reading 29.97 drop-frame labels as clock time drifts 86.4 ms a day."""
    r = frame_rate("29.97df")
    assert r.frames_per_day == 2_589_408
    assert 86_400_000 - frames_to_ms(r.frames_per_day, r) == 87  # 86.3136 ms, floored once


@pytest.mark.parametrize(
    ("label", "rate", "rule"),
    [
        ("01:00:00;00", "29.97", "non-drop-frame"),  # the separator does not fit the rate
        ("01:00:00:00", "29.97df", "drop-frame"),
        ("00:00:00:25", "25", "frame 25 does not exist"),
        ("24:00:00:00", "25", "hours 0-23"),
        ("1:00:00:00", "25", "not HH:MM:SS:FF"),
    ],
)
def test_bad_labels_are_refused_naming_the_rule(label: str, rate: str, rule: str) -> None:
    with pytest.raises(TimecodeError, match=rule):
        label_to_frames(label, frame_rate(rate))


def test_unknown_rates_and_drop_frame_where_none_exists_are_refused() -> None:
    with pytest.raises(TimecodeError, match="not one of"):
        frame_rate("48")
    with pytest.raises(TimecodeError, match="no drop-frame"):
        frame_rate("25df")
    assert frame_rate("29.97DF").drop_frame and not frame_rate("29.97").drop_frame


def test_the_drop_frame_separator_is_the_profiles() -> None:
    r = frame_rate("29.97df")
    assert label_to_frames("01:00:00.00", r, ".") == 107_892
    assert frames_to_label(107_892, r, ".") == "01:00:00.00"
    with pytest.raises(TimecodeError, match=r"the profile says '\.'"):
        label_to_frames("01:00:00;00", r, ".")
