"""The front door: gunicorn's gevent worker, with read deadlines and JSON for its own answers.

Why gevent (docs/serving.md has the measurements): a connection is a greenlet, not a
process or a thread, so 200 clients trickling a request at one byte a second hold 200
cheap greenlets and nobody else waits. psycopg 3 sees the monkey-patching and waits on
the patched `select.poll`; redis-py uses the patched socket; the app's threads (group
commit, waker, key-use flusher) are plain `threading` objects and become greenlets.

What this module adds to `gunicorn.workers.ggevent.GeventWorker`:

- Three read deadlines on every connection, enforced on each `recv` (so a client that
  sends one byte a second cannot stretch them):
  - idle: a kept-alive connection with no request started is closed after gunicorn's
    `keepalive` seconds (quietly: nothing was asked, so nothing is answered);
  - head: a request line and headers must be complete `Settings.request_head_seconds`
    (`REQUEST_HEAD_SECONDS`) after their first byte, else JSON 408 and close;
  - body: the app's reads of the body must finish `Settings.request_body_seconds`
    (`REQUEST_BODY_SECONDS`) after the head,
    else JSON 408 (raised as an `ApiError`, so the app's own error handler renders it)
    and close.
- A body that gunicorn cannot parse while the app reads it (a malformed chunk) is an
  `ApiError` 400 too, instead of an unexpected exception (a 500) in the app.
- Connection slots (`ConnectionSlots`): a process holds at most `worker_connections`
  connections. Past nine tenths of them, each new connection first closes the oldest
  idle one (a kept-alive connection between requests, or one that has not sent a byte
  yet); when every slot is busy with a request, a new connection gets a JSON 503 with
  Retry-After at once and is closed, never the silence of an accept queue that nobody
  reads. The pool gunicorn sizes is the slots plus a reserve for these answers.
- A graceful stop (SIGTERM) that takes no longer than the requests in progress: gunicorn
  waits, up to its graceful timeout, until the process holds no connection, so the
  connections between requests are closed at once, each other one after its answer, and
  live streams are told to end (`service.per_process.when_stopping`).
- `handle_error`: gunicorn's own answers (request line too long, headers too large,
  malformed requests, the head deadline) in the one envelope `{"message", "code",
  "errors"}` instead of HTML. The log line names the error's kind and the peer, never a
  header line (an Authorization value could be in it).
"""

from __future__ import annotations

import json
import resource
import socket
import time
import traceback
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import GreenletExit
from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.ggevent import GeventWorker

from app.api_error import ApiError
from service.per_process import stopping
from service.settings import Settings

# A response that the client does not read: give up on the connection after this long.
RESPONSE_SEND_SECONDS = 30.0
# Past this share of a process's connection slots, each new connection closes the
# oldest idle one first (docs/serving.md).
CLOSE_IDLE_ABOVE_SHARE = 0.9
# A connection refused for want of a slot: Retry-After, and how long its 503 lingers
# reading what the client sent (gunicorn's `close_graceful`: no reset that would lose
# the answer).
FULL_RETRY_AFTER_SECONDS = 1
FULL_LINGER_SECONDS = 1.0
# File descriptors a process keeps for itself beyond its connections (the listener,
# Postgres and Redis connections, logs, the Prometheus files).
RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True)
class ReadDeadlines:
    """How long a request's head may take from its first byte, and its body from its head."""

    head_seconds: float = Settings.request_head_seconds
    body_seconds: float = Settings.request_body_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadDeadlines:
        return cls(settings.request_head_seconds, settings.request_body_seconds)


class HeadTimeout(Exception):
    """The request line and headers did not arrive within the head's deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class BodyTimeout(ApiError):
    """The body did not arrive within its deadline: the app renders it as a JSON 408."""

    def __init__(self, seconds: float) -> None:
        message = (
            f"The request body did not arrive within {seconds:g} seconds of its headers; "
            "send it whole and promptly."
        )
        super().__init__(408, "request_timeout", message, {"body": [message]})


class _IDLE:
    """Phase marker: between requests."""


class _HEAD:
    """Phase marker: a request's head is arriving."""


class _BODY:
    """Phase marker: the app is reading a request's body."""


class DeadlineSocket:
    """A client socket whose every `recv` is bounded by the deadline of the current phase.

    gunicorn's parser and its body readers call `recv` in a loop; a per-call timeout
    alone would let a client that sends a byte a second keep a request open for ever,
    so each call gets only what is left of the phase's deadline.
    """

    __slots__ = ("sock", "phase", "deadline", "keepalive", "deadlines", "request", "slots", "closed_idle")

    def __init__(
        self,
        sock: socket.socket,
        keepalive: float,
        slots: ConnectionSlots | None = None,
        deadlines: ReadDeadlines = ReadDeadlines(),
    ):
        self.sock = sock
        self.keepalive = keepalive
        self.deadlines = deadlines
        self.request: Any = None
        self.phase: type = _IDLE
        self.deadline = time.monotonic() + keepalive
        self.slots = slots
        self.closed_idle = False  # closed by `ConnectionSlots` to make room
        if slots is not None:
            slots.idle[self] = None

    def begin_idle(self) -> None:
        self.phase, self.deadline, self.request = _IDLE, time.monotonic() + self.keepalive, None
        if self.slots is not None and not self.closed_idle:
            self.slots.idle[self] = None  # the newest idle one: closed last

    def close_idle(self) -> None:
        """Closed between requests to make room: its `recv` sees the end at once."""
        self.closed_idle = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the greenlet waiting in recv
        except OSError:
            pass

    def begin_body(self, request: Any) -> None:
        self.phase, self.request = _BODY, request
        self.deadline = time.monotonic() + self.deadlines.body_seconds
        if self.slots is not None:  # a pipelined request's head came from the buffer, not recv
            self.slots.idle.pop(self, None)

    @property
    def head_started(self) -> bool:
        return self.phase is _HEAD

    def recv(self, size: int) -> bytes:
        if self.closed_idle:
            return b""
        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            data = self.sock.recv(size)
        except TimeoutError:
            return self._expired()
        if data and self.phase is _IDLE:  # the first byte of a request: its head's clock starts
            self.phase, self.deadline = _HEAD, time.monotonic() + self.deadlines.head_seconds
            if self.slots is not None:
                self.slots.idle.pop(self, None)
        return data

    def _expired(self) -> bytes:
        if self.phase is _IDLE:
            return b""  # nothing asked: close as if the peer had, nothing to answer
        if self.phase is _HEAD:
            raise HeadTimeout(self.deadlines.head_seconds)
        if self.request is not None:
            self.request.must_close = True  # the rest of the body is not coming: close after the 408
        raise BodyTimeout(self.deadlines.body_seconds)

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(RESPONSE_SEND_SECONDS)
        self.sock.sendall(data)

    def send(self, data: bytes) -> int:
        self.sock.settimeout(RESPONSE_SEND_SECONDS)
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class ConnectionSlots:
    """One process's connection slots: how many are open, and which are idle, oldest first.

    A connection is idle from its accept until the first byte of a request, and again
    from each answer until the next request: closing it then loses nothing (HTTP lets
    a server close a kept-alive connection between requests; a client that has just
    sent on it retries, as it does after the keep-alive timeout). One greenlet runs at
    a time, so no lock.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self.close_idle_above = max(1, int(cap * CLOSE_IDLE_ABOVE_SHARE))
        self.open = 0
        self.idle: OrderedDict[DeadlineSocket, None] = OrderedDict()
        self.idle_closed = 0
        self.refused = 0

    def admit(self) -> bool:
        """A slot for a new connection, closing the oldest idle ones once past
        `close_idle_above`; False when every slot is busy with a request."""
        while self.open >= self.close_idle_above and self.idle:
            oldest, _ = self.idle.popitem(last=False)
            oldest.close_idle()
            self.open -= 1
            self.idle_closed += 1
        if self.open >= self.cap:
            self.refused += 1
            return False
        self.open += 1
        return True

    def close_every_idle(self) -> None:
        """The process is stopping: every connection between requests is closed now, so
        none holds the stop up until its keep-alive runs out (gunicorn waits for them)."""
        while self.idle:
            oldest, _ = self.idle.popitem(last=False)
            oldest.close_idle()
            self.open -= 1
            self.idle_closed += 1

    def release(self, sock: DeadlineSocket) -> None:
        """The connection has ended (one closed as idle gave its slot back already)."""
        if not sock.closed_idle:
            self.open -= 1
            self.idle.pop(sock, None)


def connection_cap(configured: int) -> int:
    """`worker_connections`, lowered to what the process's file descriptors allow (each
    connection is one descriptor, and the refusal reserve needs its own)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    usable = max(1, int((soft - RESERVED_DESCRIPTORS) / 1.1))
    return min(configured, usable)


def _client_error(exc: BaseException, cfg: Any) -> tuple[int, str, str, str, str] | None:
    """(status, reason, code, message, the part of the request at fault); None: not the client's."""
    e = http_errors
    if isinstance(exc, (GreenletExit, SystemExit)):  # the worker stops while a request is read
        return 503, "Service Unavailable", "restarting", "The server is restarting: send it again.", "request"
    if isinstance(exc, BodyTimeout):  # raised in an app that does not render ApiError itself
        return 408, "Request Timeout", exc.code, exc.message, "body"
    if isinstance(exc, HeadTimeout):
        return (
            408,
            "Request Timeout",
            "request_timeout",
            f"The request line and headers did not arrive within {exc.seconds:g} seconds; "
            "send them whole and promptly.",
            "headers",
        )
    if isinstance(exc, e.LimitRequestLine):
        line = f"Send a shorter request line: at most {cfg.limit_request_line} bytes (method, path, version)."
        return 414, "URI Too Long", "request_line_too_long", line, "request_line"
    if isinstance(exc, e.LimitRequestHeaders):
        return (
            431,
            "Request Header Fields Too Large",
            "request_headers_too_large",
            f"The request's headers are too large: send at most {cfg.limit_request_fields} header fields "
            f"of at most {cfg.limit_request_field_size} bytes each.",
            "headers",
        )
    if isinstance(exc, e.UnsupportedTransferCoding):
        return (
            501,
            "Not Implemented",
            "unsupported_transfer_coding",
            "Unsupported Transfer-Encoding: send the body with Content-Length or Transfer-Encoding: chunked.",
            "headers",
        )
    if isinstance(exc, e.ExpectationFailed):
        return (
            417,
            "Expectation Failed",
            "expectation_failed",
            "Only 'Expect: 100-continue' works.",
            "headers",
        )
    if isinstance(exc, e.ForbiddenProxyRequest):
        refused = "PROXY protocol lines are not accepted from this address."
        return 403, "Forbidden", "forbidden", refused, "request_line"
    chunk = "A chunk of the chunked body is malformed: send a valid chunked body."
    malformed: dict[type[Exception], tuple[str, str]] = {
        e.InvalidRequestLine: (
            "The request line is malformed: send 'METHOD /path HTTP/1.1'.",
            "request_line",
        ),
        e.InvalidRequestMethod: (
            "The method is not valid: use GET, POST, PUT, PATCH or DELETE.",
            "request_line",
        ),
        e.InvalidHTTPVersion: (
            "The HTTP version is not supported: send HTTP/1.0 or HTTP/1.1.",
            "request_line",
        ),
        e.InvalidHeaderName: ("A header name is malformed: use letters, digits and '-' only.", "headers"),
        e.ObsoleteFolding: ("A header is folded over several lines: send each on one line.", "headers"),
        e.InvalidHeader: (
            "A header is malformed or repeated where it must not be: send each once.",
            "headers",
        ),
        e.InvalidSchemeHeaders: ("The forwarded-scheme headers contradict each other: send one.", "headers"),
        e.InvalidProxyLine: ("The PROXY protocol line is malformed.", "request_line"),
        e.InvalidChunkSize: (chunk, "body"),
        e.ChunkMissingTerminator: (chunk, "body"),
        e.InvalidChunkExtension: (chunk, "body"),
        e.InvalidH2CPreface: ("The HTTP/2 preface is malformed.", "request_line"),
    }
    if isinstance(exc, (e.InvalidResponseHeader, e.InvalidResponseHeaderName)):
        return None  # the app's fault, not the client's
    for kind, (message, part) in malformed.items():
        if isinstance(exc, kind):
            return 400, "Bad Request", "malformed_request", message, part
    return None


def json_error(status: int, reason: str, code: str, message: str, part: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 response carrying the error envelope; the connection closes after it.
    `extra`: more header lines, each ending in CRLF."""
    envelope = {"message": message, "code": code, "errors": {part: [message]}}
    body = json.dumps(envelope, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    return head + body


SLOTS_FULL = json_error(
    503,
    "Service Unavailable",
    "server_busy",
    f"Every connection slot of this server is busy with a request; retry after {FULL_RETRY_AFTER_SECONDS} "
    "second.",
    "connection",
    f"Retry-After: {FULL_RETRY_AFTER_SECONDS}\r\n",
)


class CheckedBody:
    """`wsgi.input` whose parse errors (a malformed chunked body) reach the app as a JSON 400."""

    __slots__ = ("body", "cfg")

    def __init__(self, body: Any, cfg: Any):
        self.body = body
        self.cfg = cfg

    def _checked(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.body, method)(*args)
        except http_errors.ParseException as error:
            found = _client_error(error, self.cfg)
            message = found[3] if found else "The request body is malformed."
            raise ApiError(400, "malformed_request", message, {"body": [message]}) from None

    def read(self, size: int | None = None) -> bytes:
        return self._checked("read", size)  # type: ignore[no-any-return]

    def readline(self, size: int | None = None) -> bytes:
        return self._checked("readline", size)  # type: ignore[no-any-return]

    def readlines(self, size: int | None = None) -> list[bytes]:
        return self._checked("readlines", size)  # type: ignore[no-any-return]

    def __iter__(self) -> CheckedBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.body, name)


class FrontDoorWorker(GeventWorker):  # type: ignore[misc]  # gunicorn has no types
    """gunicorn's gevent worker with per-phase read deadlines, connection slots whose idle
    connections make room for new ones, and JSON error answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = ConnectionSlots(connection_cap(int(self.cfg.worker_connections)))
        # gunicorn's run() sizes its gevent Pool with this: the slots, plus a reserve of
        # greenlets that answer 503 when the slots are full (each lives at most
        # FULL_LINGER_SECONDS), so the listener is still read then.
        self.worker_connections = self.slots.cap + max(100, self.slots.cap // 10)
        self.full_logged = 0.0
        self.deadlines = ReadDeadlines()

    def init_process(self) -> None:
        """In the worker process, before it serves: its read deadlines from its Settings
        (the environment gunicorn gave it, `raw_env`), read once."""
        self.deadlines = ReadDeadlines.from_settings(Settings.from_env())
        super().init_process()

    def handle_exit(self, sig: Any, frame: Any) -> None:
        """SIGTERM, a graceful stop: requests in progress finish, and what never finishes by
        itself (a live stream) is told to end now (`service.per_process.when_stopping`), so
        its client does not wait for the graceful timeout and resumes elsewhere."""
        super().handle_exit(sig, frame)
        gevent.spawn(self._stop_gracefully)  # out of the signal handler, as gunicorn's handle_quit does

    def _stop_gracefully(self) -> None:
        """gunicorn waits, up to its graceful timeout, until no connection is left: the ones
        between requests are closed now, the ones in a request after their answer
        (`handle_request`), and what never ends by itself is told to end."""
        self.slots.close_every_idle()
        stopping()

    def timeout_ctx(self) -> AbstractContextManager[None]:
        return nullcontext()  # the deadlines live in DeadlineSocket, per phase

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.setblocking(1)
        if not self.slots.admit():
            self.refuse_for_want_of_slots(client)
            return
        sock = DeadlineSocket(client, float(self.cfg.keepalive or 0), self.slots, self.deadlines)
        try:
            super().handle(listener, sock, addr)
        finally:
            self.slots.release(sock)

    def refuse_for_want_of_slots(self, client: Any) -> None:
        """Every slot is busy with a request: a JSON 503 with Retry-After now, then close."""
        now = time.monotonic()
        if now - self.full_logged >= 10:  # a flood of connections must not flood the log
            self.full_logged = now
            self.log.warning(
                "Connection slots full (%d busy): %d connections refused with 503, %d idle closed so far",
                self.slots.open,
                self.slots.refused,
                self.slots.idle_closed,
            )
        try:
            util.write_nonblock(client, SLOTS_FULL)
        except OSError:
            util.close(client)
            return
        util.close_graceful(client, timeout=FULL_LINGER_SECONDS)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        if isinstance(sock, DeadlineSocket):
            sock.begin_body(req)
        if req.body is not None:
            req.body = CheckedBody(req.body, self.cfg)
        try:
            served = bool(super().handle_request(listener_name, req, sock, addr))
        finally:
            if isinstance(sock, DeadlineSocket):
                sock.begin_idle()
        if not self.alive:
            # Stopping: no next request on this connection (its answer began before the
            # stop, so it did not say `Connection: close`). Kept open, it would hold the
            # stop up until the graceful timeout, and a client resuming a stream over it
            # would resume on this stopping process.
            raise StopIteration
        return served

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        peer = addr[0] if isinstance(addr, tuple) and addr else "unix"
        stopping = isinstance(exc, (GreenletExit, SystemExit))
        if stopping and isinstance(client, DeadlineSocket) and client.phase is _IDLE:
            return  # a stopping worker, between requests: nothing was asked, close quietly
        found = _client_error(exc, self.cfg)
        if found is None:
            # The frames only: an exception's text could quote the request (a key in a header).
            frames = "".join(traceback.format_tb(exc.__traceback__))
            self.log.error("Error handling request (%s):\n%s", type(exc).__name__, frames)
            found = (
                500,
                "Internal Server Error",
                "internal_error",
                "Internal error; it has been logged.",
                "request",
            )
        else:
            self.log.warning("Invalid request from ip=%s: %s (%d)", peer, type(exc).__name__, found[0])
        try:
            util.write_nonblock(client, json_error(*found))
        except Exception:
            self.log.debug("Failed to send error message.")
