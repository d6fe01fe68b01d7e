"""The fault suite's load: batches of track events with known messageIds, offered over
loopback and retried until acknowledged, as Segment retries."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Load:
    """Batches of track events with known messageIds, retried until acknowledged."""

    base: str
    key: str
    tag: str
    threads: int = 3
    rate_per_thread: float = 25.0  # requests per second
    batch: int = 10
    acked: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    errors_5xx: int = 0
    errors_503: int = 0
    refused: int = 0  # connection errors, retried
    _give_up: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, give_up_after: float = 30) -> None:
        self._stop.set()
        self._give_up = time.monotonic() + give_up_after
        for thread in self._threads:
            thread.join(give_up_after + 5)

    def _run(self, n: int) -> None:
        auth = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
        seq = 0
        while not self._stop.is_set():
            started = time.monotonic()
            ids = [f"{self.tag}-{n}-{seq}-{i}" for i in range(self.batch)]
            seq += 1
            events = [
                {
                    "type": "track",
                    "userId": f"{self.tag}-u{(seq * self.batch + i) % 40}",
                    "event": "Fault Load",
                    "messageId": mid,
                }
                for i, mid in enumerate(ids)
            ]
            with self._lock:
                self.sent.update(ids)
            body = json.dumps({"batch": events}).encode()
            while True:  # Segment retries until a 2xx
                status = self._post(body, auth)
                if 200 <= status < 300:
                    with self._lock:
                        self.acked.update(ids)
                    break
                with self._lock:
                    if status == 503:
                        self.errors_503 += 1
                    elif status >= 500:
                        self.errors_5xx += 1
                    elif status == 0:
                        self.refused += 1
                    else:
                        self.errors_5xx += 1  # a 4xx for a valid batch is as wrong
                if self._stop.is_set() and time.monotonic() > self._give_up:
                    return
                time.sleep(0.1)
            time.sleep(max(0.0, 1 / self.rate_per_thread - (time.monotonic() - started)))

    def _post(self, body: bytes, auth: str) -> int:
        request = urllib.request.Request(
            self.base + "/v1/batch",
            data=body,
            method="POST",
            headers={"Authorization": auth, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (OSError, urllib.error.URLError):
            return 0
