"""The quiet team's lag counts every event: one never seen folded waits at least until the watch ended."""

from __future__ import annotations

from bench.isolation import lag_figures, lags_with_unseen
from bench.pipeline import Look


def test_an_event_seen_folded_has_its_lag_and_one_never_seen_its_wait_so_far() -> None:
    looks = [
        Look(1.0, frozenset({"q-0-0", "q-0-1"})),
        Look(2.0, frozenset({"q-0-1"})),
        Look(5.0, frozenset({"q-0-1"})),
    ]
    records = [("0-0", 0.5), ("0-1", 0.6)]

    seen, unseen = lags_with_unseen(records, looks, "q")

    assert seen == [1.5]  # first look after its 200 that no longer lists it
    assert unseen == [4.4]  # still unfolded at the last look


def test_a_percentile_that_lands_on_an_unseen_event_is_a_lower_bound() -> None:
    # Nearest rank: the p99 of 200 is the 198th; here an event still unfolded at 3 s.
    figures = lag_figures(seen=[0.1] * 197 + [5.0, 6.0], unseen=[3.0])

    assert figures["p50_ms"] == 100.0 and not figures["p50_is_lower_bound"]
    assert figures["p99_ms"] == 3000.0 and figures["p99_is_lower_bound"]
    assert (figures["events"], figures["unseen"]) == (200, 1)


def test_all_seen_no_bound() -> None:
    figures = lag_figures(seen=[0.01 * n for n in range(1, 201)], unseen=[])

    assert figures["p99_ms"] == 1980.0 and not figures["p99_is_lower_bound"]
