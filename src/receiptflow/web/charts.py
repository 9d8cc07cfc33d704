"""Charts as inline SVG, drawn on the server (pure): no script, no file fetched from anywhere.

One kind is enough for every page: horizontal bars with the value written at each bar's end, and
optionally a dashed mark per bar (a recommendation to compare with). Each chart is an ``img`` for
assistive technology, named by its title; the page always shows the same figures in a table too,
so the chart adds a picture, never information that only the picture holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

ROW = 26
LABEL_W = 190
BAR_W = 300
TEXT_W = 110
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    text: str  # the value as the page writes it
    mark: float | None = None  # a reference value drawn as a dashed line


def bar_chart(title: str, bars: Sequence[Bar]) -> Markup:
    """A horizontal bar chart of ``bars`` (values ≥ 0) as an SVG element."""
    chart_id = f"chart-{next(_ids)}"
    top = max([b.value for b in bars] + [b.mark or 0 for b in bars] + [0])
    scale = BAR_W / top if top > 0 else 0.0
    height = ROW * max(len(bars), 1) + 8
    width = LABEL_W + BAR_W + TEXT_W
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="{chart_id}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}">{escape(title)}</title>',
    ]
    for i, b in enumerate(bars):
        y = 4 + i * ROW
        w = max(b.value, 0) * scale
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 17}" text-anchor="end" class="label">{escape(b.label)}</text>'
            f'<rect x="{LABEL_W}" y="{y + 4}" width="{w:.1f}" height="{ROW - 8}" class="bar"/>'
            f'<text x="{LABEL_W + w + 6:.1f}" y="{y + 17}" class="value">{escape(b.text)}</text>'
        )
        if b.mark is not None:
            x = LABEL_W + b.mark * scale
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + ROW}" class="mark" stroke-dasharray="4 3"/>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text inside went through escape()
