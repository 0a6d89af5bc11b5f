"""Reading a BXF message as the untrusted input it is (SPEC section 16).

No DTD is loaded, no entity is declared or expanded, nothing is fetched, the
size is checked before parsing, and a document that declares a DOCTYPE or an
entity is refused outright rather than parsed with the declarations ignored
(lxml 5 and later no longer resolve external entities by default but still
expand internal ones: a billion-laughs bomb is an internal entity). Every
refusal names the element and its line.

Elements are matched by local name: BXF releases 1.0 to 8.1 use different
namespaces for the same elements, and files in the field mix them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

# A day of a busy channel's schedule with its secondary events is a few MB;
# far past that is not a schedule.
MAX_BYTES = 16 * 1024 * 1024


class BxfError(ValueError):
    """Input that does not fit: the element, its line, and the rule."""

    def __init__(self, message: str, element: str = "", line: int = 0, event_id: str = "") -> None:
        where = f"{element} (line {line})" if element and line else element
        who = f"event {event_id}: " if event_id else ""
        super().__init__(f"{who}{where + ': ' if where else ''}{message}")
        self.element, self.line, self.event_id = element, line, event_id


@dataclass(frozen=True, slots=True)
class BxfEvent:
    """One ScheduledEvent as received, before any profile is applied."""

    event_id: str
    primary: bool
    line: int
    broadcast_date: str = ""  # SmpteDateTime's broadcastDate
    start_label: str = ""
    duration_label: str = ""
    frame_rate: str = ""  # SmpteTimeCode's frameRate attribute, if the file gives one
    house_number: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class BxfSchedule:
    message_id: str
    events: tuple[BxfEvent, ...] = field(default=())

    @property
    def primary(self) -> tuple[BxfEvent, ...]:
        return tuple(e for e in self.events if e.primary)

    @property
    def secondary(self) -> tuple[BxfEvent, ...]:
        return tuple(e for e in self.events if not e.primary)


_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_xml(data: bytes, max_bytes: int = MAX_BYTES) -> etree._Element:
    """The root element of untrusted XML, or BxfError."""
    if len(data) > max_bytes:
        raise BxfError(f"the file is {len(data)} bytes, more than the limit of {max_bytes}")
    # Refused before the parser sees it: in UTF-8 (and ASCII) and, for a file
    # that says it is UTF-16, in that form too.
    for form in (data, _utf16_text(data)):
        found = _DECLARATION.search(form)
        if found:
            raise BxfError(
                f"declares <!{found[1].decode().upper()}: DTDs and entities are refused in untrusted XML",
                "document",
                form[: found.start()].count(b"\n") + 1,
            )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise BxfError(f"not well-formed XML: {exc.msg}", "document", exc.lineno or 0) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # belt and braces: an encoding the scan missed
        raise BxfError("declares a DOCTYPE: DTDs and entities are refused in untrusted XML", "document", 1)
    return root


def _utf16_text(data: bytes) -> bytes:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16").encode("utf-8", "replace")
        except UnicodeDecodeError:
            return b""
    return b""


def local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def child(el: etree._Element, name: str) -> etree._Element | None:
    for c in el:
        if local(c) == name:
            return c
    return None


def path(el: etree._Element, *names: str) -> etree._Element | None:
    """The first element at names[0]/names[1]/..., by local names."""
    cur: etree._Element | None = el
    for n in names:
        if cur is None:
            return None
        cur = child(cur, n)
    return cur


def text(el: etree._Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def parse_schedule(data: bytes, max_bytes: int = MAX_BYTES) -> BxfSchedule:
    """The ScheduledEvents of a BXF schedule message, as received."""
    root = parse_xml(data, max_bytes)
    if local(root) != "BxfMessage":
        raise BxfError(f"the root is <{local(root)}>, not <BxfMessage>", local(root), _line(root))
    data_el = child(root, "BxfData")
    if data_el is None:
        raise BxfError("has no <BxfData>", "BxfMessage", _line(root))
    schedules = [s for s in data_el if local(s) == "Schedule"]
    if not schedules:
        raise BxfError("has no <Schedule>: only schedule messages are imported", "BxfData", _line(data_el))
    events = [_event(se) for s in schedules for se in s if local(se) == "ScheduledEvent"]
    if not events:
        raise BxfError("has no <ScheduledEvent>", "Schedule", _line(schedules[0]))
    return BxfSchedule(message_id=root.get("id", ""), events=tuple(events))


def _line(el: etree._Element) -> int:
    return el.sourceline or 0


def _event(se: etree._Element) -> BxfEvent:
    line = _line(se)
    data = child(se, "EventData")
    if data is None:
        raise BxfError("has no <EventData>", "ScheduledEvent", line)
    id_el = child(data, "EventId")
    # <EventId><EventId>x</EventId></EventId> in most releases, plain text in some.
    inner = child(id_el, "EventId") if id_el is not None else None
    event_id = text(inner) or text(id_el)
    if not event_id:
        raise BxfError("has no EventId (EventData/EventId is required)", "EventData", data.sourceline or line)
    primary = child(data, "PrimaryEvent") is not None
    if not primary and child(data, "NonPrimaryEvent") is None:
        raise BxfError(
            "is neither <PrimaryEvent> nor <NonPrimaryEvent>", "EventData", data.sourceline or line, event_id
        )
    if not primary:
        # Secondary events are counted and reported, never imported: their
        # times are offsets into a primary event that playlog has no place for.
        return BxfEvent(event_id, False, line)
    sdt = path(data, "StartDateTime", "SmpteDateTime")
    if sdt is None:
        start = child(data, "StartDateTime")
        raise BxfError(
            "has no <SmpteDateTime> (a UTC start is not read: the profile declares the zone)",
            "StartDateTime" if start is not None else "EventData",
            (start if start is not None else data).sourceline or line,
            event_id,
        )
    tc = child(sdt, "SmpteTimeCode")
    if tc is None or not text(tc):
        raise BxfError("has no <SmpteTimeCode>", "SmpteDateTime", sdt.sourceline or line, event_id)
    date = sdt.get("broadcastDate", "").strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise BxfError(
            f"broadcastDate {date!r} is not YYYY-MM-DD", "SmpteDateTime", sdt.sourceline or line, event_id
        )
    dur = path(data, "LengthOption", "Duration", "SmpteDuration", "SmpteTimeCode")
    if dur is None or not text(dur):
        raise BxfError(
            "has no LengthOption/Duration/SmpteDuration/SmpteTimeCode", "EventData", data.sourceline or line,
            event_id,
        )  # fmt: skip
    content = child(se, "Content")
    house = text(path(content, "ContentId", "HouseNumber")) if content is not None else ""
    name = text(child(content, "Name")) if content is not None else ""
    return BxfEvent(
        event_id=event_id,
        primary=True,
        line=line,
        broadcast_date=date,
        start_label=text(tc),
        duration_label=text(dur),
        frame_rate=(tc.get("frameRate") or "").strip(),
        house_number=house,
        name=name,
    )
