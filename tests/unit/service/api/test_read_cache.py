"""Reads served from memory (service.api.cache): what the API writes shows at once, on any API process; what a
worker writes shows within the cache's TTL (a comparison's: at once); ETags answer 304."""

from __future__ import annotations

import time
from dataclasses import asdict

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.core.db import dispose, session_scope
from service.core.jsondata import jsonable
from service.main import create_app
from service.models import ComparisonRecord, StudyRecord
from tests.unit.service.api.conftest import AUTH, seed_trials, submit
from tests.utils.comparisons import fabricated_result

CACHED_READS = ("", "/trials", "/leaderboard")


@pytest.fixture
def two_processes(settings):
    """Two apps on one database, each with its own cache: what two ``serve --api-processes 2`` processes are."""
    with TestClient(create_app(settings), headers=AUTH) as a, TestClient(create_app(settings), headers=AUTH) as b:
        yield a, b
    dispose(settings.database_url)


def test_a_write_on_one_process_shows_at_once_on_the_other(two_processes):
    a, b = two_processes
    study = submit(a, "cached")
    path = f"/v1/studies/{study['id']}"
    assert b.get(path).json()["state"] == "QUEUED"  # b has it cached now
    assert b.get("/v1/studies").json()["items"][0]["state"] == "QUEUED"
    assert a.post(f"{path}/cancel").status_code == 202
    # the cache key holds the study row's version, read on every request: no TTL to wait out
    assert b.get(path).json()["state"] == "CANCELLED"
    assert b.get("/v1/studies").json()["items"][0]["state"] == "CANCELLED"
    assert b.post(f"{path}/resume").status_code == 202
    assert a.get(path).json()["state"] == "QUEUED"


def test_trial_data_show_within_the_ttl(client, settings):
    study = submit(client, "cached")
    path = f"/v1/studies/{study['id']}"
    assert client.get(path).json()["progress"]["complete"] == 0
    assert client.get(f"{path}/trials").json()["total"] == 0
    assert client.get(f"{path}/leaderboard").json()["items"] == []
    seed_trials(settings.database_url, "cached", [0.5, 0.9])  # a worker's writes: not through the API
    deadline = time.monotonic() + settings.api_cache_ttl_s + 2
    while client.get(f"{path}/trials").json()["total"] != 2:
        assert time.monotonic() < deadline, "trials not shown within the cache's TTL"
        time.sleep(0.05)
    time.sleep(settings.api_cache_ttl_s)  # every read's TTL has run out now
    assert client.get(path).json()["progress"]["complete"] == 2
    assert [e["value"] for e in client.get(f"{path}/leaderboard").json()["items"]] == [0.9, 0.5]


def test_with_the_cache_off_a_worker_write_shows_on_the_next_read(settings):
    settings = settings.model_copy(update={"api_cache_ttl_s": 0})
    with TestClient(create_app(settings), headers=AUTH) as client:
        study = submit(client, "uncached")
        path = f"/v1/studies/{study['id']}"
        assert client.get(f"{path}/trials").json()["total"] == 0
        seed_trials(settings.database_url, "uncached", [0.5])
        assert client.get(f"{path}/trials").json()["total"] == 1
        assert client.get(path).json()["best"]["value"] == 0.5
        assert client.app.state.read_cache.hits == 0
    dispose(settings.database_url)


@pytest.mark.parametrize("suffix", CACHED_READS)
def test_etag_answers_304_until_the_body_changes(client, settings, suffix):
    study = submit(client, "etag")
    path = f"/v1/studies/{study['id']}{suffix}"
    first = client.get(path)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('W/"') and first.headers["Cache-Control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200
    seed_trials(settings.database_url, "etag", [0.5])  # the tag is the body's: it changes when the body does
    time.sleep(settings.api_cache_ttl_s)
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_the_list_is_cached_by_its_page_and_answers_like_the_models(client):
    ids = [submit(client, f"l{i}")["id"] for i in range(3)]
    page = client.get("/v1/studies", params={"limit": 2})
    assert page.headers["content-type"] == "application/json"
    body = page.json()
    assert [s["id"] for s in body["items"]] == ids[::-1][:2] and body["total"] == 3
    # the same bytes from the cache, and the same as a study's own read
    assert client.get("/v1/studies", params={"limit": 2}).content == page.content
    assert client.get(f"/v1/studies/{ids[2]}").json() == body["items"][0]
    assert client.app.state.read_cache.hits >= 1
    submit(client, "l3")  # a new study changes the page (and its total)
    assert client.get("/v1/studies", params={"limit": 2}).json()["total"] == 4


# -- comparisons: keyed by the comparison's row and its studies' rows ------------------------------------------------

COMPARISON = {
    "preset": "compare-mnist1d-cpu",
    "name": "cached-comparison",
    "arms": [{"optimizer": "tvlars"}, {"optimizer": "lamb", "lr_center": 0.03}],
    "primary": ["lamb"],  # the preset's primary arm (lars_warmup) is not among these
    "workload": {"epochs": 20},
    "batch_sizes": [256],
    "budget": {"epochs": 60, "max_concurrent": 1},
    "rerun": {"top_k": 1, "seeds": 3},
    "tuning_repeats": 1,
}


def _submit_comparison(client) -> dict:
    r = client.post("/v1/comparisons", json=COMPARISON)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("list_read", [False, True], ids=["one", "list"])
def test_a_comparison_read_answers_304_until_a_cancel_changes_it(client, list_read):
    c = _submit_comparison(client)
    path = "/v1/comparisons" if list_read else f"/v1/comparisons/{c['id']}"
    first = client.get(path)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('W/"') and first.headers["Cache-Control"] == "no-cache"
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert client.post(f"/v1/comparisons/{c['id']}/cancel").status_code == 202
    after = client.get(path, headers={"If-None-Match": etag})  # no TTL to wait out: the row's version moved
    assert after.status_code == 200 and after.headers["ETag"] != etag
    got = after.json()["items"][0] if list_read else after.json()
    assert got["state"] == "CANCELLED" and got["id"] == c["id"]


def test_a_write_to_a_comparisons_study_shows_at_once_on_another_process(two_processes, settings):
    a, b = two_processes
    c = _submit_comparison(a)
    path = f"/v1/comparisons/{c['id']}"
    before = b.get(path)
    assert [arm["epochs_spent"] for arm in before.json()["arms"]] == [0, 0]
    with session_scope(settings.database_url) as s:  # the worker's write: to a study's row, not the comparison's
        study = s.scalars(sa.select(StudyRecord).where(StudyRecord.comparison_id == c["id"])).first()
        study.epochs_spent, arm = 7, study.arm
    after = b.get(path, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    assert {x["label"]: x["epochs_spent"] for x in after.json()["arms"]}[arm] == 7


def test_a_comparisons_result_and_report_are_cached_by_its_version(client, settings):
    c = _submit_comparison(client)
    stored = jsonable(asdict(fabricated_result(batch_sizes=(256,), n_trials=3, repeats=2)))
    with session_scope(settings.database_url) as s:
        record = s.get(ComparisonRecord, c["id"])
        record.result, record.state, record.phase = stored, "SUCCEEDED", "done"
    for suffix, media in (("result", "application/json"), ("report", "text/html")):
        path = f"/v1/comparisons/{c['id']}/{suffix}"
        first = client.get(path)
        assert first.status_code == 200 and first.headers["content-type"].startswith(media)
        assert client.get(path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert client.get(f"/v1/comparisons/{c['id']}/result").json() == stored
