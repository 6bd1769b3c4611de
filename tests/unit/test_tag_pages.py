"""Reading where an upstream's next page of tags starts, from its Link header."""

from __future__ import annotations

import pytest
from simple_registry.frontend.pullthrough.tags import _next_page


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ('</v2/library/nginx/tags/list?n=2&last=1.25>; rel="next"', ("1.25", 2)),
        ('<https://r.example/v2/x/tags/list?last=b%2Bc&n=50>; rel="next"', ("b+c", 50)),
        ("</v2/x/tags/list?n=2&last=a>; rel=prev", (None, None)),
        (None, (None, None)),
    ],
)
def test_the_next_page_comes_from_the_links_last_and_n(
    link: str | None, expected: tuple[str | None, int | None]
) -> None:
    assert _next_page(link) == expected
