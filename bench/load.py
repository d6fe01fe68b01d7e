"""An HTTP load generator small enough to read and fast enough not to be the limit.

`python -m bench.load INDEX SPEC_JSON` runs one generator process: asyncio with raw protocol
objects (no HTTP library in the hot path), N connections, each sending a pre-built
request whose only variable part is a counter spliced into the body. It reuses a
connection when the server keeps it alive and reconnects when it closes it (gunicorn's
sync workers close after every response).

Two modes:
- closed loop (`rate` is null): every connection sends as fast as answers come back;
  this finds the peak.
- open loop (`rate` set): request k is due at start + k/rate, whoever is free sends it,
  and latency counts from when it was due, so a stall shows up as latency instead of
  silently lowering the offered rate (no coordinated omission).

Every run stops by itself at `start_at + duration` (open loop: at the latest one
`timeout` later, when the server has stalled; the requests still due then are counted
as not sent). The process prints one JSON object:
counts, latencies in microseconds, its own CPU seconds (to show it is not the
bottleneck) and, with `record`, the monotonic time each 2xx came back (for lag).
Several processes are started by `run_load` and merged.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class LoadSpec:
    """What one run sends, how hard and for how long."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    # The body, with "{n}" where each request's unique number goes (e.g. its messageId)
    # and "{u}" where its user's number goes (request number modulo `users`).
    body_template: str = ""
    users: int = 1000
    concurrency: int = 16
    duration: float = 5.0
    rate: float | None = None  # events per second across all processes; None: closed loop
    processes: int = 1
    record: bool = False  # keep (n, monotonic time of the 2xx) for every request
    timeout: float = 10.0


@dataclass
class LoadResult:
    """Merged figures of every generator process."""

    sent: int
    ok: int
    statuses: dict[str, int]
    elapsed: float
    latencies_us: list[int]
    cpu_seconds: float
    records: list[tuple[str, float]]
    offered_rate: float | None

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, p: float) -> float:
        return percentile(self.latencies_us, p) / 1000.0

    @property
    def cpu_share(self) -> float:
        """Generator CPU as a share of one core over the run (0.5 = half a core)."""
        return self.cpu_seconds / self.elapsed if self.elapsed else 0.0


def percentile(values: list[int] | list[float], p: float) -> float:
    """Nearest-rank percentile of unsorted values (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return float(ordered[rank])


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bool]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bool]]:
        self.buffer.clear()
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._try_finish()

    def _try_finish(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).lower()
        status = int(head[9:12])
        length_at = head.find(b"\r\ncontent-length:")
        if length_at >= 0:
            line_end = head.find(b"\r\n", length_at + 2)
            length = int(head[length_at + 17 : line_end if line_end >= 0 else None])
            if len(self.buffer) - head_end - 4 < length:
                return
        elif not self.closed:
            return  # no length: the body ends when the server closes
        keep = b"\r\nconnection: close" not in head and not self.closed
        self.waiter.set_result((status, keep))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.buffer:
                self._try_finish()
            if not self.waiter.done():
                self.waiter.set_exception(ConnectionError("closed before a full response"))


def _request_head(spec: LoadSpec) -> tuple[bytes, str, int]:
    """The request line and fixed headers (Content-Length is added per request)."""
    parts = urlsplit(spec.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    lines = [f"{spec.method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in spec.headers.items()]
    head = ("\r\n".join(lines) + "\r\n").encode()
    return head, host, port


async def _generate(spec: LoadSpec, index: int, start_at: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    head, host, port = _request_head(spec)
    template = spec.body_template
    end_at = start_at + spec.duration
    rate = spec.rate / spec.processes if spec.rate else None
    counter = 0
    latencies: list[int] = []
    statuses: dict[str, int] = {}
    records: list[tuple[str, float]] = []
    sent = 0

    def build(n: str, slot: int) -> bytes:
        if not template:
            return head + b"\r\n"
        body = template.replace("{n}", n).replace("{u}", str(slot % spec.users)).encode()
        return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    async def client() -> None:
        nonlocal counter, sent
        connection: _Connection | None = None
        while True:
            slot = counter
            counter += 1
            if rate:
                due = start_at + slot / rate
                if due >= end_at:
                    return
                if time.monotonic() >= end_at + spec.timeout:
                    return  # a stalled server: the slots still due are counted as not sent
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                due = time.monotonic()
                if due >= end_at:
                    return
            n = f"{index}-{slot}"
            request = build(n, slot)
            try:
                if connection is None or connection.closed:
                    _, connection = await loop.create_connection(_Connection, host, port)
                status, keep = await asyncio.wait_for(connection.send(request), spec.timeout)
                if not keep:
                    assert connection.transport is not None
                    connection.transport.close()
                    connection = None
                key = str(status)
            except (OSError, ConnectionError, TimeoutError) as error:
                key = type(error).__name__
                if connection is not None and connection.transport is not None:
                    connection.transport.close()
                connection = None
            done = time.monotonic()
            sent += 1
            statuses[key] = statuses.get(key, 0) + 1
            if key.startswith("2"):
                latencies.append(int((done - due) * 1e6))
                if spec.record:
                    records.append((n, done))

    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    await asyncio.gather(*(client() for _ in range(max(1, spec.concurrency // spec.processes))))
    if rate:
        unsent = int(spec.duration * rate) - sent
        if unsent > 0:
            statuses["not sent (server stalled)"] = unsent
    return {
        "sent": sent,
        "statuses": statuses,
        "latencies_us": latencies,
        "records": records,
        "elapsed": max(time.monotonic(), end_at) - start_at,
    }


def _run_one(spec: LoadSpec, index: int, start_at: float) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = asyncio.run(_generate(spec, index, start_at))
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def run_load(spec: LoadSpec) -> LoadResult:
    """Run `spec.processes` generator processes together and merge what they saw."""
    start_at = time.monotonic() + 0.5 + 0.1 * spec.processes  # every process starts at once
    payload = json.dumps({"spec": spec.__dict__, "start_at": start_at})
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.load", str(index), payload],  # all start at once
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        for index in range(spec.processes)
    ]
    outputs = []
    for child in children:
        stdout, _ = child.communicate(timeout=spec.duration + spec.timeout + 30)
        if child.returncode != 0:
            raise RuntimeError(f"load generator exited with {child.returncode}")
        outputs.append(json.loads(stdout))
    statuses: dict[str, int] = {}
    for out in outputs:
        for key, count in out["statuses"].items():
            statuses[key] = statuses.get(key, 0) + count
    return LoadResult(
        sent=sum(out["sent"] for out in outputs),
        ok=sum(count for key, count in statuses.items() if key.startswith("2")),
        statuses=statuses,
        elapsed=max(out["elapsed"] for out in outputs),
        latencies_us=[lat for out in outputs for lat in out["latencies_us"]],
        cpu_seconds=sum(out["cpu_seconds"] for out in outputs),
        records=[(str(n), float(t)) for out in outputs for n, t in out["records"]],
        offered_rate=spec.rate,
    )


def main() -> None:
    index = int(sys.argv[1])
    payload = json.loads(sys.argv[2])
    spec = LoadSpec(**payload["spec"])
    json.dump(_run_one(spec, index, float(payload["start_at"])), sys.stdout)


if __name__ == "__main__":
    main()
