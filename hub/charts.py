"""Bars drawn on the server as SVG: no script, nothing fetched from elsewhere, readable with styles off
(each bar has a title). The review and audit pages draw their activity with it."""

from django.utils.html import escape

WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 720, 180, 12, 28, 36
COLOURS = {"downloads": "#2456c9", "requests": "#e08a1e"}


def svg(chart: dict) -> str:
    """Two bars a day, downloads and requests, on one scale, with the first and last days named."""
    days, series = chart["days"], {name: chart[name] for name in COLOURS}
    highest = max([1, *series["downloads"], *series["requests"]])
    slot = (WIDTH - LEFT) / len(days)
    bar = max(slot / 2 - 1, 1)
    plot = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="downloads and access requests per day, last {len(days)} days" class="activity">',
        f'<text x="0" y="{TOP + 8}" font-size="11" fill="#667085">{highest}</text>',
        f'<text x="0" y="{HEIGHT - BOTTOM}" font-size="11" fill="#667085">0</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" stroke="#c5ccd6"/>',
    ]
    for index, day in enumerate(days):
        for offset, (name, values) in enumerate(series.items()):
            height = plot * values[index] / highest
            x = LEFT + index * slot + offset * (bar + 1)
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - height:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{COLOURS[name]}"><title>{day:%Y-%m-%d}: {values[index]} {name}</title></rect>'
            )
    for index, anchor in ((0, "start"), (len(days) - 1, "end")):
        x = LEFT + index * slot + (slot if anchor == "end" else 0)
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="11" text-anchor="{anchor}" fill="#667085">'
            f"{escape(days[index].isoformat())}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
