"""Progress lines: plain in logs, with the rate since the start."""

from __future__ import annotations

import io

from audit.progress import Progress, format_rate


def test_plain_lines_every_ten_percent_with_the_rate(monkeypatch):
    clock = iter([100.0, 102.0, 104.0, 110.0])
    monkeypatch.setattr("audit.progress.time.monotonic", lambda: next(clock))
    stream = io.StringIO()
    with Progress("Embedding (dlib)", 40, stream=stream) as bar:
        bar.advance(8)
        bar.advance(1)             # 22%: no line, less than 10 points since the last
        bar.advance(31)
    assert stream.getvalue().splitlines() == [
        "Embedding (dlib): 8/40 (20%, 2s, 4.0 images/s)",
        "Embedding (dlib): 40/40 (100%, 4s, 10.0 images/s)",
    ]


def test_rate_format():
    assert format_rate(10, 0.0) == "- images/s"
    assert format_rate(5, 2.0, "requests") == "2.5 requests/s"
    assert format_rate(1234, 2.0) == "617 images/s"
