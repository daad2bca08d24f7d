"""/v1/search-spaces, in process."""

from __future__ import annotations

import search_spaces
from tests.unit.service.api.conftest import READ_AUTH


def test_lists_every_preset_summarised(client):
    r = client.get("/v1/search-spaces", headers=READ_AUTH)
    assert r.status_code == 200
    items = {p["name"]: p for p in r.json()["items"]}
    assert set(items) == set(search_spaces.names())
    quick = items["mnist1d-quick"]
    assert quick["optimizer"] == "tvlars" and quick["parameters"] and quick["n_trials"] >= 1


def test_reads_a_preset_as_its_canonical_spec(client):
    r = client.get("/v1/search-spaces/mnist1d-quick")
    assert r.status_code == 200 and r.json() == search_spaces.load_spec("mnist1d-quick").canonical()


def test_unknown_preset_is_404_and_keys_are_checked(client):
    assert client.get("/v1/search-spaces/nope").status_code == 404
    r = client.get("/v1/search-spaces", headers={"Authorization": ""})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
