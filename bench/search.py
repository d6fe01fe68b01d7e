"""The search for the end-to-end steady rate: brackets it, then bisects, in a bounded number of probes.

Pure logic: a probe is any function from an offered rate (events/s) to an `Outcome`
(`bench/pipeline.py` offers the rate to the real web + worker for a few seconds). The
search keeps the highest steady rate and the lowest unsteady one seen so far:

- while nothing was unsteady, it doubles the rate (from a first probe that was too low);
- while nothing was steady, it goes down: to just under the rate the fold kept up with
  beside that ingest, when the probe measured one and it is within a factor `down` of the
  rate, else by the factor `down` (from a first probe that was too high: the 0/s that
  `bin/bench` once printed came from a search that stopped there);
- once both are known, it bisects, and stops when they are within `tolerance`.

The fold's rate beside an ingest rate that grew the backlog is a steady rate itself
(less ingest leaves the fold at least as much of the machine), which is why it is a
good next guess; a guess is only a guess, though: each one is probed like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

UP = 2.0
DOWN = 0.5
TOLERANCE = 0.08  # stop once the steady and unsteady rates are within 8% of the latter
HINT_MARGIN = 0.95  # the next probe just under the fold's rate beside the last ingest
SAWTOOTH_EVENTS = 1000  # how far the backlog moves up and down while it keeps up


@dataclass(frozen=True)
class Outcome:
    """What one probe saw: whether the rate was steady, and what the fold kept up with."""

    steady: bool
    # Events/s the fold folded during the probe, when the backlog grew (its rate beside
    # that ingest); None when unknown or when the probe was steady.
    folded_rate: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Search:
    """The probes made, in order, and what they found."""

    probes: list[tuple[float, Outcome]]
    rate: float  # the highest steady rate (0 if none was steady)
    unsteady: float | None  # the lowest unsteady rate, if any
    converged: bool  # both known and within the tolerance

    @property
    def summary(self) -> str:
        return ", ".join(f"{rate:.0f}/s {'steady' if o.steady else 'growing'}" for rate, o in self.probes)


def is_steady(rate: float, answered: float, growth: float, grown: int, seconds: float) -> bool:
    """Whether a probe kept up: answered at the offered rate, and the backlog did not grow.

    `growth` is the backlog's slope over the probe's second half (events/s), `grown` its
    size after the probe minus before. The backlog is a saw-tooth (requests add up to 100
    events at once, the fold takes up to 1,000 a batch), so its slope is judged against
    3% of the rate or 1,000 events over that half, whichever is more, and what it grew
    against 2,000 events or one second of the rate: at 1,000 events/s a slope of 70/s
    over 4 s is the saw-tooth, not growth.
    """
    half = seconds / 2
    return (
        answered >= 0.97 * rate
        and growth * half <= max(0.03 * rate * half, SAWTOOTH_EVENTS)
        and grown <= max(2 * SAWTOOTH_EVENTS, rate)
    )


def next_rate(low: float, high: float | None, last: Outcome, up: float = UP, down: float = DOWN) -> float:
    """The rate to probe next, given the highest steady (0: none) and lowest unsteady (None: none)."""
    if high is None:
        return low * up
    if low == 0.0:
        hint = last.folded_rate
        if not last.steady and hint is not None and down * high <= HINT_MARGIN * hint < high:
            return HINT_MARGIN * hint
        return high * down
    return (low + high) / 2


def find_steady_rate(
    probe: Callable[[float], Outcome],
    first: float,
    probes: int,
    *,
    tolerance: float = TOLERANCE,
    up: float = UP,
    down: float = DOWN,
    time_left: Callable[[], bool] = lambda: True,
) -> Search:
    """The highest steady rate in at most `probes` probes, starting from `first`.

    `time_left` is asked before every probe after the first: the search stops when it
    says no (the caller's time budget), with what it found so far.
    """
    if first <= 0:
        raise ValueError("the first probe must offer a positive rate")
    made: list[tuple[float, Outcome]] = []
    low, high = 0.0, None
    rate = first
    for n in range(probes):
        if n and not time_left():
            break
        outcome = probe(rate)
        made.append((rate, outcome))
        if outcome.steady:
            low = max(low, rate)
        else:
            high = rate if high is None else min(high, rate)
        if converged(low, high, tolerance):
            break
        rate = next_rate(low, high, outcome, up, down)
    return Search(made, low, high, converged(low, high, tolerance))


def converged(low: float, high: float | None, tolerance: float = TOLERANCE) -> bool:
    return low > 0 and high is not None and high - low <= tolerance * high
