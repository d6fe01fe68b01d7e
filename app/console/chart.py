"""The journey at a glance: a customer's events per day over the last 90 days, as inline SVG.

Drawn on the server from numbers (the events of each day, as `store.feed.read_activity`
counts them, and the recent visits the page lists), so the page needs no script for it
and the console's CSP is unchanged: no `style` attribute and no `<style>` element
(`style-src 'self'` would refuse both), only classes, which console.css paints. Every
piece of text goes through markupsafe's `escape`, although all of it is made here from
numbers and instants.

The page does not know the agent's time zone (the console's script puts times in it in
the browser), so the days are UTC days, and the chart says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from schemas.api import VISIT_GAP

DAYS = 90
DAY = timedelta(days=1)

# The drawing, in the SVG's own units (it scales to the page's width): a column per day.
COLUMN = 10
BAR = 8
TOP = 16  # room for the scale's label above the tallest bar
PLOT = 80  # the tallest bar
BASE = TOP + PLOT  # the baseline
LANE = BASE + 4  # the visits' marks, under the baseline
MARK = 7
LABELS = LANE + MARK + 14  # the dates' text baseline
HEIGHT = LABELS + 4


def day_bounds(now: datetime, days: int = DAYS) -> list[datetime]:
    """The UTC days of the chart: `days + 1` midnights, the first day's start to today's end."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - (days - 1) * DAY
    return [first + n * DAY for n in range(days + 1)]


@dataclass(frozen=True)
class VisitMark:
    """A visit as the chart marks it: its span, what it held, whether it still goes on."""

    start: datetime
    end: datetime
    events: int
    pages: int
    current: bool


def visit_marks(visits: Sequence[Mapping[str, Any]], now: datetime) -> list[VisitMark]:
    """The visits the page lists (newest first, as `read_visits` answers them) as marks.
    The newest is the current one while it can still go on: its last event less than
    the gap that ends a visit (30 minutes) ago."""
    marks = []
    for n, visit in enumerate(visits):
        current = n == 0 and now - visit["end"] < VISIT_GAP
        marks.append(VisitMark(visit["start"], visit["end"], visit["events"], visit["pages"], current))
    return marks


def _day_text(day: datetime) -> str:
    return f"{day:%a}, {day:%b} {day.day}, {day.year}"


def _short_day(day: datetime) -> str:
    return f"{day:%b} {day.day}"


def _events(count: int) -> str:
    return "no events" if count == 0 else "1 event" if count == 1 else f"{count:,} events"


def _clock(instant: datetime) -> str:
    return f"{instant.astimezone(UTC):%H:%M}"


def _visit_text(mark: VisitMark) -> str:
    start = mark.start.astimezone(UTC)
    held = f"{_events(mark.events)}, {mark.pages} page{'' if mark.pages == 1 else 's'}"
    if mark.current:
        return f"Current visit, since {_short_day(start)} {_clock(start)} UTC: {held}"
    return f"Visit {_short_day(start)} {_clock(start)}–{_clock(mark.end)} UTC: {held}"


def summary(bounds: Sequence[datetime], counts: Sequence[int], marks: Sequence[VisitMark]) -> str:
    """The chart in one sentence: its accessible name, and the tooltip of the whole."""
    span = f"{_short_day(bounds[0])} – {_short_day(bounds[-2])}, {bounds[-2].year}, UTC days"
    total = sum(counts)
    if total == 0:
        text = f"No events in the last {len(counts)} days ({span})."
    else:
        active = sum(1 for count in counts if count)
        busiest = max(range(len(counts)), key=lambda n: (counts[n], n))
        text = (
            f"{_events(total).capitalize()} in the last {len(counts)} days ({span}), on "
            f"{active} day{'' if active == 1 else 's'}; the most, {counts[busiest]:,}, "
            f"on {_short_day(bounds[busiest])}."
        )
    if marks:
        current = [mark for mark in marks if mark.current]
        text += f" {len(marks)} recent visit{'' if len(marks) == 1 else 's'} marked"
        text += f", the current one since {_clock(current[0].start)} UTC." if current else "."
    return text


def render(bounds: Sequence[datetime], counts: Sequence[int], marks: Sequence[VisitMark] = ()) -> Markup:
    """The chart's SVG: a bar per day with events (height by count, linear from zero, at
    least 2 units so a day of one event shows beside a day of thousands), every day's
    column titled with its date and count, and each recent visit the page lists marked
    under the baseline from its start to its end (the current one apart).

    Built as plain strings (a page's 90 columns through `Markup.format` cost milliseconds):
    every number is an int or float formatted here, and every piece of text passes
    through `escape`; the whole is marked safe once."""
    if len(bounds) != len(counts) + 1:
        raise ValueError("one count per day: len(bounds) must be len(counts) + 1")
    days = len(counts)
    width = days * COLUMN
    most = max(counts, default=0)
    parts = [
        f'<svg class="activity" id="activity" viewBox="0 0 {width} {HEIGHT}" width="{width}" '
        f'height="{HEIGHT}" role="img" aria-labelledby="activity-summary" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="activity-summary">{escape(summary(bounds, counts, marks))}</title>',
        f'<line class="axis" x1="0" y1="{BASE}" x2="{width}" y2="{BASE}"/>',
    ]
    if most:
        parts.append(f'<line class="grid" x1="0" y1="{TOP}" x2="{width}" y2="{TOP}"/>')
        parts.append(f'<text class="scale" x="0" y="{TOP - 4}">{escape(_events(most))} a day</text>')
    else:
        parts.append(
            f'<text class="empty" x="{width // 2}" y="{TOP + PLOT // 2}" text-anchor="middle">'
            f"No events in the last {days} days</text>"
        )
    months = [n for n in range(1, days) if bounds[n].day == 1]
    # Each month's first day a faint line up the chart, under the bars.
    parts += [
        f'<line class="month" x1="{n * COLUMN}" y1="{TOP}" x2="{n * COLUMN}" y2="{BASE}"/>' for n in months
    ]
    for n, count in enumerate(counts):
        day = bounds[n]
        x = n * COLUMN
        parts.append(
            f'<g class="day" data-day="{day.date().isoformat()}" data-events="{count}">'
            f"<title>{escape(_day_text(day))}: {escape(_events(count))}</title>"
            f'<rect class="slot" x="{x}" y="0" width="{COLUMN}" height="{BASE}"/>'
        )
        if count:
            height = max(2, round(count * PLOT / most))
            parts.append(
                f'<rect class="bar" x="{x + (COLUMN - BAR) // 2}" y="{BASE - height}" '
                f'width="{BAR}" height="{height}"/>'
            )
        parts.append("</g>")
    parts += _visit_marks(bounds, marks, width)
    parts += _date_labels(bounds, months, width)
    parts.append("</svg>")
    return Markup("".join(parts))


def _x(bounds: Sequence[datetime], instant: datetime, width: int) -> float:
    """Where an instant falls on the chart's time axis, clamped to it."""
    whole = (bounds[-1] - bounds[0]).total_seconds()
    at = (instant - bounds[0]).total_seconds() / whole * width
    return min(max(at, 0.0), float(width))


def _visit_marks(bounds: Sequence[datetime], marks: Sequence[VisitMark], width: int) -> list[str]:
    out = []
    # Oldest first, so the current visit is drawn last, on top.
    for mark in reversed(marks):
        if mark.end < bounds[0] or mark.start >= bounds[-1]:
            continue
        left = _x(bounds, mark.start, width)
        right = max(_x(bounds, mark.end, width), left + 4)
        if right > width:
            left, right = width - (right - left), float(width)
        current = " current" if mark.current else ""
        out.append(
            f'<rect class="visit{current}" x="{left:.1f}" y="{LANE}" width="{right - left:.1f}" '
            f'height="{MARK}"><title>{escape(_visit_text(mark))}</title></rect>'
        )
    return out


def _date_labels(bounds: Sequence[datetime], months: Sequence[int], width: int) -> list[str]:
    """The first day and today under the axis, and the first day of each month (the days
    `months`) where its name does not crowd another."""
    days = len(bounds) - 1
    labels = [f'<text class="date" x="0" y="{LABELS}">{escape(_short_day(bounds[0]))}</text>']
    for n in months:
        if 5 <= n <= days - 9:  # clear of the first day's name, and of "today"
            text = escape(_short_day(bounds[n]))
            labels.append(f'<text class="date" x="{n * COLUMN}" y="{LABELS}">{text}</text>')
    labels.append(f'<text class="date" x="{width}" y="{LABELS}" text-anchor="end">today</text>')
    return labels
