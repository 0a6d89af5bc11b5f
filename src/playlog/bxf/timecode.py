"""SMPTE timecode arithmetic (SPEC section 16): labels <-> frame counts,
exactly, and milliseconds from frame counts with one documented rounding.

A label is HH:MM:SS:FF (drop-frame: HH:MM:SS;FF, the last separator being
the profile's). Everything is computed from the frame count: a 29.97 fps frame
lasts 1001/30 ms, not a whole number, and reading drop-frame labels as clock
time drifts about 86 ms a day.

Rounding rule: the instant of frame N is floor(N * 1000 * den / num) ms after
the label's origin (num/den the exact rate, 30000/1001 for 29.97). One floor,
of an exact rational, never a sum of rounded frame durations: monotonic, and
never more than 1 ms before the true instant. An entry's end is the instant
of its start frame plus its duration in frames, so consecutive events share
their boundary millisecond exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class TimecodeError(ValueError):
    """A label, rate or duration that cannot exist: the message says which rule."""


@dataclass(frozen=True, slots=True)
class FrameRate:
    name: str  # as declared and exported: "29.97"
    num: int  # exact rate num/den frames per second
    den: int
    nominal: int  # frames per labelled second (30 for 29.97)
    drop_frame: bool

    @property
    def dropped(self) -> int:
        """Labels skipped at each minute not divisible by ten (SMPTE 12M): 2 at 29.97, 4 at 59.94."""
        return self.nominal // 15 if self.drop_frame else 0

    @property
    def frames_per_day(self) -> int:
        return (
            label_to_frames("23:59:59" + (";" if self.drop_frame else ":") + f"{self.nominal - 1:02d}", self)
            + 1
        )

    def __str__(self) -> str:
        return self.name + (" drop-frame" if self.drop_frame else "")


# SPEC 16's rates: name -> (num, den, nominal frames per labelled second).
_RATES = {
    "23.976": (24000, 1001, 24),
    "24": (24, 1, 24),
    "25": (25, 1, 25),
    "29.97": (30000, 1001, 30),
    "30": (30, 1, 30),
    "50": (50, 1, 50),
    "59.94": (60000, 1001, 60),
    "60": (60, 1, 60),
}
# Drop-frame counting exists only where the rate is 1000/1001 of a whole rate
# that SMPTE drops labels for.
_DROP_FRAME_RATES = {"29.97", "59.94"}
RATE_NAMES = tuple(_RATES)


def frame_rate(name: str, drop_frame: bool = False) -> FrameRate:
    """The rate of a declared name ("29.97", or "29.97df" for drop-frame)."""
    text = name.strip().lower()
    for suffix, df in (("df", True), ("ndf", False)):
        if text.endswith(suffix) and text[: -len(suffix)] in _RATES:
            text, drop_frame = text[: -len(suffix)], df
            break
    if text not in _RATES:
        raise TimecodeError(f"frame rate {name!r} is not one of {', '.join(RATE_NAMES)} (df: drop-frame)")
    if drop_frame and text not in _DROP_FRAME_RATES:
        raise TimecodeError(f"frame rate {text} has no drop-frame counting (only 29.97 and 59.94 do)")
    num, den, nominal = _RATES[text]
    return FrameRate(text, num, den, nominal, drop_frame)


ALL_RATES = tuple(
    frame_rate(n, df) for n in RATE_NAMES for df in ((False, True) if n in _DROP_FRAME_RATES else (False,))
)

_LABEL = re.compile(r"^(\d{2}):(\d{2}):(\d{2})([:;.,])(\d{2})$")


def label_to_frames(label: str, rate: FrameRate, df_separator: str = ";") -> int:
    """The frame count of a label since 00:00:00:00. Refuses a label whose
    fields are out of range, whose separator does not fit the rate, or that
    drop-frame counting skips (HH:MM:00;00 and ;01 where MM is not a multiple
    of ten, at 29.97)."""
    m = _LABEL.match(label.strip())
    if m is None:
        raise TimecodeError(f"timecode {label!r} is not HH:MM:SS:FF")
    hh, mm, ss, sep, ff = int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])
    expected = df_separator if rate.drop_frame else ":"
    if sep != expected:
        kind = "drop-frame" if rate.drop_frame else "non-drop-frame"
        raise TimecodeError(
            f"timecode {label!r} has {sep!r} before its frames; at {rate} ({kind}) "
            f"the profile says {expected!r}"
        )
    if hh > 23 or mm > 59 or ss > 59:
        raise TimecodeError(f"timecode {label!r}: hours 0-23, minutes and seconds 0-59")
    if ff >= rate.nominal:
        raise TimecodeError(f"timecode {label!r}: frame {ff} does not exist at {rate} (0-{rate.nominal - 1})")
    d = rate.dropped
    if d and ss == 0 and mm % 10 != 0 and ff < d:
        raise TimecodeError(
            f"timecode {label!r} does not exist at {rate}: drop-frame counting skips frames 0-{d - 1} "
            "at every minute not divisible by ten"
        )
    minutes = 60 * hh + mm
    return (3600 * hh + 60 * mm + ss) * rate.nominal + ff - d * (minutes - minutes // 10)


def frames_to_label(frames: int, rate: FrameRate, df_separator: str = ";") -> str:
    """The label of a frame count since 00:00:00:00 (inside one day)."""
    if frames < 0:
        raise TimecodeError(f"frame count {frames} is negative")
    n, d = rate.nominal, rate.dropped
    if d:
        # Put back the labels drop-frame counting skipped, then count as if none were.
        per_ten = 10 * 60 * n - 9 * d
        per_minute = 60 * n - d
        tens, rest = divmod(frames, per_ten)
        frames += 9 * d * tens + (d * ((rest - d) // per_minute) if rest >= d else 0)
    ss_total, ff = divmod(frames, n)
    hh, rest_s = divmod(ss_total, 3600)
    mm, ss = divmod(rest_s, 60)
    if hh > 23:
        raise TimecodeError(f"frame count beyond one day at {rate}")
    return f"{hh:02d}:{mm:02d}:{ss:02d}{df_separator if d else ':'}{ff:02d}"


def frames_to_ms(frames: int, rate: FrameRate) -> int:
    """Milliseconds from a frame count: floor(frames * 1000 * den / num), the
    module's one rounding."""
    return frames * 1000 * rate.den // rate.num


def ms_to_frames(ms: int, rate: FrameRate) -> int:
    """The frame that contains millisecond `ms` (the last frame whose instant,
    by frames_to_ms, is at or before it): frames_to_ms(ms_to_frames(x)) <= x."""
    frames = ms * rate.num // (1000 * rate.den)
    # The floor in frames_to_ms can put frame k+1's instant at ms: step up to it.
    while frames_to_ms(frames + 1, rate) <= ms:
        frames += 1
    return frames
