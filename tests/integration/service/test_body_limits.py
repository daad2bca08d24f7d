"""Bad bodies against the real server (uvicorn, PostgreSQL): a chunked body over the limit is 413 as the README
promises (it was 400), NaN is a 422 naming the field (PostgreSQL's JSON column refused it: a 500), deep nesting is a
422 before parsing (it was a RecursionError)."""

from __future__ import annotations

import json

from service.testing.specs import quick_spec


def test_a_chunked_body_over_256_kib_is_413(server):
    data = json.dumps({**quick_spec("big"), "description": "x" * 700_000}).encode()
    with server.client() as c:
        r = c.post(
            "/v1/studies",
            content=iter([data[i : i + 65_536] for i in range(0, len(data), 65_536)]),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 413, r.text
        assert "262144" in r.json()["detail"]
        assert c.get("/v1/studies", params={"limit": 1}).status_code == 200  # the server goes on


def test_nan_and_deep_nesting_are_422_on_postgresql(server):
    nan = json.dumps(quick_spec("nan-study")).replace('"momentum": 0.9', '"momentum": NaN')
    deep = json.dumps(quick_spec("deep-study")).replace('"momentum": 0.9', '"x": ' + "[" * 700 + "]" * 700)
    with server.client() as c:
        r = c.post("/v1/studies", content=nan, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "fixed", "momentum"]
        r = c.post("/v1/studies", content=deep, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert "nested deeper than" in r.json()["detail"]
