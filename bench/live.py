"""Live streams: how soon an event reaches an open customer page, and what open pages cost.

One web process (WEB_CONCURRENCY=1) and one fold worker. `customers` customers are made
first (the full run: 1,000, a stream open on each: 1,000 agents, each with a customer's
page open). Then rounds alternate, each `seconds` long, with single-event POSTs offered open
loop at `rate` events/s to those customers (each event to the next customer in turn):
- **with streams:** `streams` SSE connections are open on the customers
  (`/customers/{id}/stream`, round robin), all held by that one process; every item each
  stream receives is matched to its event, and its lag is the time from the event's 200
  at ingest to the item's arrival on that stream;
- **without:** the same load, no stream open.
The ingest p99 (from each request's due time: open loop, no coordinated omission) of the
two kinds of round is compared, as the median of the rounds' p99s (one hiccup of the
shared machine in one round does not decide it) beside the p99 of all their requests.
The streams are read by a process of their own (`_read_streams`), so that parsing 1,000
streams' items does not delay the senders' clock: the senders are one asyncio client, on
raw sockets. Arrival and answer times are both `time.monotonic()`, one clock for the
machine's processes on Linux.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import re
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import requests

from app.read_api.stream import HEARTBEAT_SECONDS
from bench.env import BenchTeam, FoldWorker, RunEnv, Web
from bench.fold import wait_until_folded
from bench.load import percentile

_MESSAGE_ID = re.compile(rb'"message_id" : "([^"]+)"')
SENDERS = 8
OPENING = 20  # streams opened at once


@dataclass
class LiveSizes:
    customers: int
    streams: int
    rate: float
    seconds: float
    rounds: int  # of each kind, alternating


@dataclass
class Round:
    streams: int
    sent: int = 0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)  # ingest, from the due time
    answered_at: dict[bytes, float] = field(default_factory=dict)  # messageId -> its 200
    customer_of: dict[bytes, int] = field(default_factory=dict)
    arrivals: list[tuple[bytes, float]] = field(default_factory=list)  # (messageId, arrival)


async def _request_head(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1])


async def _stream(
    host: str, port: int, path: str, auth: str, arrivals: list[tuple[bytes, float]], opened: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            said = await reader.read(600)
            raise RuntimeError(f"stream refused: {status!r} {said!r}")
        while await reader.readline() not in (b"\r\n", b""):
            pass
        opened.set()
        while line := await reader.readline():
            if line.startswith(b"data: ") or (b"data: " in line):
                found = _MESSAGE_ID.search(line)
                if found:
                    arrivals.append((found.group(1), time.monotonic()))
    finally:
        writer.close()


def _read_streams(host: str, port: int, paths: list[str], auth: str, pipe: Connection) -> None:
    """The streams' reader, in a process of its own: opens every stream, says "opened", then
    collects arrivals until told how many to expect and until when; sends them back."""

    async def main() -> list[tuple[bytes, float]]:
        arrivals: list[tuple[bytes, float]] = []
        readers: list[asyncio.Task[None]] = []
        for start in range(0, len(paths), OPENING):  # a few at a time, as agents open pages
            openings = []
            for path in paths[start : start + OPENING]:
                opened = asyncio.Event()
                readers.append(asyncio.create_task(_stream(host, port, path, auth, arrivals, opened)))
                openings.append(asyncio.wait_for(opened.wait(), 30))
            await asyncio.gather(*openings)
        pipe.send("opened")
        loop = asyncio.get_running_loop()
        expected, deadline = await loop.run_in_executor(None, pipe.recv)
        while len(arrivals) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return arrivals

    pipe.send(asyncio.run(main()))


async def _sender(
    host: str,
    port: int,
    auth: str,
    customers: list[str],
    round_: Round,
    due: list[float],
    index: int,
    run: str,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for n in range(index, len(due), SENDERS):
            delay = due[n] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            message_id = f"live-{run}-{n}".encode()
            user = customers[n % len(customers)]
            body = json.dumps(
                {"type": "track", "userId": user, "event": "Viewed Page", "messageId": message_id.decode()}
            ).encode()
            head = (
                f"POST /v1/segment HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            round_.sent += 1
            status = await _request_head(reader, writer, head, body)
            answered = time.monotonic()
            round_.latencies.append(answered - due[n])
            if status == 200:
                round_.ok += 1
                round_.answered_at[message_id] = answered
                round_.customer_of[message_id] = n % len(customers)
    finally:
        writer.close()


async def _round(
    base: str, team: BenchTeam, ids: list[str], users: list[str], sizes: LiveSizes, streams: int, run: str
) -> Round:
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    basic = "Basic " + base64.b64encode(f"{team.key}:".encode()).decode()
    bearer = f"Bearer {team.key}"
    round_ = Round(streams)
    paths = [f"/api/v1/customers/{ids[s % len(ids)]}/stream" for s in range(streams)]
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    reader = multiprocessing.get_context("spawn").Process(
        target=_read_streams, args=(host, port, paths, bearer, theirs), daemon=True
    )
    if streams:
        reader.start()
        if not ours.poll(300) or ours.recv() != "opened":
            raise RuntimeError(f"the streams' reader did not open its streams (exit code {reader.exitcode})")
    try:
        start = time.monotonic() + 0.2
        count = int(sizes.rate * sizes.seconds)
        due = [start + k / sizes.rate for k in range(count)]
        senders = [_sender(host, port, basic, users, round_, due, i, run) for i in range(SENDERS)]
        await asyncio.gather(*senders)
        if streams:
            # The last events' fold and delivery: until every event reached every stream on
            # its customer, or 2 s.
            per_customer = [0] * len(ids)
            for s in range(streams):
                per_customer[s % len(ids)] += 1
            expected = sum(per_customer[round_.customer_of[m]] for m in round_.answered_at)
            ours.send((expected, time.monotonic() + 2.0))
            if not ours.poll(30):
                raise RuntimeError("the streams' reader did not report")
            round_.arrivals = ours.recv()
    finally:
        if streams:
            reader.join(10)
            if reader.is_alive():
                reader.kill()
    return round_


def _make_customers(
    base: str, team: BenchTeam, count: int, run: str, url: str
) -> tuple[list[str], list[str]]:
    """`count` customers (one identify each, folded); their user ids and customer ids."""
    users = [f"live-{run}-user-{n}" for n in range(count)]
    batch: list[dict[str, Any]] = [
        {"type": "identify", "userId": user, "traits": {"name": user}, "messageId": f"{user}-identify"}
        for user in users
    ]
    for start in range(0, count, 100):
        answer = requests.post(
            base + "/v1/batch", json={"batch": batch[start : start + 100]}, auth=(team.key, ""), timeout=30
        )
        answer.raise_for_status()
    wait_until_folded(url, team.id, timeout=60)
    ids = []
    for user in users:
        found = requests.get(
            base + "/api/v1/customers/lookup",
            params={"user_id": user},
            headers={"Authorization": f"Bearer {team.key}"},
            timeout=30,
        )
        found.raise_for_status()
        ids.append(found.json()["id"])
    return users, ids


def measure_live(run: RunEnv, team: BenchTeam, sizes: LiveSizes) -> dict[str, Any]:
    web = Web("live-web", run.process_env(WEB_CONCURRENCY="1")).wait_ready("/readyz")
    worker = FoldWorker("live-worker", run.process_env()).wait_ready(run.redis(), run.fold_queue)
    try:
        users, ids = _make_customers(web.base, team, sizes.customers, run.run_id, run.database_url)
        rounds: list[Round] = []
        streams_ended = 0.0
        for n in range(sizes.rounds):
            # Alternating, and each kind first in turn: neither gets the warm-up to itself.
            for streams in (sizes.streams, 0) if n % 2 == 0 else (0, sizes.streams):
                if streams:
                    # The server learns that a client closed its stream only when a write
                    # fails: the second heartbeat after the close (the first is accepted by
                    # the kernel). Until then the stream counts against the process's
                    # share, and a new round's streams would be refused.
                    time.sleep(max(0.0, streams_ended + 2 * HEARTBEAT_SECONDS + 1 - time.monotonic()))
                tag = f"{run.run_id}-{n}-{streams}"
                rounds.append(asyncio.run(_round(web.base, team, ids, users, sizes, streams, tag)))
                if streams:
                    streams_ended = time.monotonic()
        return _summary(rounds, sizes)
    finally:
        worker.stop()
        web.stop()


def _summary(rounds: list[Round], sizes: LiveSizes) -> dict[str, Any]:
    def ingest(kind: list[Round]) -> dict[str, Any]:
        latencies = [x for r in kind for x in r.latencies]
        per_round = [round(percentile(r.latencies, 99) * 1000, 2) for r in kind]
        return {
            "sent": sum(r.sent for r in kind),
            "ok": sum(r.ok for r in kind),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "round_p99_ms": per_round,
            "median_round_p99_ms": round(statistics.median(per_round), 2),
        }

    with_streams = [r for r in rounds if r.streams]
    without = [r for r in rounds if not r.streams]
    lags: list[float] = []
    expected = delivered = 0
    for r in with_streams:
        per_customer = [0] * sizes.customers
        for s in range(r.streams):
            per_customer[s % sizes.customers] += 1
        expected += sum(per_customer[r.customer_of[m]] for m in r.answered_at)
        for message_id, arrived in r.arrivals:
            answered = r.answered_at.get(message_id)
            if answered is not None:
                delivered += 1
                lags.append(max(0.0, arrived - answered))
    return {
        "customers": sizes.customers,
        "streams": sizes.streams,
        "rate": sizes.rate,
        "seconds": sizes.seconds,
        "rounds": sizes.rounds,
        "lag_p50_ms": round(percentile(lags, 50) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 99) * 1000, 1),
        "delivered": delivered,
        "expected": expected,
        "ingest_with_streams": ingest(with_streams),
        "ingest_without": ingest(without),
    }
