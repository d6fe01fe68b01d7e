"""The table's ingest rows read what the ingest phase measured (no run needed)."""

from __future__ import annotations

from typing import Any

from bench.report import figures


def ingest_details(connections: int, few: bool) -> dict[str, Any]:
    def side(rate: float, cpu: float) -> dict[str, Any]:
        return {
            "rate": rate,
            "web_cpu_ms_per_request": cpu,
            "postgres_cpu_ms_per_request": 0.05,
            "p50_ms": 2.0,
            "p99_ms": 10.0,
        }

    app = {
        **side(3000.0, 0.3),
        "connections": connections,
        "half_peak": {"offered_rate": 1500.0, "rate": 1500.0, "p50_ms": 2.0, "p99_ms": 20.0},
    }
    details: dict[str, Any] = {"ingest": app, "ingest_bare": side(6000.0, 0.15)}
    if few:
        details["ingest_few"] = {"connections": 16, "app": side(2000.0, 0.45), "bare": side(5000.0, 0.15)}
    return details


def test_the_peak_row_names_its_connections_and_the_few_row_its_own_figures() -> None:
    rows = {row.name: row for row in figures(ingest_details(64, few=True))}

    peak = rows["Ingest: single-event POSTs/s, kept alive (durable), 64 conns"]
    assert (peak.ratio, peak.met) == ("50%", True)
    cpu = rows["Ingest: web CPU per request"]
    assert (cpu.ratio, cpu.met) == ("2.0x", True)
    few = rows["Ingest: single-event POSTs/s with only 16 connections"]
    assert few.measured == "2,000/s, 0.45 ms CPU"
    assert few.ratio == "40%, 3.0x CPU"
    assert few.met is None  # reported, no target


def test_without_a_few_connections_round_there_is_no_such_row() -> None:
    names = [row.name for row in figures(ingest_details(8, few=False))]

    assert "Ingest: single-event POSTs/s, kept alive (durable), 8 conns" in names
    assert not any("only 16 connections" in name for name in names)


def lag(p50_ms: float, p99_ms: float, unseen: int, bound: bool) -> dict[str, Any]:
    return {
        "rate": 25,
        "events": 300,
        "seen": 300 - unseen,
        "unseen": unseen,
        "p50_ms": p50_ms,
        "p50_is_lower_bound": False,
        "p99_ms": p99_ms,
        "p99_is_lower_bound": bound,
    }


def isolation_details(left: int) -> dict[str, Any]:
    flood = {
        "other_rate": 200,
        "quiet": {"statuses": {"200": 800}, "p99_ms": 20.0},
        "accepted": {
            "statuses": {"200": 800},
            "p99_ms": 30.0,
            "flood": {"accepted_events_per_second": 9000.0, "requests_per_second": 90.0},
        },
        "refused": {
            "statuses": {"200": 790, "TimeoutError": 10},
            "p99_ms": 35.0,
            "flood": {"accepted_events_per_second": 0.0, "requests_per_second": 900.0},
        },
    }
    fair = {
        "backlog_events": 1_000_000,
        "neighbour_events": 250_000,
        "one_worker": lag(9000.0, 14950.0, unseen=300, bound=True),
        "two_workers": lag(40.0, 400.0, unseen=0, bound=False),
        "busy_rate": {"alone": 6000.0, "beside_quiet": 5700.0},
        "busy_left_after_one_worker": left,
    }
    return {"isolation": {"flood": flood, "fair_share": fair}}


def test_a_lag_whose_p99_was_never_seen_folded_is_a_lower_bound_and_missed() -> None:
    rows = {row.name: row for row in figures(isolation_details(left=900_000))}

    one = rows["Quiet team's lag p50 / p99 at 25/s, neighbour's 1,000,000-event backlog folding, one worker"]
    assert one.measured == "9.00 / > 14.95 s, 300 of 300 not folded by the end"
    assert one.met is False
    two = rows[
        "Quiet team's lag p50 / p99 at 25/s, 1,000,000-event backlog and two of 250,000 folding, two workers"
    ]
    assert (two.measured, two.met) == ("0.04 / 0.40 s", True)
    busy = rows["Busy team's fold rate while the quiet team trickles (its folds share the worker)"]
    assert (busy.ratio, busy.target, busy.met) == ("95%", "reported", None)  # not a target: see report.py


def test_the_flood_rows_compare_with_the_quiet_p99_and_fail_on_any_unanswered_request() -> None:
    rows = [row for row in figures(isolation_details(left=1)) if row.name.startswith("Another team's")]

    accepted, refused = rows
    assert "9,000 events/s accepted" in accepted.name and (accepted.ratio, accepted.met) == ("1.5x", True)
    assert "900 refused events/s" in refused.name and refused.ratio == "1.8x"
    assert refused.met is False  # 10 requests timed out


def test_a_busy_backlog_that_ran_out_gives_no_verdict() -> None:
    rows = {row.name: row for row in figures(isolation_details(left=0))}

    busy = rows["Busy team's fold rate while the quiet team trickles (its folds share the worker)"]
    assert busy.met is None and "ran out" in busy.measured


def test_the_end_to_end_rows_say_when_the_search_did_not_converge_and_show_the_fold_beside_ingest() -> None:
    e2e = {
        "events_per_request": 100,
        "rate": 8000.0,
        "converged": False,
        "fold_beside_steady": 7900.0,
        "fold_beside_growing": {"folded_rate": 2100.0, "answered_rate": 8709.0},
    }
    details = {"end_to_end_batch": e2e, "fold": {"rate": 9677.0, "ceiling": {"rate": 10000.0}}}

    rows = {row.name: row for row in figures(details)}

    steady = rows["End to end: steady events/s, /v1/batch x100 (web + worker)"]
    assert steady.measured == "8,000/s (search not converged)" and steady.met is False
    beside = rows["End to end, /v1/batch x100: the fold's events/s beside ingest"]
    assert beside.measured == "7,900/s at the steady rate; 2,100/s beside 8,709/s (growing)"
    assert beside.ceiling == "9,677/s fold alone" and beside.ratio == "22%"
