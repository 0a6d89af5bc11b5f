"""XMLTV (the XMLTV project's xmltv.dtd), as Plex, Jellyfin, Emby and IPTV
players read it: a <channel> for every channel, then the programmes, each
with start and stop as `YYYYMMDDhhmmss +0000` (Jellyfin's parser refuses zone
names) and its children in the DTD's order (title first).

Written as text, not through a tree: the document is a few megabytes, made
once per content, and every string passes through `text` (escaped, and with
the characters XML 1.0 cannot carry replaced), so no input makes it invalid.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

from playlog.domain.channels import display_name_of, guide_id_of
from playlog.domain.guide import Programme
from playlog.domain.model import Channel

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<tv generator-info-name="playlog" source-info-name="playlog">\n'
)
FOOTER = "</tv>\n"
# What XML 1.0 cannot carry (C0 controls but tab, CR, LF; surrogates; U+FFFE, U+FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value))


def attribute(value: str) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", value))


@functools.lru_cache(maxsize=65536)  # a programme's stop is the next one's start
def xmltv_time(utc_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(utc_ms // 1000, datetime.UTC)
    return moment.strftime("%Y%m%d%H%M%S") + " +0000"


def channel_element(channel: Channel) -> str:
    m = channel.metadata
    names = [display_name_of(channel)]
    if m.guide_number:
        names.append(m.guide_number)  # consumers match on a number display-name too
    out = [f"  <channel id={attribute(guide_id_of(channel))}>\n"]
    out += [f"    <display-name>{text(n)}</display-name>\n" for n in names]
    if m.icon_url:
        out.append(f"    <icon src={attribute(m.icon_url)}/>\n")
    out.append("  </channel>\n")
    return "".join(out)


def programme_elements(channel: Channel, programmes: Iterable[Programme]) -> str:
    channel_attr = attribute(guide_id_of(channel))
    return "".join(
        f'  <programme start="{xmltv_time(p.start_utc_ms)}" stop="{xmltv_time(p.end_utc_ms)}" '
        f"channel={channel_attr}>\n"
        f"    <title>{text(p.title or p.program_id or 'Untitled')}</title>\n"
        "  </programme>\n"
        for p in programmes
    )


def document(channel_elements: Iterable[str], programme_fragments: Iterable[str]) -> bytes:
    return (HEADER + "".join(channel_elements) + "".join(programme_fragments) + FOOTER).encode()
