"""The guide's file formats at the edge: XMLTV and the M3U playlist."""
