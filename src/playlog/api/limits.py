"""Ranges for every number of every request (SPEC section 1), checked in one
place, by the interceptor, before any servicer code runs.

A request is walked by its protobuf descriptor, recursing into sub-messages
and repeated fields; every integer field is checked against the rule its name
selects (RULES_BY_NAME, then RULES_BY_SUFFIX; RULES_BY_FIELD first for the
few fields whose meaning differs from their name). A number out of range is
malformed input: INVALID_ARGUMENT with a BadRequest naming the field path
(`entries[3].segments[0].duration_ms`) and the range. Enums and bools are not
numbers here.

Fail closed: an integer field without a rule accepts only 0, and a test
enumerates every request type of every playlog.v1 service so that a new field
without a rule fails the suite instead of slipping through.

Strings are checked for one thing here: no NUL character (U+0000) in any
string field, which no id or text needs and PostgreSQL cannot store (a NUL
reached the store and answered INTERNAL). What a valid id is stays with the
domain's validation.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from playlog.domain.rejection import FieldViolation, MalformedRequest
from playlog.domain.validation import MAX_UTC_MS

MAX_DURATION_MS = 2_592_000_000  # 30 days
# Generation ids stay exact in every client language (JavaScript numbers, doubles).
MAX_GENERATION_ID = 2**53 - 1
# A requested generation leaves a channel room for 2^52 later publishes.
MAX_REQUESTED_GENERATION_ID = 2**52


@dataclass(frozen=True)
class Range:
    low: int
    high: int | None  # None: no upper bound
    note: str = ""

    def admits(self, value: int) -> bool:
        return self.low <= value and (self.high is None or value <= self.high)

    def rule(self, value: int) -> str:
        note = f" ({self.note})" if self.note else ""
        if self.high is None:
            return f"must be >= {self.low}{note}, got {value}"
        return f"must be between {self.low} and {self.high}{note}, got {value}"


INSTANT = Range(0, MAX_UTC_MS)
DURATION = Range(1, MAX_DURATION_MS, "30 days")
GENERATION = Range(0, MAX_GENERATION_ID)
INDEX = Range(0, MAX_GENERATION_ID)
# The only rule of a field nobody wrote one for (fail closed).
UNRULED = Range(0, 0, "this server defines no range for this field")

NUL_RULE = "must not contain NUL characters (U+0000)"

RULES_BY_FIELD: dict[tuple[str, str], Range] = {
    ("playlog.v1.PublishAtomicReplaceRequest", "generation_id"): Range(
        0, MAX_REQUESTED_GENERATION_ID, "0: the next generation"
    ),
    # A label's frame count within its day, and a duration's, at the fastest
    # rate BXF import knows (60 fps).
    ("playlog.v1.Timecode", "frames"): Range(0, 24 * 3600 * 60 - 1, "a day of frames at 60 fps"),
    ("playlog.v1.Timecode", "duration_frames"): Range(
        0, MAX_DURATION_MS // 1000 * 60, "30 days of frames at 60 fps"
    ),
}
RULES_BY_NAME: dict[str, Range] = {
    "duration_ms": DURATION,
    "locked_window_ms": DURATION,
    "delta_ms": DURATION,
    "progress_interval_ms": Range(0, MAX_DURATION_MS, "0: the server's default"),
    "asset_offset_ms": Range(0, MAX_DURATION_MS),
    "block_index": INDEX,
    # Above the maximum it is clamped by the servicer (AIP-158), not refused.
    "page_size": Range(0, None, "0: the server's default"),
}
RULES_BY_SUFFIX: tuple[tuple[str, Range], ...] = (
    ("_utc_ms", INSTANT),
    ("generation_id", GENERATION),
)

_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def rule_for(message_name: str, field_name: str) -> Range | None:
    """The range of an integer field of a message type; None if it has none."""
    rule = RULES_BY_FIELD.get((message_name, field_name)) or RULES_BY_NAME.get(field_name)
    if rule is not None:
        return rule
    for suffix, suffix_rule in RULES_BY_SUFFIX:
        if field_name.endswith(suffix):
            return suffix_rule
    return None


@dataclass(frozen=True)
class _Plan:
    """What to look at in one message type: its numbers with their ranges, and
    its sub-messages."""

    numbers: tuple[tuple[str, Range, bool], ...]  # name, range, repeated
    strings: tuple[tuple[str, bool], ...]  # name, repeated
    messages: tuple[tuple[str, bool, Descriptor], ...]  # name, repeated, type


_plans: dict[str, _Plan] = {}


def _descriptor(message: Message) -> Descriptor:
    return cast(Descriptor, message.DESCRIPTOR)


def _sub_message(field: FieldDescriptor) -> Descriptor | None:
    """The type of a message field; None for other fields."""
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return field.message_type
    return None


def _is_map(descriptor: Descriptor) -> bool:
    return bool(descriptor.GetOptions().map_entry)


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        numbers: list[tuple[str, Range, bool]] = []
        strings: list[tuple[str, bool]] = []
        messages: list[tuple[str, bool, Descriptor]] = []
        for field in descriptor.fields:
            sub = _sub_message(field)
            if field.type in _INTEGER_TYPES:
                rule = rule_for(descriptor.full_name, field.name) or UNRULED
                numbers.append((field.name, rule, field.is_repeated))
            elif field.type == FieldDescriptor.TYPE_STRING:
                strings.append((field.name, field.is_repeated))
            elif sub is not None and not _is_map(sub):
                # (No request has a map; a new one has to be taught here:
                # unruled_fields reports it.)
                messages.append((field.name, field.is_repeated, sub))
        plan = _Plan(tuple(numbers), tuple(strings), tuple(messages))
        _plans[descriptor.full_name] = plan
    return plan


def violations(message: Message) -> list[FieldViolation]:
    """Every number of `message`, at any depth, that is out of its range, and
    every string with a NUL character."""
    out: list[FieldViolation] = []
    _walk(message, "", out)
    return out


def check(message: Message) -> None:
    """MalformedRequest naming every number of `message` out of its range and
    every string with a NUL character.

    A request in range (nearly all of them) costs one call of the compiled
    check of its type and one scan of its encoding for a zero byte (a NUL
    character is one; a well-formed request rarely has any other); the field
    paths are worked out only when either finds something.
    """
    if _admits(message) and b"\x00" not in message.SerializeToString():
        return
    out = violations(message)
    if out:
        raise MalformedRequest(out)


def _walk(message: Message, prefix: str, out: list[FieldViolation]) -> None:
    plan = _plan(_descriptor(message))
    for name, rule, repeated in plan.numbers:
        if repeated:
            for i, value in enumerate(getattr(message, name)):
                if not rule.admits(value):
                    out.append(FieldViolation(f"{prefix}{name}[{i}]", rule.rule(value)))
        else:
            value = getattr(message, name)
            if not rule.admits(value):
                out.append(FieldViolation(f"{prefix}{name}", rule.rule(value)))
    for name, repeated in plan.strings:
        if repeated:
            for i, text in enumerate(getattr(message, name)):
                if "\x00" in text:
                    out.append(FieldViolation(f"{prefix}{name}[{i}]", NUL_RULE))
        elif "\x00" in getattr(message, name):
            out.append(FieldViolation(f"{prefix}{name}", NUL_RULE))
    for name, repeated, _ in plan.messages:
        if repeated:
            for i, item in enumerate(getattr(message, name)):
                _walk(item, f"{prefix}{name}[{i}].", out)
        elif message.HasField(name):
            _walk(getattr(message, name), f"{prefix}{name}.", out)


# -- the compiled check: the number rules of _walk, as straight-line code ---------------
#
# A 48-entry publish has some 400 numbers; a generic loop over (name, range)
# tuples costs about half again as much as code that reads each field by name
# and compares it with literal bounds, so each message type gets such a
# function, generated once from its plan (sub-message types inlined).

_compiled: dict[str, Callable[[Message], bool]] = {}


def _admits(message: Message) -> bool:
    descriptor = _descriptor(message)
    admits = _compiled.get(descriptor.full_name)
    if admits is None:
        admits = _compiled[descriptor.full_name] = _compile(descriptor)
    return admits(message)


def compiled_source(descriptor: Descriptor) -> str:
    """The Python source of the compiled check of a message type."""
    lines = ["def admits(m0):"]
    _emit(descriptor, "m0", 1, (descriptor.full_name,), lines)
    lines.append("    return True")
    return "\n".join(lines) + "\n"


def _compile(descriptor: Descriptor) -> Callable[[Message], bool]:
    namespace: dict[str, Any] = {"_nested": _nested}
    exec(compile(compiled_source(descriptor), f"<limits {descriptor.full_name}>", "exec"), namespace)
    admits: Callable[[Message], bool] = namespace["admits"]
    return admits


def _nested(message: Message) -> bool:
    """A recursive message type, met again inside itself: checked by the walker."""
    return all(v.rule == NUL_RULE for v in violations(message))


def _read(var: str, name: str) -> str:
    return f"getattr({var}, {name!r})" if keyword.iskeyword(name) else f"{var}.{name}"


def _emit(
    descriptor: Descriptor, var: str, depth: int, open_types: tuple[str, ...], lines: list[str]
) -> None:
    pad = "    " * depth
    plan = _plan(descriptor)
    for name, rule, repeated in plan.numbers:
        test = f"v < {rule.low}" + (f" or v > {rule.high}" if rule.high is not None else "")
        if repeated:
            lines.append(f"{pad}for v in {_read(var, name)}:")
            lines.append(f"{pad}    if {test}:")
            lines.append(f"{pad}        return False")
        else:
            lines.append(f"{pad}v = {_read(var, name)}")
            lines.append(f"{pad}if {test}:")
            lines.append(f"{pad}    return False")
    for name, repeated, child in plan.messages:
        sub = f"m{depth}"
        if repeated:
            lines.append(f"{pad}for {sub} in {_read(var, name)}:")
        else:
            lines.append(f"{pad}if {var}.HasField({name!r}):")
            lines.append(f"{pad}    {sub} = {_read(var, name)}")
        if child.full_name in open_types:
            lines.append(f"{pad}    if not _nested({sub}):")
            lines.append(f"{pad}        return False")
        else:
            _emit(child, sub, depth + 1, (*open_types, child.full_name), lines)


def unruled_fields(descriptors: Iterable[Descriptor]) -> list[str]:
    """Paths of the integer fields (and map fields) reachable from these message
    types that have no rule: the list a test keeps empty."""
    found: list[str] = []
    seen: set[str] = set()

    def visit(descriptor: Descriptor, path: str) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            where = f"{path}.{field.name}"
            sub = _sub_message(field)
            if field.type in _INTEGER_TYPES:
                if rule_for(descriptor.full_name, field.name) is None:
                    found.append(where)
            elif sub is not None and _is_map(sub):
                found.append(f"{where} (a map: the walker does not look into maps)")
            elif sub is not None:
                visit(sub, f"{where}<{sub.full_name}>")

    for descriptor in descriptors:
        visit(descriptor, descriptor.full_name)
    return found
