"""/v1/studies in process: validation (422), auth (401/403), body size (413), idempotency and names (409), the
cancel/resume state rules, and trial/leaderboard reads of a seeded Optuna study."""

from __future__ import annotations

import pytest

import search_spaces
from search_spaces import merge
from search_spaces.spec import StudySpec
from service.core.db import session_scope
from service.crud import claim_next_study
from service.models import StudyRecord, StudyState
from service.testing.specs import quick_spec
from tests.unit.search_spaces.test_spec import BAD as SPEC_BAD
from tests.unit.service.api.conftest import READ_AUTH, seed_trials, submit

# -- submit -------------------------------------------------------------------------------------------------------


def test_submit_queues_the_validated_spec(client):
    r = client.post("/v1/studies", json=quick_spec("first"))
    assert r.status_code == 201
    study = r.json()
    assert r.headers["location"] == f"/v1/studies/{study['id']}"
    assert study["state"] == "QUEUED" and study["progress"]["finished"] == 0 and study["best"] is None
    assert study["spec"] == StudySpec.model_validate(quick_spec("first")).canonical()


def test_submit_a_preset_with_deep_merged_overrides(client):
    r = client.post("/v1/studies", json={"preset": "mnist1d-quick", "name": "p1", "budget": {"n_trials": 3}})
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    preset = search_spaces.load_spec("mnist1d-quick").canonical()
    assert spec["budget"]["n_trials"] == 3 and spec["budget"]["max_failed"] == preset["budget"]["max_failed"]
    assert spec["search_space"] == preset["search_space"]


BAD = [
    ({"workload": {"dataset": "nope"}}, "workload.dataset", "unknown dataset 'nope'"),
    ({"optimizer": "adam"}, "optimizer", "unknown optimizer 'adam' is not installed on host"),
    ({"fixed": {"lrr": 1}}, "fixed", "did you mean 'lr'?"),
    ({"sampler": {"name": "tpe", "options": {"n_startup": 2}}}, "sampler", "tpe sampler: unknown option 'n_startup'"),
    ({"sampler": {"name": "tpe", "options": {"n_startup_trials": "x"}}}, "sampler", "option 'n_startup_trials'"),
    ({"scheduler": {"name": "asha", "options": {"brackets": 2}}}, "scheduler", "asha scheduler: unknown option"),
    ({"scheduler": {"name": "median", "options": {"hard_stop": 3}}}, "scheduler", "option 'hard_stop'"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("override", "loc", "message"), BAD, ids=[m for _, _, m in BAD])
def test_a_bad_spec_is_422_with_the_fields_location(client, override, loc, message):
    r = client.post("/v1/studies", json=merge(quick_spec("bad"), override))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    where = {".".join(map(str, e["loc"][1:])): e["msg"] for e in detail}
    assert all(e["loc"][0] == "body" for e in detail)
    assert any(k.startswith(loc) and message in msg for k, msg in where.items()), where
    assert client.get("/v1/studies").json()["total"] == 0  # nothing was queued


@pytest.mark.parametrize(("override", "loc", "message"), SPEC_BAD, ids=[m for _, _, m in SPEC_BAD])
def test_malformed_specs_are_422_with_field_errors(client, override, loc, message):
    """Every malformed spec of tests/unit/search_spaces/test_spec.py, through the API: a 422 naming the problem."""
    data = merge(quick_spec("bad"), override)
    if "search_space" in override:
        data["search_space"] = override["search_space"]
    r = client.post("/v1/studies", json=data)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and all(e["loc"][0] == "body" for e in detail)
    text = " | ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in detail)
    assert message in text, text


def test_unknown_top_level_field_and_unknown_preset_are_422(client):
    r = client.post("/v1/studies", json={**quick_spec("x"), "budgett": {"n_trials": 2}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "budgett"]
    r = client.post("/v1/studies", json={"preset": "nope"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "preset"]


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 422), (b"[]", 422), (b'"a string"', 422), (b"{}", 422), (b"x" * 70_000, 413)],
)
def test_bad_bodies(client, body, status):
    r = client.post("/v1/studies", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and "detail" in r.json()


def test_keys_and_scopes(client):
    assert client.post("/v1/studies", json=quick_spec("a"), headers={"Authorization": ""}).status_code == 401
    r = client.post("/v1/studies", json=quick_spec("a"), headers={"Authorization": "Bearer wrong-key-000"})
    assert r.status_code == 401 and r.json() == {"detail": "Invalid API key"}
    r = client.post("/v1/studies", json=quick_spec("a"), headers=READ_AUTH)
    assert r.status_code == 403 and "read scope" in r.json()["detail"]
    assert client.get("/v1/studies", headers=READ_AUTH).status_code == 200


def test_idempotency_key_replays_and_names_are_unique(client):
    key = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/studies", json=quick_spec("idem"), headers=key)
    again = client.post("/v1/studies", json=quick_spec("idem"), headers=key)
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    other = client.post("/v1/studies", json=quick_spec("idem", budget={"n_trials": 2}), headers=key)
    assert other.status_code == 409 and "different spec" in other.json()["detail"]
    taken = client.post("/v1/studies", json=quick_spec("idem"))
    assert taken.status_code == 409 and "exists" in taken.json()["detail"]
    assert client.get("/v1/studies").json()["total"] == 1


def test_openapi_describes_the_spec_body(client):
    schema = client.get("/openapi.json").json()
    ref = schema["paths"]["/v1/studies"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["additionalProperties"] is False
    assert set(StudySpec.model_fields) | {"preset"} == set(body["properties"])
    assert any("preset" in e for e in body["examples"]) and any("search_space" in e for e in body["examples"])
    states = schema["components"]["schemas"]["StudyState"]["enum"]
    assert states == [s.value for s in StudyState]


# -- reads, 404 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/studies/nope"),
        ("POST", "/v1/studies/nope/cancel"),
        ("POST", "/v1/studies/nope/resume"),
        ("GET", "/v1/studies/nope/trials"),
        ("GET", "/v1/studies/nope/leaderboard"),
    ],
)
def test_unknown_study_is_404(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 404 and r.json() == {"detail": "Study not found"}


def test_list_filters_by_state_and_pages(client):
    ids = [submit(client, f"l{i}")["id"] for i in range(3)]
    client.post(f"/v1/studies/{ids[0]}/cancel")
    page = client.get("/v1/studies", params={"limit": 2}).json()
    assert page["total"] == 3 and [s["id"] for s in page["items"]] == ids[::-1][:2]  # newest first
    cancelled = client.get("/v1/studies", params={"state": "CANCELLED"}).json()
    assert cancelled["total"] == 1 and cancelled["items"][0]["id"] == ids[0]
    assert client.get("/v1/studies", params={"state": "DONE"}).status_code == 422
    assert client.get("/v1/studies", params={"limit": 0}).status_code == 422


def test_trials_and_leaderboard_of_a_seeded_study(client, settings):
    study = submit(client, "seeded")
    seed_trials(settings.database_url, "seeded", [0.5, 0.9, None, 0.7])
    board = client.get(f"/v1/studies/{study['id']}/leaderboard").json()
    assert (board["metric"], board["direction"]) == ("val_acc", "maximize")
    assert [(e["rank"], e["number"], e["value"]) for e in board["items"]] == [(1, 1, 0.9), (2, 3, 0.7), (3, 0, 0.5)]
    top = board["items"][0]
    assert (top["best_val_acc"], top["test_acc_at_best_val"], top["best_test_acc"], top["epochs"]) == (
        0.9,
        0.89,
        0.9,
        1,
    )
    assert len(client.get(f"/v1/studies/{study['id']}/leaderboard", params={"limit": 1}).json()["items"]) == 1
    trials = client.get(f"/v1/studies/{study['id']}/trials").json()
    assert trials["total"] == 4 and [t["state"] for t in trials["items"]] == [
        "COMPLETE",
        "COMPLETE",
        "FAIL",
        "COMPLETE",
    ]
    assert trials["items"][2]["user_attrs"] == {"fail_reason": "boom"} and trials["items"][2]["values"] is None
    failed = client.get(f"/v1/studies/{study['id']}/trials", params={"state": "FAIL"}).json()
    assert failed["total"] == 1 and failed["items"][0]["number"] == 2
    with_curves = client.get(f"/v1/studies/{study['id']}/trials", params={"state": "FAIL", "curves": True}).json()
    assert with_curves["items"][0]["user_attrs"] == {"fail_reason": "boom", "note": "not a summary attr"}
    assert client.get(f"/v1/studies/{study['id']}/trials", params={"state": "DONE"}).status_code == 422
    live = client.get(f"/v1/studies/{study['id']}").json()
    assert live["progress"]["complete"] == 3 and live["progress"]["failed"] == 1
    assert live["best"] == {
        "number": 1,
        "value": 0.9,
        "params": board["items"][0]["params"],
        "best_val_acc": 0.9,
        "test_acc_at_best_val": 0.89,
        "best_test_acc": 0.9,
    }


def test_leaderboard_lists_pruned_trials_after_the_complete_ones(client, settings):
    study = submit(client, "with-pruned")
    seed_trials(settings.database_url, "with-pruned", [0.5, "pruned:0.95", 0.7])
    complete_only = client.get(f"/v1/studies/{study['id']}/leaderboard").json()["items"]
    assert [e["number"] for e in complete_only] == [2, 0]
    board = client.get(f"/v1/studies/{study['id']}/leaderboard", params={"include_pruned": True}).json()["items"]
    # a pruned trial's value is from an earlier epoch: listed, with the epoch it reached, never ranked above
    assert [(e["number"], e["state"], e["value"], e["epochs"]) for e in board] == [
        (2, "COMPLETE", 0.7, 1),
        (0, "COMPLETE", 0.5, 1),
        (1, "PRUNED", 0.95, 2),
    ]


def test_a_study_without_trials_reads_empty(client):
    study = submit(client, "empty")
    assert client.get(f"/v1/studies/{study['id']}/trials").json()["items"] == []
    assert client.get(f"/v1/studies/{study['id']}/leaderboard").json()["items"] == []


# -- cancel and resume --------------------------------------------------------------------------------------------


def _set_state(settings, study_id: str, state: StudyState) -> None:
    with session_scope(settings.database_url) as s:
        s.get(StudyRecord, study_id).state = state.value


def test_cancel_and_resume_follow_the_state_rules(client):
    study = submit(client, "cr")
    r = client.post(f"/v1/studies/{study['id']}/resume")
    assert r.status_code == 409 and "nothing to resume" in r.json()["detail"]
    r = client.post(f"/v1/studies/{study['id']}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "CANCELLED" and r.json()["finished_at"]
    r = client.post(f"/v1/studies/{study['id']}/cancel")
    assert r.status_code == 409 and "only a QUEUED or RUNNING study" in r.json()["detail"]
    r = client.post(f"/v1/studies/{study['id']}/resume", json={"n_trials": 2})
    assert r.status_code == 409 and "n_trials can only grow" in r.json()["detail"]
    assert client.post(f"/v1/studies/{study['id']}/resume", json={"n_trials": 0}).status_code == 422
    assert client.post(f"/v1/studies/{study['id']}/resume", json={"n": 9}).status_code == 422
    r = client.post(f"/v1/studies/{study['id']}/resume", json={"n_trials": 9})
    assert r.status_code == 202 and r.json()["state"] == "QUEUED" and r.json()["spec"]["budget"]["n_trials"] == 9
    assert r.json()["progress"]["n_trials"] == 9 and r.json()["finished_at"] is None


def test_a_running_study_gets_a_cancel_request(client, settings):
    study = submit(client, "run")
    with session_scope(settings.database_url) as s:
        assert claim_next_study(session=s, worker_id="w1", stale_after_s=60).id == study["id"]
    r = client.post(f"/v1/studies/{study['id']}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "RUNNING" and r.json()["cancel_requested"] is True
    assert r.json()["worker_id"] == "w1"


def test_a_succeeded_study_resumes_only_with_more_trials(client, settings):
    study = submit(client, "done")
    _set_state(settings, study["id"], StudyState.SUCCEEDED)
    r = client.post(f"/v1/studies/{study['id']}/resume")
    assert r.status_code == 409 and "pass a larger n_trials" in r.json()["detail"]
    r = client.post(f"/v1/studies/{study['id']}/resume", json={"n_trials": 7})
    assert r.status_code == 202 and r.json()["state"] == "QUEUED"
