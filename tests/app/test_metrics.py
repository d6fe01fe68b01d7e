"""`/metrics` counts what ingest did (SPEC §6): events accepted and refused, request latency.

The ingest lane answers in front of Flask's routing (app/ingest/lane.py), so Flask's request
hooks do not time it; these tests hold the lane to the same figures as every other route.
"""

from __future__ import annotations

import re
import uuid

from flask.testing import FlaskClient

from tests.conftest import TeamKeys

LATENCY_COUNT = "http_request_duration_seconds_count"


def sample(client: FlaskClient, name: str, **labels: str) -> float:
    """One sample's value in the Prometheus text of /metrics (0 when it is not there yet)."""
    text = client.get("/metrics").get_data(as_text=True)
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)\{([^}]*)\} (\S+)", line)
        if match and match[1] == name and ",".join(sorted(match[2].split(","))) == wanted:
            return float(match[3])
    return 0.0


def track(event: str = "Signed Up") -> dict[str, object]:
    return {"type": "track", "userId": "u-metrics", "event": event, "messageId": str(uuid.uuid4())}


def test_an_accepted_event_is_counted_and_its_request_timed(client: FlaskClient, team: TeamKeys) -> None:
    accepted = sample(client, "events_accepted_total", type="track")
    timed = sample(client, LATENCY_COUNT, route="/v1/segment", status="200")
    response = client.post("/v1/segment", json=track(), headers=team.basic(team.ingest))
    assert response.status_code == 200
    assert sample(client, "events_accepted_total", type="track") == accepted + 1
    assert sample(client, LATENCY_COUNT, route="/v1/segment", status="200") == timed + 1


def test_a_refused_event_is_counted_by_type_and_reason(client: FlaskClient, team: TeamKeys) -> None:
    refused = sample(client, "events_rejected_total", type="track", reason="invalid_event")
    timed = sample(client, LATENCY_COUNT, route="/v1/segment", status="400")
    bad = {"type": "track", "userId": "u-metrics", "messageId": str(uuid.uuid4())}  # no `event`
    response = client.post("/v1/segment", json=bad, headers=team.basic(team.ingest))
    assert response.status_code == 400
    assert sample(client, "events_rejected_total", type="track", reason="invalid_event") == refused + 1
    assert sample(client, LATENCY_COUNT, route="/v1/segment", status="400") == timed + 1


def test_a_request_refused_whole_is_counted_by_reason(client: FlaskClient) -> None:
    before = sample(client, "ingest_requests_rejected_total", reason="missing_key")
    assert client.post("/v1/segment", json=track()).status_code == 401
    assert sample(client, "ingest_requests_rejected_total", reason="missing_key") == before + 1


def test_an_event_older_than_the_retention_is_not_counted_as_accepted(
    client: FlaskClient, team: TeamKeys
) -> None:
    set_retention = client.put(
        "/api/v1/team/retention", json={"retention_days": 30}, headers=team.bearer(team.admin)
    )
    assert set_retention.status_code == 200
    accepted = sample(client, "events_accepted_total", type="track")
    old = {**track("Viewed Pricing"), "timestamp": "2020-01-01T00:00:00Z"}
    response = client.post("/v1/batch", json={"batch": [old, track()]}, headers=team.basic(team.ingest))
    assert response.status_code == 200 and response.get_json()["expired"] == 1
    assert sample(client, "events_accepted_total", type="track") == accepted + 1
