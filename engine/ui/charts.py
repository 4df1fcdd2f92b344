"""Charts drawn on the server as SVG: no script, no inline style (colours come from the
stylesheet's ``series-N`` classes, so they follow the light or dark theme)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

#: Colours the stylesheet defines (``series-0`` ...); more sources reuse them in turn.
SERIES = 8

_WIDTH, _HEIGHT = 1100, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 10, 24


@dataclass(frozen=True)
class Legend:
    source: str
    total: int
    series: int


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k that is at least ``value`` (1 for 0)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def legend(activity: Mapping[str, Any]) -> list[Legend]:
    return [Legend(source, sum(counts), i % SERIES) for i, (source, counts) in enumerate(activity["sources"].items())]


def events_chart(activity: Mapping[str, Any]) -> Markup:
    """Events per minute by source (``operations.activity``) as stacked bars, one per
    minute, each part titled with its source, minute and count."""
    sources: dict[str, list[int]] = activity["sources"]
    minutes = int(activity["minutes"])
    start = datetime.fromisoformat(str(activity["start"]).replace("Z", "+00:00"))
    totals = [sum(series[m] for series in sources.values()) for m in range(minutes)]
    top = nice_ceiling(max(totals, default=0))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / minutes
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="Events per minute by source, the last {minutes} minutes">'
    ]
    for fraction in (0.0, 0.5, 1.0) if top % 2 == 0 else (0.0, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        label = f"{top * fraction:,.0f}"
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for m in range(minutes):
        base = 0
        at = (start + timedelta(minutes=m)).strftime("%H:%M")
        for i, (source, series) in enumerate(sources.items()):
            count = series[m]
            if not count:
                continue
            height = plot_h * count / top
            y = _TOP + plot_h * (1 - (base + count) / top)
            x = _LEFT + m * slot + slot * 0.1
            parts.append(
                f'<rect class="series-{i % SERIES}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{slot * 0.8:.1f}" height="{max(height, 0.5):.1f}">'
                f"<title>{escape(source)}: {count} at {at} UTC</title></rect>"
            )
            base += count
    for m, anchor in ((0, "start"), (minutes // 2, "middle"), (minutes - 1, "end")):
        x = _LEFT + m * slot + (slot if anchor == "end" else 0 if anchor == "start" else slot / 2)
        label = (start + timedelta(minutes=m)).strftime("%H:%M") + (" UTC" if anchor == "end" else "")
        parts.append(f'<text class="axis" x="{x:.1f}" y="{_HEIGHT - 6}" text-anchor="{anchor}">{label}</text>')
    if not sources:
        parts.append(
            f'<text class="empty" x="{_WIDTH / 2}" y="{_TOP + plot_h / 2}" text-anchor="middle">'
            "No events in this hour</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
