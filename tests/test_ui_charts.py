"""engine/ui/charts.py: the SVG of events per minute by source."""

from __future__ import annotations

import re

import pytest

from engine.ui.charts import SERIES, events_chart, legend, nice_ceiling


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (480, 500), (501, 1000)]
)
def test_nice_ceiling(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def activity(sources: dict[str, list[int]]) -> dict[str, object]:
    return {"start": "2026-11-03T13:03:00Z", "minutes": 4, "sources": sources}


def test_bars_stack_by_source_and_carry_their_numbers_as_text() -> None:
    svg = str(events_chart(activity({"github": [0, 2, 0, 1], "hover": [3, 2, 0, 0]})))
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert titles == [
        "hover: 3 at 13:03 UTC",
        "github: 2 at 13:04 UTC",
        "hover: 2 at 13:04 UTC",
        "github: 1 at 13:06 UTC",
    ]
    assert re.findall(r'class="axis"[^>]*>([^<]*)<', svg) == [
        "0",
        "5",
        "13:03",
        "13:05",
        "13:06 UTC",
    ]  # 4 at most: up to 5
    assert "style=" not in svg and "<script" not in svg  # the stylesheet colours it; nothing inline
    heights = [float(h) for h in re.findall(r'<rect class="series-\d" [^>]*height="([\d.]+)"', svg)]
    assert heights[1] + heights[2] == pytest.approx(166 * 4 / 5, abs=0.2)  # the second minute: 4 of 5


def test_source_names_are_escaped_and_series_wrap() -> None:
    sources = {f"s{i}": [1, 0, 0, 0] for i in range(SERIES + 1)}
    sources["<img src=x onerror=alert(1)>"] = [1, 0, 0, 0]
    svg = str(events_chart(activity(sources)))
    assert "<img" not in svg and "&lt;img src=x onerror=alert(1)&gt;" in svg
    assert [item.series for item in legend(activity(sources))][-3:] == [SERIES - 1, 0, 1]


def test_an_empty_hour_says_so() -> None:
    svg = str(events_chart(activity({})))
    assert "No events in this hour" in svg and "<rect" not in svg
