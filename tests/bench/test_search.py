"""The end-to-end search converges from any first probe, down as well as up (no run needed).

The probe here is a model of the pipeline, not a server: steady up to a capacity, and
beside an ingest rate above it the fold keeps up with less the more ingest takes (the
shape `bin/bench` measured: 9,677/s alone, ~2,100/s beside 8,709/s of ingest).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.search import TOLERANCE, Outcome, find_steady_rate, is_steady

CAPACITY = 5_000.0
FOLD_ALONE = 9_677.0


def pipeline(capacity: float = CAPACITY, hint: bool = True) -> tuple[list[float], Callable[[float], Outcome]]:
    offered: list[float] = []

    def probe(rate: float) -> Outcome:
        offered.append(rate)
        if rate <= capacity:
            return Outcome(steady=True)
        # The fold's share of the machine shrinks as ingest takes more of it.
        folded = max(0.0, capacity - (rate - capacity) * 0.8) if hint else None
        return Outcome(steady=False, folded_rate=folded)

    return offered, probe


def assert_found(search_rate: float, capacity: float) -> None:
    assert (1 - TOLERANCE) * capacity <= search_rate <= capacity


@pytest.mark.parametrize("hint", [True, False], ids=["fold-rate-hint", "no-hint"])
@pytest.mark.parametrize(
    "first", [8_709.0, 50_000.0, 5_001.0], ids=["too-high", "10x-too-high", "just-above"]
)
def test_a_first_probe_too_high_searches_down_and_converges(first: float, hint: bool) -> None:
    offered, probe = pipeline(hint=hint)

    search = find_steady_rate(probe, first, probes=10)

    assert not search.probes[0][1].steady
    assert min(offered) < first
    assert search.converged
    assert_found(search.rate, CAPACITY)
    assert search.unsteady is not None and search.unsteady > CAPACITY


@pytest.mark.parametrize("first", [4_000.0, 600.0, 10.0], ids=["a-little-low", "8x-too-low", "500x-too-low"])
def test_a_first_probe_too_low_searches_up_and_converges(first: float) -> None:
    offered, probe = pipeline()

    search = find_steady_rate(probe, first, probes=14)

    assert search.probes[0][1].steady
    assert max(offered) > CAPACITY
    assert search.converged
    assert_found(search.rate, CAPACITY)


def test_the_search_makes_at_most_its_probes_and_keeps_the_best_steady_rate_found() -> None:
    offered, probe = pipeline()

    search = find_steady_rate(probe, 80_000.0, probes=3)

    assert len(offered) == 3 and not search.converged
    assert search.rate == max((rate for rate in offered if rate <= CAPACITY), default=0.0)


def test_the_issue_s_first_probe_finds_a_nonzero_rate_in_the_bench_s_own_probes() -> None:
    """`bin/bench` printed 0/s when 8,709/s grew the backlog: five probes now find the rate."""
    offered, probe = pipeline(capacity=2_500.0)

    search = find_steady_rate(probe, 8_709.0, probes=5)

    assert search.rate > 0
    assert search.rate <= 2_500.0


def test_a_saw_tooth_backlog_at_a_low_rate_is_steady_and_real_growth_is_not() -> None:
    # Measured at 974 events/s of /v1/batch: slope 68/s over the second half of 8 s, 600 left.
    assert is_steady(974.0, 975.0, growth=68.2, grown=600, seconds=8)
    assert not is_steady(914.0, 913.5, growth=497.1, grown=3931, seconds=8)
    assert not is_steady(13_000.0, 13_000.0, growth=1_000.0, grown=8_000, seconds=8)
    assert is_steady(13_000.0, 13_000.0, growth=300.0, grown=1_500, seconds=8)
    assert not is_steady(4_730.0, 894.3, growth=18.2, grown=0, seconds=8)  # not answered at the rate


def test_the_search_stops_when_its_time_is_up_with_what_it_found() -> None:
    offered, probe = pipeline()
    asked: list[int] = []

    def time_left() -> bool:
        asked.append(len(offered))
        return len(offered) < 4

    search = find_steady_rate(probe, 8_709.0, probes=10, time_left=time_left)

    assert len(offered) == 4 and asked[0] == 1  # never asked before the first probe
    assert 0 < search.rate <= CAPACITY
