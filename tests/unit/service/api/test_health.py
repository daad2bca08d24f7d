"""/healthz, /readyz and /metrics, in process."""

from __future__ import annotations

from service.core.db import session_scope
from service.models import WorkerRecord
from tests.unit.service.api.conftest import submit


def test_healthz_needs_no_key(client):
    r = client.get("/healthz", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_needs_a_live_worker(client, settings):
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["database"] == "ok" and r.json()["workers"] == 0
    with session_scope(settings.database_url) as s:
        s.add(WorkerRecord(id="w1", host="here", pid=1))
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"database": "ok", "workers": 1, "status": "ready"}


def test_metrics_count_studies_by_state(client):
    submit(client, "m1")
    submit(client, "m2")
    client.get("/v1/studies/nope")
    text = client.get("/metrics").text
    assert 'tvlars_studies{state="QUEUED"} 2.0' in text and 'tvlars_studies{state="FAILED"} 0.0' in text
    assert 'route="/v1/studies/{study_id}",status="404"' in text
