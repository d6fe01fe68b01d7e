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
