"""The as-run of a range as a BXF message (SPEC section 16): a `Schedule`
holding one `AsRun` -> `BasicAsRun` -> `AsRunDetail` per as-run event, keyed
by the scheduled EventId (the entry's block id), times as timecodes at the
channel's rate, statuses mapped as SPEC 16 says, operator inserts marked.
Pure functions: no gRPC, no I/O (validation reads the operator's schemas).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from playlog.bxf.parse import BxfError
from playlog.bxf.schedule import Profile, iso, wall_of
from playlog.bxf.timecode import TimecodeError, frames_to_label, frames_to_ms, ms_to_frames
from playlog.v1 import engine_service_pb2 as eng
from playlog.v1 import types_pb2 as pb

# The namespace of the export when no schema is given (with --xsd, the
# schema's own target namespace is used).
DEFAULT_NAMESPACE = "http://smpte-ra.org/schemas/2021/2019/BXF"

# SPEC 16's mapping of an engine's as-run status to BXF's.
STATUS = {
    eng.AS_RUN_STATUS_AIRED: "Aired Without Discrepancy",
    eng.AS_RUN_STATUS_CUT_SHORT: "Aired With Duration Discrepancy",
    eng.AS_RUN_STATUS_FAILED: "Did Not Air",
    eng.AS_RUN_STATUS_SUBSTITUTED: "Aired With Content Discrepancy",
}
NOT_REPORTED = "Did Not Air"


@dataclass(frozen=True, slots=True)
class Label:
    broadcast_date: str
    label: str


def instant_label(ms: int, p: Profile) -> Label:
    """An instant as its broadcast date and time-of-day label in the
    profile's zone and rate (the frame that contains it)."""
    wall = wall_of(ms, p.zone)
    offset = (wall - dt.datetime.combine(wall.date(), dt.time())) // dt.timedelta(milliseconds=1)
    # A drop-frame day's labels end 86 ms before midnight (23:59:59;29 at
    # 29.97): an instant in those last milliseconds has the day's last label.
    frames = min(ms_to_frames(offset, p.rate), p.rate.frames_per_day - 1)
    label = frames_to_label(frames, p.rate, p.df_separator)
    # The broadcast day by the label, as the import reads it (schedule.event_entry).
    day = wall.date() if label[:5] >= p.day_start else wall.date() - dt.timedelta(days=1)
    return Label(day.isoformat(), label)


def duration_label(ms: int, p: Profile) -> str:
    """A duration as a label: the frames it spans, under 24 hours (a label has no more)."""
    return frames_to_label(ms_to_frames(ms, p.rate), p.rate, p.df_separator)


def _el(parent: etree._Element, ns: str, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns}}}{name}", {k: v for k, v in attrs.items() if v})
    if text is not None:
        el.text = text
    return el


def _start(parent: etree._Element, ns: str, name: str, at: Label, p: Profile) -> None:
    sdt = _el(_el(parent, ns, name), ns, "SmpteDateTime", broadcastDate=at.broadcast_date)
    _el(sdt, ns, "SmpteTimeCode", at.label, frameRate=p.rate.name)


def _duration(parent: etree._Element, ns: str, name: str, label: str, p: Profile) -> None:
    _el(_el(_el(parent, ns, name), ns, "SmpteDuration"), ns, "SmpteTimeCode", label, frameRate=p.rate.name)


def from_traffic(entry: pb.ExecutionEntry) -> bool:
    """Whether the entry came from a BXF import: its transmission_log_ref
    names the message (schedule.event_entry), and a cut keeps it."""
    return entry.transmission_log_ref == "bxf" or entry.transmission_log_ref.startswith("bxf:")


def scheduled(entry: pb.ExecutionEntry, p: Profile) -> tuple[Label, str]:
    """The entry's scheduled start and duration: the timecode traffic sent
    where there is one (given back as received), else computed at the rate."""
    if entry.HasField("source_timecode"):
        tc = entry.source_timecode
        same_rate = (tc.frame_rate, tc.drop_frame) == (p.rate.name, p.rate.drop_frame)
        # Still the event traffic sent: not shortened since (a cut keeps the aired part).
        length = frames_to_ms(tc.frames + tc.duration_frames, p.rate) - frames_to_ms(tc.frames, p.rate)
        if same_rate and length == entry.end_utc_ms - entry.start_utc_ms:
            return Label(tc.broadcast_date, tc.label), tc.duration_label
    return instant_label(entry.start_utc_ms, p), duration_label(entry.end_utc_ms - entry.start_utc_ms, p)


def _detail(
    root_as_run: etree._Element,
    ns: str,
    entry: pb.ExecutionEntry | None,
    block_id: str,
    status: str,
    p: Profile,
    aired: eng.AsRunRecord | None,
) -> None:
    detail = _el(_el(_el(root_as_run, ns, "AsRun"), ns, "BasicAsRun"), ns, "AsRunDetail")
    _el(_el(detail, ns, "EventId"), ns, "EventId", block_id)
    _el(detail, ns, "Status", status)
    sched = scheduled(entry, p) if entry is not None else None
    if aired is not None:
        ev = aired.event
        on_time = entry is not None and sched is not None and ev.started_utc_ms == entry.start_utc_ms
        start = sched[0] if on_time and sched is not None else instant_label(ev.started_utc_ms, p)
        full = on_time and entry is not None and ev.ended_utc_ms == entry.end_utc_ms
        length = (
            sched[1] if full and sched is not None else duration_label(ev.ended_utc_ms - ev.started_utc_ms, p)
        )
        _start(detail, ns, "StartDateTime", start, p)
        _duration(detail, ns, "Duration", length, p)
    if sched is not None:
        _start(detail, ns, "ScheduledStartDateTime", sched[0], p)
        _duration(detail, ns, "ScheduledDuration", sched[1], p)
    if entry is not None and entry.segments:
        content = _el(detail, ns, "Content")
        _el(_el(content, ns, "ContentId"), ns, "HouseNumber", entry.segments[0].asset_uri)
        _el(content, ns, "Name", entry.segments[0].title)
    if aired is not None and aired.event.asset_uri and aired.event.status == eng.AS_RUN_STATUS_SUBSTITUTED:
        _el(_el(_el(detail, ns, "AiredContent"), ns, "ContentId"), ns, "HouseNumber", aired.event.asset_uri)
    if entry is not None and entry.is_operator_override and not from_traffic(entry):
        # Not from traffic's schedule: an operator put it on air (an override).
        _el(detail, ns, "OperatorInsert", "true", overrideRecordId=entry.override_record_id)
    note = aired.event.detail if aired is not None else "no as-run reported by any engine"
    if aired is None or aired.event.detail:
        _el(detail, ns, "Remarks", note)


def build_as_run(
    channel_id: str,
    start_utc_ms: int,
    end_utc_ms: int,
    now_utc_ms: int,
    entries: Sequence[pb.ExecutionEntry],
    records: Iterable[eng.AsRunRecord],
    p: Profile,
    namespace: str = DEFAULT_NAMESPACE,
    message_id: str = "",
) -> bytes:
    """The BXF as-run message of [start, end): one detail per as-run event,
    by start, and one `Did Not Air` per entry that was due (ended by now) with
    no as-run at all."""
    ns = namespace
    root = etree.Element(
        f"{{{ns}}}BxfMessage",
        {
            "id": message_id or f"urn:playlog:as-run:{channel_id}:{start_utc_ms}-{end_utc_ms}",
            "dateTime": iso(now_utc_ms),
            "messageType": "Information",
            "origin": "playlog",
            "originType": "Automation",
            "destination": "Traffic",
        },
        nsmap={None: ns},
    )
    schedule = _el(
        _el(root, ns, "BxfData", action="add"),
        ns,
        "Schedule",
        type="Primary",
        scheduleId=f"urn:playlog:{channel_id}",
        scheduleName=channel_id,
        scheduleStart=iso(start_utc_ms),
        scheduleEnd=iso(end_utc_ms),
    )
    by_block = {e.block_id: e for e in entries}
    reported = sorted(records, key=lambda r: (r.event.started_utc_ms, r.event.block_id, r.event.event_id))
    rows: list[tuple[int, str, eng.AsRunRecord | None]] = [
        (r.event.started_utc_ms, r.event.block_id, r) for r in reported
    ]
    seen = {r.event.block_id for r in reported}
    rows += [
        (e.start_utc_ms, e.block_id, None)
        for e in entries
        if e.block_id not in seen and e.end_utc_ms <= now_utc_ms and e.start_utc_ms >= start_utc_ms
    ]
    for _, block_id, record in sorted(rows, key=lambda r: (r[0], r[1])):
        status = STATUS.get(record.event.status, NOT_REPORTED) if record is not None else NOT_REPORTED
        try:
            _detail(schedule, ns, by_block.get(block_id), block_id, status, p, record)
        except TimecodeError as exc:
            raise BxfError(f"cannot be written as a timecode at {p.rate}: {exc}", event_id=block_id) from None
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


class SchemaSet:
    """The operator's copy of SMPTE's schemas (playlog cannot ship them): the
    .xsd in DIR that declares BxfMessage, loaded with xmlschema, every XML
    resource defused and nothing fetched from the network."""

    def __init__(self, directory: str) -> None:
        import xmlschema  # only with --xsd: loading it costs at every ctl start otherwise

        folder = Path(directory)
        candidates = sorted(folder.glob("*.xsd")) if folder.is_dir() else []
        if not candidates:
            raise ValueError(f"--xsd {directory}: no .xsd files in that directory")
        for path in candidates:
            if b'name="BxfMessage"' not in path.read_bytes():
                continue
            try:
                self.schema = xmlschema.XMLSchema(str(path), defuse="always", allow="local")
            except (xmlschema.XMLSchemaException, OSError) as exc:
                raise ValueError(f"--xsd {path}: the schema does not load: {exc}") from None
            self.path = path
            return
        raise ValueError(f"--xsd {directory}: no schema there declares the element BxfMessage")

    @property
    def namespace(self) -> str:
        return str(self.schema.target_namespace) or DEFAULT_NAMESPACE

    def validate(self, document: bytes) -> None:
        """BxfError naming the first element that does not fit the schema."""
        import xmlschema

        resource = xmlschema.XMLResource(document, defuse="always", allow="none")
        for err in self.schema.iter_errors(resource):
            elem = err.elem
            line = getattr(elem, "sourceline", 0) or 0
            name = etree.QName(elem.tag).localname if elem is not None else "document"
            raise BxfError(f"does not fit {self.path.name}: {err.reason}", name, line)
