"""What a Range header asks of a blob, decided without I/O."""

from __future__ import annotations

import pytest
from simple_registry.frontend.ranges import Unsatisfiable, Window, wanted

ETAG = '"sha256:' + "a" * 64 + '"'


@pytest.mark.parametrize(
    ("header", "if_range", "window"),
    [
        (None, None, None),
        ("bytes=0-9", None, Window(0, 10)),
        ("bytes=90-", None, Window(90, 100)),
        ("bytes=-10", None, Window(90, 100)),
        ("bytes=-500", None, Window(0, 100)),
        ("bytes=95-200", None, Window(95, 100)),
        ("bytes=0-9,20-29", None, None),  # several ranges: the whole blob
        ("items=0-9", None, None),  # another unit
        ("bytes=9-0", None, None),  # an invalid range-spec is ignored
        ("bytes=0-9", ETAG, Window(0, 10)),
        ("bytes=0-9", '"sha256:other"', None),  # the client holds another entity
        ("bytes=0-9", "Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("bytes=" + "9" * 5000 + "-", None, None),  # no 5,000-digit int()
    ],
)
def test_a_range_header_is_a_window_or_the_whole_blob(
    header: str | None, if_range: str | None, window: Window | None
) -> None:
    assert wanted(header, if_range, ETAG, 100) == window


@pytest.mark.parametrize("header", ["bytes=-0", "bytes=100-", "bytes=150-200"])
def test_a_range_nothing_can_satisfy_is_a_416(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        wanted(header, None, ETAG, 100)


def test_a_window_names_its_content_range() -> None:
    assert Window(90, 100).content_range(100) == "bytes 90-99/100"
