"""What a send used of a file, by the position asyncio leaves behind (`frontend/sent.py`)."""

from __future__ import annotations

import io

from simple_registry.frontend.sent import SentBytes, progress


def test_progress_is_the_position_past_the_offset() -> None:
    file = io.BytesIO(b"x" * 1000)
    file.seek(700)
    assert progress(file, 200, 800) == 500


def test_progress_of_a_send_that_never_moved_the_file_is_zero() -> None:
    file = io.BytesIO(b"x" * 1000)  # at 0: nothing was sent from offset 300
    assert progress(file, 300, 500) == 0


def test_progress_never_exceeds_the_count_asked_for() -> None:
    file = io.BytesIO(b"x" * 1000)
    file.seek(1000)
    assert progress(file, 0, 600) == 600


def test_the_body_counts_both_ways_out() -> None:
    assert SentBytes(past_writer=10, through_writer=5).body == 15
