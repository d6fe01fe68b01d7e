"""`GET /api/v1/fold/failures` and its retry: the team's admins see what the fold set aside."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import create_app
from service.settings import Settings
from tests.conftest import TeamKeys
from tests.workers.hostile import HUGE, poisoned
from tests.workers.support import event, store
from workers.fold import fold_until_empty


def set_aside_in(engine: Engine, team: TeamKeys, count: int) -> None:
    """`count` poison events among good ones, stored directly (as before the ingest bound), folded."""
    events = [event("track", "good-0", 0, userId="ann")]
    events += [poisoned(f"poison-{n}", 1 + n, "ann", email=HUGE) for n in range(count)]
    events += [event("track", "good-1", 50, userId="ann")]
    store(engine, team.id, events)
    fold_until_empty(engine, team.id)


def listed(client: FlaskClient, team: TeamKeys, query: str = "") -> Any:
    response = client.get(f"/api/v1/fold/failures{query}", headers=team.bearer(team.admin))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_admins_see_each_set_aside_event_with_its_error(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    set_aside_in(engine, team, 1)
    body = listed(client, team)
    assert body["next_cursor"] is None
    [item] = body["data"]
    assert item["message_id"] == "poison-0"
    assert item["type"] == "identify"
    assert re.fullmatch(r"[0-9]+", item["event_id"])
    assert item["error"]["class"] == "ProgramLimitExceeded"
    assert item["error"]["sqlstate"] == "54000"
    assert "ix_customers_email_prefix" in item["error"]["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[0-9:.]+Z", item["failed_at"])


def test_the_list_pages_by_event_id(client: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    set_aside_in(engine, team, 3)
    seen: list[str] = []
    query = "?limit=2"
    while True:
        body = listed(client, team, query)
        seen += [item["message_id"] for item in body["data"]]
        if body["next_cursor"] is None:
            break
        query = f"?limit=2&cursor={body['next_cursor']}"
    assert seen == ["poison-0", "poison-1", "poison-2"]


def test_another_teams_failures_are_not_listed(
    client: FlaskClient, engine: Engine, team: TeamKeys, other_team: TeamKeys
) -> None:
    set_aside_in(engine, other_team, 1)
    assert listed(client, team)["data"] == []


@pytest.mark.parametrize(
    ("query", "code"),
    [("?limit=0", "invalid_limit"), ("?limit=abc", "invalid_limit"), ("?cursor=nonsense", "invalid_cursor")],
)
def test_bad_arguments_answer_400_saying_what_to_fix(
    client: FlaskClient, team: TeamKeys, query: str, code: str
) -> None:
    response = client.get(f"/api/v1/fold/failures{query}", headers=team.bearer(team.admin))
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == code
    assert body["message"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_only_admin_keys_see_or_retry(client: FlaskClient, team: TeamKeys, method: str) -> None:
    url = "/api/v1/fold/failures" + ("/retry" if method == "post" else "")
    call = getattr(client, method)
    assert call(url).status_code == 401
    for secret in (team.read, team.ingest):
        response = call(url, headers=team.bearer(secret))
        assert response.status_code == 403
        assert response.get_json()["code"] == "missing_scope"


def test_retry_after_a_fix_folds_the_event(
    client: FlaskClient, engine: Engine, team: TeamKeys, fold: Any
) -> None:
    set_aside_in(engine, team, 1)
    # The fix: here the stored value is corrected (in production, say, an index changed).
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE events SET raw = jsonb_set(raw, '{traits,email}', '\"ann@example.com\"') "
                "WHERE team_id = :t AND message_id = 'poison-0'"
            ),
            {"t": team.id},
        )
    response = client.post("/api/v1/fold/failures/retry", headers=team.bearer(team.admin))
    assert response.status_code == 200
    assert response.get_json() == {"retried": 1}
    fold()  # the job the retry queued
    assert listed(client, team)["data"] == []
    profile = client.get("/api/v1/customers/lookup?user_id=ann", headers=team.bearer(team.read)).get_json()
    assert profile["email"] == "ann@example.com"
    assert profile["event_count"] == 3


def test_retry_of_an_event_that_still_fails_sets_it_aside_again(
    client: FlaskClient, engine: Engine, team: TeamKeys, fold: Any
) -> None:
    set_aside_in(engine, team, 1)
    before = listed(client, team)["data"][0]["failed_at"]
    assert client.post("/api/v1/fold/failures/retry", headers=team.bearer(team.admin)).get_json() == {
        "retried": 1
    }
    fold()
    [again] = listed(client, team)["data"]
    assert again["message_id"] == "poison-0"
    assert again["failed_at"] > before


def test_retry_with_nothing_set_aside_puts_back_nothing(client: FlaskClient, team: TeamKeys) -> None:
    response = client.post("/api/v1/fold/failures/retry", headers=team.bearer(team.admin))
    assert response.status_code == 200
    assert response.get_json() == {"retried": 0}


def gauge(client: FlaskClient) -> int:
    text_ = client.get("/metrics").get_data(as_text=True)
    found = re.search(r"^fold_set_aside_events (\d+)$", text_, re.M)
    assert found, text_
    return int(found[1])


def test_metrics_count_the_set_aside_events(settings: Settings, engine: Engine, team: TeamKeys) -> None:
    # Figures are read afresh on every call here (the default caches them for 5 s).
    fresh = dataclasses.replace(settings, metrics_refresh_seconds=0.0)
    app = create_app({"TESTING": True, "SETTINGS": fresh})
    client = app.test_client()
    before = gauge(client)
    set_aside_in(engine, team, 2)
    assert gauge(client) == before + 2
    app.extensions["timeline"].dispose()


def test_a_delete_that_cannot_complete_is_loud_stays_in_the_backlog_and_completes_later(
    settings: Settings, engine: Engine, team: TeamKeys, caplog: pytest.LogCaptureFixture
) -> None:
    # A fault no data rule foresaw, simulated by a trigger: writing this person's
    # tombstone fails on the data (SQLSTATE 22023), so even the delete alone cannot complete.
    with engine.begin() as connection:
        connection.execute(
            text(
                f"""
                CREATE FUNCTION refuse_stuck_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.team_id = {team.id} AND NEW.value = 'stuck' THEN
                        RAISE EXCEPTION 'simulated fault' USING ERRCODE = '22023';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_stuck_tombstone BEFORE INSERT OR UPDATE ON tombstones
                    FOR EACH ROW EXECUTE FUNCTION refuse_stuck_tombstone();
                """
            )
        )
    fresh = dataclasses.replace(settings, metrics_refresh_seconds=0.0)
    app = create_app({"TESTING": True, "SETTINGS": fresh})
    client = app.test_client()
    try:
        store(
            engine,
            team.id,
            [
                event("identify", "s1", 0, userId="stuck", traits={"ssn": "078-05-1120"}),
                event("track", "other", 1, userId="bob"),
                event("delete", "s-del", 5, userId="stuck"),
            ],
        )
        fold_until_empty(engine, team.id)
        [item] = listed(client, team)["data"]
        assert (item["message_id"], item["type"], item["retrying"]) == ("s-del", "delete", True)
        assert item["error"]["sqlstate"] == "22023"
        metrics = client.get("/metrics").get_data(as_text=True)
        assert re.search(r"^fold_failing_deletes [1-9]", metrics, re.M), metrics
        assert "could not complete" in caplog.text
        with engine.connect() as connection:
            unfolded = (
                connection.execute(
                    text("SELECT message_id FROM events WHERE team_id = :t AND folded_at IS NULL"),
                    {"t": team.id},
                )
                .scalars()
                .all()
            )
        assert unfolded == ["s-del"]  # never looks done; bob's event folded meanwhile
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse_stuck_tombstone ON tombstones"))
            connection.execute(text("DROP FUNCTION refuse_stuck_tombstone()"))
    fold_until_empty(engine, team.id)  # the cause is gone: the next fold completes it
    assert listed(client, team)["data"] == []
    with engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :t AND (user_id = 'stuck' OR type = 'delete')"),
            {"t": team.id},
        ).scalar_one()
    assert left == 0
    app.extensions["timeline"].dispose()
