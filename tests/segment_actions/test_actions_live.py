"""Segment's Actions runtime against the live service: our destination as built, and Segment's Webhook.

`segment-actions/live/run.js` runs a definition with `@segment/actions-core`'s `Destination`
(onEvent, onBatch, onDelete, testAuthentication), as Segment's delivery runs it: ours from
`segment-actions/dist/index.js` subscribed by its presets (what a team gets on connecting),
and Segment's Webhook (Actions) destination from `@segment/action-destinations`, pointed at
`/v1/segment` with the team's key. The service is what the Procfile runs: gunicorn and a
fold worker (`python -m workers`), on the session's Postgres and Redis.

The timeline must be the same whichever way the events came, so each way's team is compared
with a team that got the same Segment events posted to `/v1/segment` directly (the classic
destination): the feed of every userId, item by item, and the profile.

Node: the module runs `npm run build` first (seconds, no network), so the tests never run a
stale `dist/`; its packages come from the lockfile (tests/node.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text

from tests.conftest import TeamKeys, fixture_names, load_fixture, make_team
from tests.node import node_packages, npm
from tests.servers import GunicornServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "segment-actions"
NODE_PACKAGES = [PACKAGE]  # installed ahead (tests/node.py)
RUNNER = PACKAGE / "live" / "run.js"
WAIT_SECONDS = 30.0
NODE_SECONDS = 120.0
# The fields of a feed item that are ours, not the event's: they differ between teams.
OWN_FIELDS = ("id", "received_at")
PROFILE_FIELDS = ("email", "name", "traits", "user_ids", "anonymous_ids")


# --- node: the built definition -------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> Path:
    """segment-actions/dist built from the current source (never a stale one)."""
    node_packages(PACKAGE)
    npm(PACKAGE, "run", "build", what="npm run build")
    dist = PACKAGE / "dist" / "index.js"
    assert dist.exists(), "npm run build wrote no segment-actions/dist/index.js"
    return dist


def run_node(command: dict[str, Any]) -> dict[str, Any]:
    """One call of live/run.js: `{"ok": true, "results": ...}` or `{"ok": false, "error": ...}`."""
    done = subprocess.run(
        ["node", str(RUNNER)],
        input=json.dumps(command),
        capture_output=True,
        text=True,
        timeout=NODE_SECONDS,
        cwd=PACKAGE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def timeline_call(call: str, server: GunicornServer, key: str, **more: Any) -> dict[str, Any]:
    settings = {"apiKey": key, "endpoint": server.url}
    return run_node({"destination": "timeline", "call": call, "settings": settings, **more})


def multistatus(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-event results of an onBatch through one subscription."""
    assert answer["ok"], answer
    found = [result["multistatus"] for result in answer["results"] if "multistatus" in result]
    assert len(found) == 1, answer
    statuses: list[dict[str, Any]] = found[0]
    return statuses


# --- the live service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(settings: Any, built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """gunicorn and a fold worker, as the Procfile runs them, with a queue and prefix of their own."""
    folder = tmp_path_factory.mktemp("actions-server")
    env: dict[str, str | None] = {
        "FOLD_QUEUE": os.environ["FOLD_QUEUE"] + "-actions",
        "REDIS_PREFIX": os.environ["REDIS_PREFIX"] + "actions:",
        "SWEEP_INTERVAL_SECONDS": "0.5",
    }
    with GunicornServer(folder, env, fold_workers=1, ready_seconds=30, log_name="server.log") as running:
        yield running


def wait_until_folded(engine: Engine, team_id: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    query = text("SELECT count(*) FROM events WHERE team_id = :team AND folded_at IS NULL")
    while True:
        with engine.connect() as connection:
            if connection.execute(query, {"team": team_id}).scalar_one() == 0:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"events of team {team_id} still unfolded after {WAIT_SECONDS} s")
        time.sleep(0.1)


def stored_count(engine: Engine, team_id: int) -> int:
    with engine.connect() as connection:
        count: int = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :team"), {"team": team_id}
        ).scalar_one()
    return count


def customer_of(
    url: str, team: TeamKeys, user_id: str
) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
    """The lookup's status, and the profile and feed (oldest first) of the customer with `user_id`."""
    read = team.bearer(team.read)
    found = requests.get(
        f"{url}/api/v1/customers/lookup", params={"user_id": user_id}, headers=read, timeout=10
    )
    if found.status_code != 200:
        return found.status_code, None, []
    profile: dict[str, Any] = found.json()
    feed = requests.get(
        f"{url}/api/v1/customers/{profile['id']}/feed",
        params={"order": "asc", "limit": 200},
        headers=read,
        timeout=10,
    )
    assert feed.status_code == 200, feed.text
    items: list[dict[str, Any]] = feed.json()["data"]
    return 200, profile, items


def timeline_view(url: str, team: TeamKeys, user_ids: set[str]) -> dict[str, Any]:
    """What an agent sees of each userId: the profile's fields and the feed, without our own ids."""
    view: dict[str, Any] = {}
    for user_id in sorted(user_ids):
        status, profile, items = customer_of(url, team, user_id)
        view[user_id] = {
            "status": status,
            "profile": {name: (profile or {}).get(name) for name in PROFILE_FIELDS},
            "feed": [{k: v for k, v in item.items() if k not in OWN_FIELDS} for item in items],
        }
    return view


def segment_events() -> list[dict[str, Any]]:
    """Segment's documented samples of the six calls, with the `timestamp` Segment sets on every
    event before delivery (the identify sample has none: its receivedAt, as Segment computes it)."""
    events = []
    for name in fixture_names():
        event = load_fixture(name)
        if event["type"] == "delete":
            continue
        event.setdefault("timestamp", event["receivedAt"])
        events.append(event)
    assert sorted(event["type"] for event in events) == [
        "alias",
        "group",
        "identify",
        "page",
        "screen",
        "track",
    ]
    return events


def user_ids_of(events: list[dict[str, Any]]) -> set[str]:
    return {str(event["userId"]) for event in events if event.get("userId")}


@pytest.fixture(scope="module")
def classic(server: GunicornServer, engine: Engine) -> dict[str, Any]:
    """The timelines of a team that got the same events posted to /v1/segment one by one."""
    team = make_team(engine, "classic")
    events = segment_events()
    for event in events:
        response = requests.post(
            f"{server.url}/v1/segment", json=event, headers=team.basic(team.ingest), timeout=10
        )
        assert response.status_code == 200, response.text
    wait_until_folded(engine, team.id)
    return timeline_view(server.url, team, user_ids_of(events))


def assert_same_timelines(
    server: GunicornServer, engine: Engine, team: TeamKeys, classic: dict[str, Any]
) -> None:
    events = segment_events()
    wait_until_folded(engine, team.id)
    assert stored_count(engine, team.id) == len(events)  # each event once
    view = timeline_view(server.url, team, user_ids_of(events))
    for (
        event
    ) in events:  # each in its customer's feed, once (Segment's samples share messageIds across types)
        feed = view[str(event["userId"])]["feed"]
        assert [(item["type"], item["message_id"]) for item in feed].count(
            (event["type"], event["messageId"])
        ) == 1
    assert view == classic


# --- our Actions destination -----------------------------------------------------------------------


def test_test_authentication_accepts_an_ingest_key_and_says_credentials_are_invalid_otherwise(
    server: GunicornServer, engine: Engine
) -> None:
    team = make_team(engine, "auth")

    assert timeline_call("testAuthentication", server, team.ingest) == {"ok": True, "results": None}
    wrong = timeline_call("testAuthentication", server, "tlk_" + "0" * 32)
    read_only = timeline_call("testAuthentication", server, team.read)

    assert not wrong["ok"]
    assert wrong["error"]["message"] == (
        "Credentials are invalid: 401 The API key is unknown, expired or revoked; "
        "copy a current key from your settings."
    )
    assert not read_only["ok"]
    assert "cannot send events: it lacks the ingest scope" in read_only["error"]["message"]


def test_every_preset_lands_its_event_once_in_the_same_timeline_as_the_classic_destination(
    server: GunicornServer, engine: Engine, classic: dict[str, Any]
) -> None:
    team = make_team(engine, "actions one by one")
    for event in segment_events():
        for _ in range(2):  # Segment re-delivers: the second is stored once
            answer = timeline_call("onEvent", server, team.ingest, event=event)
            assert answer["ok"], (event["type"], answer)

    assert_same_timelines(server, engine, team, classic)


def test_every_preset_lands_its_event_once_through_perform_batch(
    server: GunicornServer, engine: Engine, classic: dict[str, Any]
) -> None:
    team = make_team(engine, "actions in batches")
    for event in segment_events():
        answer = timeline_call("onBatch", server, team.ingest, events=[event], actions=[event["type"]])
        assert [result["status"] for result in multistatus(answer)] == [200], answer

    assert_same_timelines(server, engine, team, classic)


def track(index: int, user_id: str = "u-42") -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user_id,
        "messageId": f"m-batch-{index}",
        "timestamp": f"2026-03-01T12:00:0{index}.000Z",
        "properties": {"order_id": f"o-{index}"},
        "context": {"ip": "203.0.113.7", "page": {"url": "https://example.com/checkout"}},
    }


def test_a_batch_with_one_refused_event_lands_the_others_and_a_redelivery_lands_once(
    server: GunicornServer, engine: Engine
) -> None:
    team = make_team(engine, "refused in a batch")
    # The middle one breaks our Spec (an id over 255 characters), which Segment's runtime
    # does not check: we refuse it, in a 200 that lists it.
    batch = [track(0), track(1, user_id="u" * 300), track(2)]

    first = multistatus(timeline_call("onBatch", server, team.ingest, events=batch, actions=["track"]))
    again = multistatus(timeline_call("onBatch", server, team.ingest, events=batch, actions=["track"]))

    for results in (first, again):
        assert [result["status"] for result in results] == [200, 400, 200], results
        assert "255" in results[1]["errormessage"], results[1]
    wait_until_folded(engine, team.id)
    assert stored_count(engine, team.id) == 2
    _, _, feed = customer_of(server.url, team, "u-42")
    assert [item["message_id"] for item in feed] == ["m-batch-0", "m-batch-2"]


def test_a_refused_event_fails_with_our_message_and_status(server: GunicornServer, engine: Engine) -> None:
    """One event at a time, a refusal is an error with our status (not retried) and our message."""
    team = make_team(engine, "refused alone")

    too_long = timeline_call("onEvent", server, team.ingest, event=track(0, user_id="u" * 300))
    wrong_key = timeline_call("onEvent", server, "tlk_" + "0" * 32, event=track(1))

    assert not too_long["ok"]
    assert (too_long["error"]["status"], too_long["error"]["code"]) == (400, "invalid_event")
    assert "255" in too_long["error"]["message"]
    assert not wrong_key["ok"]
    assert (wrong_key["error"]["status"], wrong_key["error"]["code"]) == (401, "invalid_key")
    assert wrong_key["error"]["message"].startswith("The API key is unknown, expired or revoked")
    assert stored_count(engine, team.id) == 0


def test_on_delete_erases_the_person(server: GunicornServer, engine: Engine) -> None:
    team = make_team(engine, "deletion")
    batch = [track(0, user_id="u-gone"), track(1, user_id="u-gone"), track(2, user_id="u-stays")]
    assert [
        r["status"] for r in multistatus(timeline_call("onBatch", server, team.ingest, events=batch))
    ] == [200] * 3
    wait_until_folded(engine, team.id)
    assert customer_of(server.url, team, "u-gone")[0] == 200

    answer = timeline_call("onDelete", server, team.ingest, event={"type": "delete", "userId": "u-gone"})

    assert answer["ok"], answer
    wait_until_folded(engine, team.id)
    assert customer_of(server.url, team, "u-gone")[0] == 404
    assert customer_of(server.url, team, "u-stays")[0] == 200


# --- Segment's Webhook (Actions) destination -------------------------------------------------------


def webhook_call(call: str, server: GunicornServer, key: str, **more: Any) -> dict[str, Any]:
    return run_node(
        {"destination": "webhook", "call": call, "url": f"{server.url}/v1/segment", "apiKey": key, **more}
    )


def test_segments_webhook_one_event_a_request_lands_every_event_once(
    server: GunicornServer, engine: Engine, classic: dict[str, Any]
) -> None:
    team = make_team(engine, "webhook")
    for event in segment_events():
        answer = webhook_call("onEvent", server, team.ingest, event=event)
        assert answer["ok"], (event["type"], answer)

    assert_same_timelines(server, engine, team, classic)


def test_segments_webhook_with_batching_on_lands_every_event_once(
    server: GunicornServer, engine: Engine, classic: dict[str, Any]
) -> None:
    """Batching on, the Webhook posts a top-level JSON array of the events to the URL."""
    team = make_team(engine, "webhook batched")

    results = multistatus(
        webhook_call("onBatch", server, team.ingest, events=segment_events(), batchSize=1000)
    )

    assert [result["status"] for result in results] == [200] * 6, results
    assert_same_timelines(server, engine, team, classic)
