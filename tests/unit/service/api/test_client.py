"""service.client.Client against the in-process app (the TestClient is the client's httpx transport): every
resource method, the typed error of each status the API answers, the Idempotency-Key, and the 503 retry."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.client import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    retry_delay,
)
from service.core.config import Settings
from service.main import RETRY_AFTER_S, create_app
from service.testing.server import READ_KEY, WRITE_KEY, free_port
from service.testing.specs import quick_spec
from tests.unit.service.api.conftest import seed_trials
from tests.unit.service.api.test_comparisons import SMALL


@pytest.fixture
def api(client: TestClient) -> Client:
    return Client(api_key=WRITE_KEY, http_client=client)


def test_studies_submit_read_list_cancel_resume_wait(api, client, settings):
    study = api.studies.submit("mnist1d-quick", name="from-preset", overrides={"budget": {"n_trials": 7}})
    assert study["state"] == "QUEUED" and study["name"] == "from-preset"
    assert study["spec"]["budget"]["n_trials"] == 7 and study["spec"]["optimizer"] == "tvlars"
    assert api.studies.get(study["id"]) == client.get(f"/v1/studies/{study['id']}").json()

    spec = quick_spec("from-dict")
    other = api.studies.submit(spec)
    assert set(other["spec"]["search_space"]) == {"lr", "lam"} and other["spec"]["sampler"]["name"] == "random"
    listing = api.studies.list(limit=1)
    assert listing["total"] == 2 and [s["id"] for s in listing["items"]] == [other["id"]]
    assert api.studies.list(state="QUEUED")["total"] == 2 and api.studies.list(state="FAILED")["total"] == 0

    cancelled = api.studies.cancel(study["id"])
    assert cancelled["state"] == "CANCELLED"
    seen = []
    assert api.studies.wait(study["id"], on_progress=seen.append)["state"] == "CANCELLED"
    assert [s["state"] for s in seen] == ["CANCELLED"]
    resumed = api.studies.resume(study["id"], n_trials=9)
    assert resumed["state"] == "QUEUED" and resumed["spec"]["budget"]["n_trials"] == 9
    with pytest.raises(TimeoutError, match="still QUEUED"):
        api.studies.wait(study["id"], timeout=0.2, poll_s=0.05)


def test_a_spec_file_is_submitted_as_read(api, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("preset: mnist1d-quick\nname: from-file\nbudget: {n_trials: 3}\n")
    study = api.studies.submit(path)
    assert study["name"] == "from-file" and study["spec"]["budget"]["n_trials"] == 3


def test_leaderboard_and_trials(api, settings):
    study = api.studies.submit(quick_spec("seeded"))
    seed_trials(settings.database_url, "seeded", [0.5, 0.9, None, 0.7, "pruned:0.95"])
    board = api.studies.leaderboard(study["id"], limit=2)
    assert (board["metric"], board["direction"]) == ("val_acc", "maximize")
    rows = [(r["rank"], r["value"], r["test_acc_at_best_val"]) for r in board["items"]]
    assert rows == [(1, 0.9, 0.89), (2, 0.7, 0.69)]
    with_pruned = api.studies.leaderboard(study["id"], limit=10, include_pruned=True)["items"]
    assert [r["state"] for r in with_pruned] == ["COMPLETE"] * 3 + ["PRUNED"]
    page = api.studies.trials(study["id"], state="FAIL")
    assert page["total"] == 1 and page["items"][0]["user_attrs"]["fail_reason"] == "boom"
    page = api.studies.trials(study["id"], limit=2, offset=1)
    assert page["total"] == 5 and [t["number"] for t in page["items"]] == [1, 2]


def test_comparisons_submit_read_cancel_resume(api):
    c = api.comparisons.submit(SMALL)
    assert c["state"] == "QUEUED" and len(c["arms"]) == 4
    assert api.comparisons.get(c["id"])["id"] == c["id"] and api.comparisons.list()["total"] == 1
    with pytest.raises(NotFoundError, match="QUEUED") as e:
        api.comparisons.result(c["id"])
    assert e.value.status_code == 404
    with pytest.raises(NotFoundError):
        api.comparisons.report(c["id"])
    with pytest.raises(ConflictError):
        api.comparisons.resume(c["id"])  # QUEUED: nothing to resume
    assert api.comparisons.cancel(c["id"])["state"] == "CANCELLED"
    assert api.comparisons.wait(c["id"])["state"] == "CANCELLED"
    assert api.comparisons.resume(c["id"])["state"] == "QUEUED"


def test_each_status_is_its_own_error_with_the_servers_detail(api, client):
    with pytest.raises(NotFoundError) as e:
        api.studies.get("no-such-id")
    assert (e.value.status_code, e.value.detail) == (404, "Study not found")
    with pytest.raises(UnprocessableEntityError) as e:
        api.studies.submit(quick_spec("bad", budget={"n_trials": 0}))
    assert e.value.status_code == 422 and e.value.detail[0]["loc"][-2:] == ["budget", "n_trials"]
    assert "budget.n_trials" in str(e.value)  # field errors read as `field.path: message`
    api.studies.submit(quick_spec("taken"))
    with pytest.raises(ConflictError) as e:
        api.studies.submit(quick_spec("taken", seed=3))
    assert e.value.status_code == 409 and "exists" in e.value.detail
    with pytest.raises(AuthenticationError) as e:
        Client(api_key=READ_KEY, http_client=client).studies.submit(quick_spec("read-only"))
    assert e.value.status_code == 403
    client.headers.pop("Authorization")
    with pytest.raises(AuthenticationError) as e:
        Client(http_client=client).studies.list()
    assert e.value.status_code == 401
    assert all(issubclass(c, APIError) for c in (NotFoundError, ConflictError, AuthenticationError))


def test_submit_sends_an_idempotency_key_and_a_given_one_replays(api, client):
    sent = []
    client.event_hooks["request"].append(lambda request: sent.append(request.headers.get("Idempotency-Key")))
    first = api.studies.submit(quick_spec("idem"), idempotency_key="k1")
    assert api.studies.submit(quick_spec("idem"), idempotency_key="k1")["id"] == first["id"]  # a replay: 200
    with pytest.raises(ConflictError, match="different spec"):
        api.studies.submit(quick_spec("idem", seed=4), idempotency_key="k1")
    api.studies.submit(quick_spec("idem-2"))
    api.studies.submit(quick_spec("idem-3"))
    assert sent[:3] == ["k1"] * 3 and len(set(sent[3:])) == 2 and all(sent[3:])


def test_503_is_retried_after_retry_after_then_raised(tmp_path):
    """An app whose database is unreachable answers 503 with Retry-After: the client waits that long between tries."""
    settings = Settings(
        database_url=f"postgresql+psycopg://root@127.0.0.1:{free_port()}/none", db_connect_timeout_s=1, api_keys=""
    )
    # no lifespan: nothing migrates the missing database; no keys: the app answers a loopback address only
    http = TestClient(create_app(settings), base_url="http://127.0.0.1")
    sent = []
    http.event_hooks["request"].append(lambda request: sent.append(time.monotonic()))
    with pytest.raises(ServiceUnavailableError) as e:
        Client(http_client=http, max_retries=1).studies.list()
    assert e.value.status_code == 503 and "database is unavailable" in e.value.detail
    assert e.value.response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert len(sent) == 2 and sent[1] - sent[0] >= RETRY_AFTER_S


def test_back_off_honours_retry_after_within_bounds():
    assert retry_delay(0, "2") == 2.0 and retry_delay(5, "0") == 0.0
    assert retry_delay(0, "3600") == retry_delay(10) == 10.0  # bounded
    assert [retry_delay(a) for a in range(3)] == [0.5, 1.0, 2.0]
    assert retry_delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0  # a date: back-off as without one


def test_an_unreachable_server_is_a_connection_error_after_the_retries():
    client = Client(f"http://127.0.0.1:{free_port()}", max_retries=1, timeout=2)
    started = time.monotonic()
    with pytest.raises(APIConnectionError, match="cannot reach") as e:
        client.studies.get("x")
    assert e.value.status_code is None and time.monotonic() - started >= retry_delay(0)
    assert client.ready() is False


def test_workloads(api, client):
    workloads = api.workloads()
    assert workloads == client.get("/v1/workloads").json()
    assert "mnist1d" in {d["name"] for d in workloads["datasets"]}
    assert "tvlars" in {o["name"] for o in workloads["optimizers"]}
