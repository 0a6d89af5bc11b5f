"""The M3U playlist IPTV tuners (Jellyfin, Plex through xTeVe/Threadfin, Kodi)
read: `#EXTM3U url-tvg=...`, then one `#EXTINF` per channel with a stream_url,
its tvg-id the XMLTV channel id (how Jellyfin matches a stream to its guide).
Declared metadata cannot break a line or a quoted attribute (domain.channels
refuses control characters and double quotes)."""

from __future__ import annotations

from collections.abc import Iterable

from playlog.domain.channels import display_name_of, guide_id_of
from playlog.domain.model import Channel


def playlist(channels: Iterable[Channel], xmltv_url: str) -> bytes:
    lines = [f'#EXTM3U url-tvg="{xmltv_url}"']
    for c in channels:
        m = c.metadata
        if not m.stream_url:
            continue
        name = display_name_of(c)
        attrs = [f'tvg-id="{guide_id_of(c)}"']
        if m.guide_number:
            attrs.append(f'tvg-chno="{m.guide_number}"')
        attrs.append(f'tvg-name="{name}"')
        if m.icon_url:
            attrs.append(f'tvg-logo="{m.icon_url}"')
        lines.append(f"#EXTINF:-1 {' '.join(attrs)},{name}")
        lines.append(m.stream_url)
    return ("\n".join(lines) + "\n").encode()
