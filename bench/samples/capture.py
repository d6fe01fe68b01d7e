"""Capture events as the real clients send them: `python -m bench.samples.capture`.

Writes `bench/samples/real-events.jsonl`, one event a line, exactly as the clients put
them on the wire (a batch's events one by one, its shared `context` merged in as the
Tracking API does), for `bin/bench`'s bytes-per-event row (issue 25). Nothing of ours
receives them: a loopback server that answers 200 to every POST keeps the bodies.

- analytics.js (`@segment/analytics-next` from tests/browser's lockfile, `npm ci` there
  first) in Debian's headless Chromium, on a shop page (tests/browser/page.html) opened
  from a campaign link: page, identify, track, group, alias, with the context a browser
  really adds (userAgent and its client hints, page, locale, campaign, library, timezone);
- Segment's Python SDK (segment-analytics-python) as a server would call it: identify,
  track with an order's properties, page, group.

Run it again only to refresh the sample (it needs chromium, chromedriver and the node
packages); the bench reads the file.
"""

from __future__ import annotations

import functools
import gzip
import json
import shutil
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).with_name("real-events.jsonl")
PAGE = ROOT / "tests" / "browser"
BUNDLE = PAGE / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"


class Capture(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        elif self.headers.get("Content-Encoding") == "deflate":
            raw = zlib.decompress(raw)
        Capture.bodies.append(raw)
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"success":true}')

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        self.send_header("Access-Control-Allow-Methods", "POST")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def serve(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


def events_of(body: bytes) -> list[dict[str, Any]]:
    """The events of one request body: a batch's, its shared context merged in, or one."""
    data = json.loads(body)
    if isinstance(data, dict) and isinstance(data.get("batch"), list):
        shared = {k: v for k, v in data.items() if k not in ("batch", "writeKey", "sentAt")}
        return [{**shared, **event} for event in data["batch"]]
    if isinstance(data, dict):
        data.pop("writeKey", None)
        return [data]
    return []


def browser_events(capture: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    site = Path(tempfile.mkdtemp(prefix="tl-shop-"))
    try:
        shutil.copy(PAGE / "page.html", site / "index.html")
        (site / "analytics-next").mkdir()
        (site / "analytics-next" / "bundles").symlink_to(BUNDLE, target_is_directory=True)
        shop = serve(ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))))
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--lang=de-DE"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            campaign = "utm_source=newsletter&utm_medium=email&utm_campaign=winter-sale&utm_content=hero"
            for mode, user in (("standard", "user-4711"), ("batching", "user-4712")):
                driver.get(
                    f"http://{shop}/?mode={mode}&apiHost={capture}/v1&key=wk_sample&user={user}&{campaign}"
                )
                deadline = time.monotonic() + 30
                while not driver.execute_script("return window.__done === true"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("analytics.js did not finish")
                    time.sleep(0.1)
                time.sleep(1.0)  # the batching mode's last flush
        finally:
            driver.quit()
    finally:
        shutil.rmtree(site, ignore_errors=True)


def server_events(capture: str) -> None:
    from segment.analytics import Client

    client = Client("wk_sample", host=f"http://{capture}", sync_mode=True)
    client.identify(
        "user-4711",
        {
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "plan": "pro",
            "company": {"id": "acme", "name": "Acme"},
        },
    )
    client.track(
        "user-4711",
        "Order Completed",
        {
            "order_id": "50314b8e9bcf000000000000",
            "total": 27.5,
            "revenue": 25.0,
            "currency": "EUR",
            "products": [
                {
                    "product_id": "507f1f77bcf86cd799439011",
                    "sku": "45790-32",
                    "name": "Monopoly",
                    "price": 19.0,
                },
                {"product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno", "price": 3.0},
            ],
        },
    )
    client.page("user-4711", "Docs", "Getting Started", {"url": "https://shop.example/docs/start"})
    client.group("user-4711", "acme", {"name": "Acme", "industry": "Retail", "employees": 420})
    client.flush()


def main() -> None:
    capture = serve(ThreadingHTTPServer(("127.0.0.1", 0), Capture))
    browser_events(capture)
    server_events(capture)
    events = [event for body in Capture.bodies for event in events_of(body)]
    SAMPLE.write_text("".join(json.dumps(event, sort_keys=True) + "\n" for event in events))
    print(f"{len(events)} events from {len(Capture.bodies)} requests -> {SAMPLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
