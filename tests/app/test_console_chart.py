"""The activity chart's drawing (app/console/chart.py): numbers in, SVG out, no database.

The SVG is parsed as XML and read as an agent's browser would show it: a bar per day
with events, its height by count, a title on every day, the visits marked under the
baseline and the current one apart, and no `style` anywhere (the console's CSP).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.console import chart

NOW = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def days(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "day" in g.get("class", "").split()]


def title(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None and found.text
    return found.text


def bar(day: ET.Element) -> ET.Element | None:
    return next((r for r in day.iter(f"{SVG}rect") if r.get("class") == "bar"), None)


def visit(start: datetime, end: datetime, events: int = 3, pages: int = 1) -> dict[str, Any]:
    """A visit as `read_visits` answers it (the keys the chart reads)."""
    return {"start": start, "end": end, "events": events, "pages": pages}


def test_the_days_are_the_ninety_utc_days_ending_with_today() -> None:
    bounds = chart.day_bounds(NOW)
    assert len(bounds) == chart.DAYS + 1 == 91
    assert bounds[-2] == datetime(2026, 12, 7, tzinfo=UTC)  # today's start
    assert bounds[-1] == datetime(2026, 12, 8, tzinfo=UTC)  # its end
    assert bounds[0] == datetime(2026, 9, 9, tzinfo=UTC)
    assert all(b - a == timedelta(days=1) for a, b in zip(bounds, bounds[1:], strict=False))
    # An instant given in another zone is the same instant: its UTC day counts.
    tokyo = NOW.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))  # 8 Dec, 00:30 there
    assert chart.day_bounds(tokyo) == bounds


def test_a_bar_per_day_with_events_its_height_by_count_and_a_title_on_every_day() -> None:
    bounds = chart.day_bounds(NOW)
    counts = [0] * 90
    counts[-1], counts[-2], counts[0], counts[45] = 400, 100, 1, 200
    root = parse(chart.render(bounds, counts))
    shown = days(root)
    assert len(shown) == 90
    heights = {d.get("data-day"): float(b.get("height", "0")) for d in shown if (b := bar(d)) is not None}
    assert heights == {
        "2026-12-07": chart.PLOT,  # the busiest day is the full height
        "2026-12-06": chart.PLOT / 4,
        "2026-10-24": chart.PLOT / 2,
        "2026-09-09": 2,  # one event beside 400: at least 2 units, so it shows
    }
    # Bars stand on the baseline.
    for d in shown:
        if (b := bar(d)) is not None:
            assert float(b.get("y", "0")) + float(b.get("height", "0")) == chart.BASE
    assert title(shown[-1]) == "Mon, Dec 7, 2026: 400 events"
    assert title(shown[-2]) == "Sun, Dec 6, 2026: 100 events"
    assert title(shown[0]) == "Wed, Sep 9, 2026: 1 event"
    assert [d.get("data-events") for d in shown[-2:]] == ["100", "400"]
    scale = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "scale"]
    assert scale == ["400 events a day"]


def test_an_empty_day_has_no_bar_but_its_title_says_so() -> None:
    bounds = chart.day_bounds(NOW)
    counts = [5 if n % 2 else 0 for n in range(90)]
    root = parse(chart.render(bounds, counts))
    shown = days(root)
    empty = [d for d in shown if d.get("data-events") == "0"]
    assert len(empty) == 45
    assert all(bar(d) is None for d in empty)
    assert title(empty[0]) == "Wed, Sep 9, 2026: no events"
    # Each day keeps a column to hover, empty or not: the title's target.
    assert all(any(r.get("class") == "slot" for r in d.iter(f"{SVG}rect")) for d in shown)


def test_the_listed_visits_are_marked_under_the_baseline_and_the_current_one_apart() -> None:
    bounds = chart.day_bounds(NOW)
    counts = [0] * 90
    counts[-1], counts[-3] = 20, 7
    listed = [  # newest first, as read_visits answers
        visit(NOW - timedelta(minutes=50), NOW - timedelta(minutes=10), events=12, pages=4),
        visit(NOW - timedelta(days=2, hours=1), NOW - timedelta(days=2), events=7, pages=2),
    ]
    marks = chart.visit_marks(listed, NOW)
    assert [m.current for m in marks] == [True, False]
    root = parse(chart.render(bounds, counts, marks))
    rects = [r for r in root.iter(f"{SVG}rect") if "visit" in r.get("class", "").split()]
    assert [r.get("class") for r in rects] == ["visit", "visit current"]  # the current one on top
    older, current = rects
    assert title(current) == "Current visit, since Dec 7 14:40 UTC: 12 events, 4 pages"
    assert title(older) == "Visit Dec 5 14:30–15:30 UTC: 7 events, 2 pages"
    for rect in rects:
        assert float(rect.get("y", "0")) > chart.BASE  # under the bars
        assert float(rect.get("width", "0")) >= 4  # a visit of minutes still shows
    # Each at its own time on the axis: the current one in today's column, the other two days back.
    assert 89 * chart.COLUMN <= float(current.get("x", "0")) < 90 * chart.COLUMN
    assert 87 * chart.COLUMN <= float(older.get("x", "0")) < 88 * chart.COLUMN
    summary = title(root)
    assert summary.endswith("2 recent visits marked, the current one since 14:40 UTC.")


def test_a_visit_is_current_only_while_it_can_still_go_on() -> None:
    thirty_one = [visit(NOW - timedelta(hours=1), NOW - timedelta(minutes=31))]
    assert [m.current for m in chart.visit_marks(thirty_one, NOW)] == [False]
    twenty_nine = [visit(NOW - timedelta(hours=1), NOW - timedelta(minutes=29))]
    assert [m.current for m in chart.visit_marks(twenty_nine, NOW)] == [True]
    root = parse(chart.render(chart.day_bounds(NOW), [1] * 90, chart.visit_marks(thirty_one, NOW)))
    assert [r.get("class") for r in root.iter(f"{SVG}rect") if "visit" in r.get("class", "")] == ["visit"]
    assert title(root).endswith("1 recent visit marked.")


def test_a_visit_older_than_the_window_is_not_marked() -> None:
    old = [visit(NOW - timedelta(days=200, hours=1), NOW - timedelta(days=200))]
    root = parse(chart.render(chart.day_bounds(NOW), [0] * 90, chart.visit_marks(old, NOW)))
    assert [r for r in root.iter(f"{SVG}rect") if "visit" in r.get("class", "")] == []


def test_a_customer_with_no_events_in_ninety_days_gets_an_empty_chart_that_says_so() -> None:
    root = parse(chart.render(chart.day_bounds(NOW), [0] * 90))
    assert [bar(d) for d in days(root)] == [None] * 90
    assert title(root) == "No events in the last 90 days (Sep 9 – Dec 7, 2026, UTC days)."
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "empty"] == [
        "No events in the last 90 days"
    ]
    assert [t for t in root.iter(f"{SVG}text") if t.get("class") == "scale"] == []


def test_the_summary_names_the_chart_for_a_screen_reader() -> None:
    counts = [0] * 90
    counts[10], counts[80] = 3, 9
    root = parse(chart.render(chart.day_bounds(NOW), counts))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "activity-summary"
    assert title(root) == (
        "12 events in the last 90 days (Sep 9 – Dec 7, 2026, UTC days), on 2 days; the most, 9, on Nov 28."
    )


def test_dates_under_the_axis_first_day_months_and_today_where_they_fit() -> None:
    root = parse(chart.render(chart.day_bounds(NOW), [0] * 90))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "date"]
    # Dec 1 is a line up the chart but not named: its name would run into "today"'s.
    assert labels == ["Sep 9", "Oct 1", "Nov 1", "today"]
    months = [float(line.get("x1", "0")) for line in root.iter(f"{SVG}line") if line.get("class") == "month"]
    assert months == [22 * chart.COLUMN, 53 * chart.COLUMN, 83 * chart.COLUMN]
    roomy = parse(chart.render(chart.day_bounds(datetime(2026, 12, 20, tzinfo=UTC)), [0] * 90))
    labels = [t.text for t in roomy.iter(f"{SVG}text") if t.get("class") == "date"]
    assert labels == ["Sep 22", "Oct 1", "Nov 1", "Dec 1", "today"]


def test_no_style_attribute_or_element_and_only_our_own_markup() -> None:
    counts = list(range(90))
    marks = chart.visit_marks([visit(NOW - timedelta(minutes=5), NOW)], NOW)
    markup = str(chart.render(chart.day_bounds(NOW), counts, marks))
    root = parse(markup)
    for element in root.iter():
        assert "style" not in element.attrib
        assert not any(name.startswith("on") for name in element.attrib)
        assert element.tag.removeprefix(SVG) in {"svg", "title", "g", "rect", "line", "text"}
    assert "<style" not in markup and "<script" not in markup and "href" not in markup


def test_counts_must_match_the_days() -> None:
    with pytest.raises(ValueError):
        chart.render(chart.day_bounds(NOW), [0] * 89)
