"""The overview's traffic chart as inline SVG, drawn on the server: no script, no CDN
(docs/operators.md#the-tenant-overview).

Pure: hourly buckets in, markup and text out. Every piece of text that reaches the markup is
escaped here (``html.escape``), so a caller may mark the result safe.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

ALLOWED_COLOUR = "#2e7d32"  # the audit log's badges
DENIED_COLOUR = "#c62828"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Geometry (SVG user units; the drawing scales to its container through the viewBox).
_SLOT = 5  # one hour
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 34, 40
_PLOT_HEIGHT = 190


@dataclass(frozen=True)
class HourBucket:
    """Exchanges in the hour starting at ``start`` (aware, UTC, on the hour)."""

    start: datetime
    allowed: int = 0
    denied: int = 0

    @property
    def total(self) -> int:
        return self.allowed + self.denied


@dataclass(frozen=True)
class DayTotal:
    day: date
    allowed: int
    denied: int


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _hour_text(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:00} UTC"


def day_label(day: date) -> str:
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"


def axis_top(peak: int) -> tuple[int, int]:
    """(top of the y axis, step between its gridlines): the step is 1, 2 or 5 × 10^k, at most
    four steps reach ``peak``, and the axis never ends below 1."""
    step = 1
    while -(-max(peak, 1) // step) > 4:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step * -(-max(peak, 1) // step), step


def daily_totals(buckets: Sequence[HourBucket]) -> list[DayTotal]:
    days: dict[date, list[int]] = {}
    for bucket in buckets:
        totals = days.setdefault(bucket.start.date(), [0, 0])
        totals[0] += bucket.allowed
        totals[1] += bucket.denied
    return [DayTotal(day, allowed, denied) for day, (allowed, denied) in days.items()]


def traffic_summary(buckets: Sequence[HourBucket]) -> str:
    """The chart in one sentence, for its ``<desc>`` and for the page beside it."""
    if not buckets:
        return "No hours to show."
    allowed = sum(b.allowed for b in buckets)
    denied = sum(b.denied for b in buckets)
    span = f"{len(buckets)} hours from {_hour_text(buckets[0].start)} to {_hour_text(buckets[-1].start)}"
    if allowed + denied == 0:
        return f"No exchanges in the {span}."
    busiest = max(buckets, key=lambda b: (b.total, b.start))
    return (
        f"{allowed + denied:,} exchanges in the {span}: {allowed:,} allowed, {denied:,} denied. "
        f"Busiest hour: {_hour_text(busiest.start)}, {busiest.total:,} exchanges "
        f"({busiest.allowed:,} allowed, {busiest.denied:,} denied)."
    )


def _y_axis(top: int, step: int, width: int) -> list[str]:
    parts = []
    for value in range(0, top + 1, step):
        y = _TOP + _PLOT_HEIGHT - value * _PLOT_HEIGHT / top
        parts.append(
            f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" '
            f'stroke-opacity="{0.5 if value == 0 else 0.15}"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(f"{value:,}")}</text>'
        )
    middle = _TOP + _PLOT_HEIGHT / 2
    parts.append(
        f'<text transform="translate(12 {middle:.1f}) rotate(-90)" text-anchor="middle">exchanges per hour</text>'
    )
    return parts


def _x_axis(buckets: Sequence[HourBucket]) -> list[str]:
    """A line at each midnight (UTC) and each day's label under the middle of its hours."""
    parts: list[str] = []
    bottom = _TOP + _PLOT_HEIGHT
    first_of_day: dict[date, int] = {}
    hours_of_day: dict[date, int] = {}
    for index, bucket in enumerate(buckets):
        first_of_day.setdefault(bucket.start.date(), index)
        hours_of_day[bucket.start.date()] = hours_of_day.get(bucket.start.date(), 0) + 1
    for day, index in first_of_day.items():
        x = _LEFT + index * _SLOT
        if buckets[index].start.hour == 0:
            parts.append(
                f'<line class="jwtex-day-tick" x1="{x}" x2="{x}" y1="{_TOP}" y2="{bottom + 6}" '
                'stroke="currentColor" stroke-opacity="0.3"/>'
            )
        if hours_of_day[day] >= 8:  # room for the label
            centre = x + hours_of_day[day] * _SLOT / 2
            parts.append(
                f'<text class="jwtex-day" x="{centre:.1f}" y="{bottom + 18}" '
                f'text-anchor="middle">{_e(day_label(day))}</text>'
            )
    width = _LEFT + len(buckets) * _SLOT + _RIGHT
    parts.append(f'<text x="{width / 2:.1f}" y="{bottom + 34}" text-anchor="middle">day (UTC)</text>')
    return parts


def _bars(buckets: Sequence[HourBucket], top: int) -> list[str]:
    """Stacked bars, allowed below and denied above; an empty hour draws nothing. Each hour's
    ``<title>`` is its tooltip in any browser, without script."""
    parts = []
    bottom = _TOP + _PLOT_HEIGHT
    for index, bucket in enumerate(buckets):
        if not bucket.total:
            continue
        x = _LEFT + index * _SLOT + 0.5
        tip = f"{_hour_text(bucket.start)}: {bucket.allowed:,} allowed, {bucket.denied:,} denied"
        rects, base = [], float(bottom)
        for count, series, colour in (
            (bucket.allowed, "allowed", ALLOWED_COLOUR),
            (bucket.denied, "denied", DENIED_COLOUR),
        ):
            if count:
                height = count * _PLOT_HEIGHT / top
                base -= height
                rects.append(
                    f'<rect class="jwtex-bar-{series}" x="{x}" y="{base:.2f}" width="{_SLOT - 1}" '
                    f'height="{height:.2f}" fill="{colour}"/>'
                )
        parts.append(f"<g><title>{_e(tip)}</title>{''.join(rects)}</g>")
    return parts


def _legend() -> str:
    items = []
    for offset, (series, colour) in enumerate((("allowed", ALLOWED_COLOUR), ("denied", DENIED_COLOUR))):
        x = _LEFT + offset * 90
        items.append(
            f'<rect x="{x}" y="10" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 17}" y="20">{_e(series)}</text>'
        )
    return f'<g class="jwtex-legend">{"".join(items)}</g>'


def traffic_chart_svg(buckets: Sequence[HourBucket], *, title: str, chart_id: str = "traffic-chart") -> str:
    """Allowed and denied exchanges per hour as stacked bars, with day labels, a y axis, a
    legend, and a ``<title>``/``<desc>`` that screen readers announce (the ``<desc>`` is
    ``traffic_summary``)."""
    top, step = axis_top(max((b.total for b in buckets), default=0))
    width = _LEFT + len(buckets) * _SLOT + _RIGHT
    height = _TOP + _PLOT_HEIGHT + _BOTTOM
    ident = _e(chart_id)
    body = [*_y_axis(top, step, width), *_x_axis(buckets), *_bars(buckets, top), _legend()]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{ident}" class="jwtex-chart" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" font-family="sans-serif" font-size="11" fill="currentColor">'
        f'<title id="{ident}-title">{_e(title)}</title><desc id="{ident}-desc">{_e(traffic_summary(buckets))}</desc>'
        + "".join(body)
        + "</svg>"
    )
