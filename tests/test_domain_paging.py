"""The page token of paged window reads (domain/paging.py), without a server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from playlog.domain.paging import (
    MAX_WINDOW_PAGE_SIZE,
    PageCursor,
    decode_page_token,
    encode_page_token,
    page_size,
)
from playlog.domain.rejection import MalformedRequest

MS = st.integers(-(2**62), 2**62)


@given(
    st.text(min_size=1, max_size=40),
    MS,
    MS,
    st.integers(0, 2**64 - 1),
    MS,
)
def test_a_token_decodes_to_its_cursor_for_the_same_request_only(
    channel_id: str, start: int, end: int, generation: int, after: int
) -> None:
    cursor = PageCursor(generation, after)
    token = encode_page_token(channel_id, start, end, cursor)
    assert token.isascii() and "=" not in token
    assert decode_page_token(token, channel_id, start, end) == cursor
    with pytest.raises(MalformedRequest, match="another request"):
        decode_page_token(token, channel_id, start, end + 1)
    with pytest.raises(MalformedRequest, match="another request"):
        decode_page_token(token, channel_id + "x", start, end)


@pytest.mark.parametrize("token", ["", "x", "!!!!", "AAAA", "A" * 200, "AQ" + "A" * 30])
def test_a_token_that_does_not_decode_is_refused_naming_page_token(token: str) -> None:
    with pytest.raises(MalformedRequest) as refused:
        decode_page_token(token, "ch1", 0, 1)
    assert [v.field for v in refused.value.violations] == ["page_token"]


def test_page_size_is_lowered_to_the_maximum_and_never_negative() -> None:
    assert page_size(0) == 0
    assert page_size(7) == 7
    assert page_size(MAX_WINDOW_PAGE_SIZE + 1) == MAX_WINDOW_PAGE_SIZE
    with pytest.raises(MalformedRequest):
        page_size(-1)
