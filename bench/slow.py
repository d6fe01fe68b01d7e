"""Slow clients: other clients' latency while 200 connections trickle requests at 1 byte/s.

Half the slow connections send a `POST /v1/segment` head a byte a second; the other half
send a whole head (valid key, `Content-Length: 1000`) and then the body a byte a second.
A slow connection that the server answers or closes (its read deadline, app/serving/worker.py)
is opened again at once, so 200 trickle for the whole phase; what each got back is
counted (a JSON 408, a close, or anything else, which would be a fault).

Beside them, the clients that behave: an open-loop load of `GET /healthz` and of
single-event POSTs at a modest rate, whose p99 is the figure (SPEC §8: under 100 ms).
Its ceiling is the same load on the same server without the slow connections, in
alternating rounds (without, with, without, with, ...).
"""

from __future__ import annotations

import base64
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.env import BenchTeam, Web, busy_cores
from bench.ingest import IngestSizes, basic_auth, post_spec, summary
from bench.load import LoadResult, LoadSpec, percentile, run_load

SLOW_CONNECTIONS = 200
BEHAVED_RATE = 50.0  # requests/s of each behaved kind (healthz, POST)
BEHAVED_TIMEOUT = 3.0  # a behaved request not answered by then counts as unanswered


@dataclass
class SlowSizes:
    seconds: float
    rounds: int
    connections: int = SLOW_CONNECTIONS


def slow_requests(team: BenchTeam) -> tuple[bytes, bytes, bytes]:
    """(a head to trickle, a whole head whose body is trickled, that body)."""
    token = base64.b64encode(f"{team.key}:".encode()).decode()
    head = (
        "POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Basic {token}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    return head, head, b'{"type":"track","event":"x","userId":"slow","properties":{"pad":"' + b"x" * 1000


class Trickler:
    """`connections` sockets, each sending one byte a second, reopened when the server ends them."""

    def __init__(self, url: str, team: BenchTeam, connections: int):
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.head, self.whole_head, self.body = slow_requests(team)
        self.connections = connections
        self.stop_event = threading.Event()
        self.outcomes: dict[str, int] = {}
        self.opened = 0
        self.thread = threading.Thread(target=self._run, name="bench-trickler", daemon=True)
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, bytes] = {}

    def _open(self, index: int) -> None:
        sock = socket.create_connection(self.address, timeout=5)
        sock.setblocking(False)
        self.opened += 1
        if index % 2:  # whole head now, the body a byte a second
            sock.send(self.whole_head)  # ~200 bytes: one send
            self.pending[sock] = self.body
        else:
            self.pending[sock] = self.head
        self.selector.register(sock, selectors.EVENT_READ, index)

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _ended(self, sock: socket.socket, index: int) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1."):
            status = data[9:12].decode(errors="replace")
            json_body = b"application/json" in data.split(b"\r\n\r\n", 1)[0].lower()
            self._count(status if json_body else f"{status} (not JSON)")
        else:
            self._count("closed")
        self.selector.unregister(sock)
        self.pending.pop(sock, None)
        sock.close()
        if not self.stop_event.is_set():
            self._open(index)

    def _run(self) -> None:
        for index in range(self.connections):
            self._open(index)
        next_tick = time.monotonic()
        while not self.stop_event.is_set():
            timeout = max(0.0, next_tick - time.monotonic())
            for key, _ in self.selector.select(timeout):
                self._ended(key.fileobj, key.data)  # type: ignore[arg-type]
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                for sock, rest in list(self.pending.items()):
                    if rest:
                        try:
                            sock.send(rest[:1])
                            self.pending[sock] = rest[1:]
                        except OSError:
                            pass

    def __enter__(self) -> Trickler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(10)
        for sock in list(self.pending):
            sock.close()
        self.selector.close()


def behaved_load(web: Web, team: BenchTeam, run: str, seconds: float) -> dict[str, LoadResult]:
    """Open-loop healthz and single-event POSTs at BEHAVED_RATE each, at the same time."""
    sizes = IngestSizes(seconds, 8, 1)
    post = post_spec(web.base, team, run, sizes, rate=BEHAVED_RATE)
    post.timeout = BEHAVED_TIMEOUT
    health = LoadSpec(
        url=web.base + "/healthz",
        method="GET",
        headers=basic_auth(team.key),
        concurrency=8,
        duration=seconds,
        rate=BEHAVED_RATE,
        timeout=BEHAVED_TIMEOUT,
    )
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_load, spec) for name, spec in (("healthz", health), ("post", post))}
        return {name: future.result() for name, future in futures.items()}


def combined(results: list[dict[str, LoadResult]]) -> dict[str, Any]:
    """p50/p99 over every behaved request of the rounds; a request not answered 2xx counts too."""
    latencies = [lat for r in results for load in r.values() for lat in load.latencies_us]
    statuses: dict[str, int] = {}
    for r in results:
        for load in r.values():
            for status, count in load.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
    sent = sum(statuses.values())
    answered = sum(count for status, count in statuses.items() if status.startswith("2"))
    return {
        "sent": sent,
        "answered": answered,
        "statuses": statuses,
        "p50_ms": round(percentile(latencies, 50) / 1000, 2),
        "p99_ms": round(percentile(latencies, 99) / 1000, 2),
        "by_kind": {name: summary(load) for name, load in results[-1].items()} if results else {},
    }


def measure_slow_clients(web: Web, team: BenchTeam, run_id: str, sizes: SlowSizes) -> dict[str, Any]:
    """Behaved clients' latency without and with the trickling connections, alternating."""
    noise = busy_cores()
    quiet: list[dict[str, LoadResult]] = []
    trickled: list[dict[str, LoadResult]] = []
    outcomes: dict[str, int] = {}
    opened = 0
    for index in range(sizes.rounds):
        quiet.append(behaved_load(web, team, f"slow-quiet-{run_id}-{index}", sizes.seconds))
        with Trickler(web.base, team, sizes.connections) as trickler:
            time.sleep(0.5)  # all of them connected and trickling
            trickled.append(behaved_load(web, team, f"slow-with-{run_id}-{index}", sizes.seconds))
        for outcome, count in trickler.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        opened += trickler.opened
    return {
        "connections": sizes.connections,
        "behaved_rate_each": BEHAVED_RATE,
        "seconds": sizes.seconds,
        "without": combined(quiet),
        "with": combined(trickled),
        "slow_connections_opened": opened,
        "slow_outcomes": outcomes,  # what the slow ones got: a JSON 408, a close, or a fault
        "idle_busy_cores": noise,
    }
