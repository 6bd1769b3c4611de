"""What a `Range` header asks of a blob of known size (RFC 9110), decided without I/O.

- no `Range`, a unit other than bytes, or several ranges: the whole blob (200; a server may
  ignore a Range it does not serve, and a multipart answer helps no registry client);
- `If-Range` naming another entity tag: the whole blob too;
- one satisfiable range: those bytes (206);
- one range that cannot be satisfied (`bytes=-0`, a start at or past the end): 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    stop: int  # exclusive

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class Unsatisfiable(Exception):
    pass


def wanted(range_header: str | None, if_range: str | None, etag: str, size: int) -> Window | None:
    """The window to send, None for the whole blob; raises Unsatisfiable for a 416."""
    if not range_header:
        return None
    if if_range is not None and if_range.strip() != etag:
        # Another entity tag, or a date: content-addressed bytes have no other version,
        # but the client's copy is not known to be this one, so it gets the whole blob.
        return None
    if "," in range_header:
        return None
    match = _SINGLE.match(range_header)
    if match is None:
        return None
    first, last = match.groups()
    if (not first and not last) or len(first) > 18 or len(last) > 18:
        return None
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return Window(max(size - suffix, 0), size)
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range-spec is ignored, not refused
    if start >= size:
        raise Unsatisfiable
    stop = size if not last else min(int(last) + 1, size)
    return Window(start, stop)
