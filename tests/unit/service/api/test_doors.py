"""The doors, in process: without API keys the app answers only loopback Host names, only requests that arrived on
a loopback address (the ASGI scope's ``server``: however the app is served), and only writes no page of another
site can send; with keys, roles (read ⊆ write ⊆ admin), a write key changes only its own studies and comparisons,
and ``owner`` is a salted id. Every refusal is a 4xx whose detail says what to do."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import anyio
import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api.doors import refusal
from service.client import Client
from service.core.config import Settings, owner_id
from service.core.db import dispose, get_engine
from service.main import create_app
from service.testing.server import READ_KEY, WRITE_KEY
from service.testing.specs import quick_spec
from tests.unit.service.api.test_comparisons import SMALL

#: Where an in-process client of an app without keys says it connected: a loopback address (TestClient's default,
#: "testserver", is neither a loopback address nor a loopback name, and is refused like any other).
LOOPBACK_URL = "http://127.0.0.1"
OTHER_KEY = "other-writer-0123456789"
ADMIN_KEY = "admin-key-0123456789"
KEYS = f"{WRITE_KEY}:write,{OTHER_KEY}:write,{ADMIN_KEY}:admin,{READ_KEY}:read"
JSON = {"content-type": "application/json"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def db_url(tmp_path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'doors.db'}"
    yield url
    dispose(url)


@pytest.fixture
def open_client(db_url) -> Iterator[TestClient]:
    """An app without keys, called as from this machine."""
    with TestClient(create_app(Settings(database_url=db_url)), base_url=LOOPBACK_URL) as c:
        yield c


@pytest.fixture
def keyed(db_url) -> Iterator[TestClient]:
    """An app with a read, two write and an admin key; no key sent unless a request says which."""
    with TestClient(create_app(Settings(database_url=db_url, api_keys=KEYS))) as c:
        yield c


# -- without keys: Host, address, cross-site writes ------------------------------------------------------------------


def test_without_keys_only_loopback_host_names_are_answered(open_client):
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"):
        assert open_client.get("/v1/studies", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "10.0.0.5:8000"):
        r = open_client.get("/v1/studies", headers={"host": host})  # DNS rebinding: a page's own name, our address
        assert r.status_code == 403, host
        assert "TVLARS_ALLOWED_HOSTS" in r.json()["detail"] and "TVLARS_API_KEYS" in r.json()["detail"], host
    r = open_client.post("/v1/studies", json=quick_spec("rebound"), headers={"host": "attacker.example"})
    assert r.status_code == 403 and open_client.get("/v1/studies").json()["total"] == 0


def test_allowed_hosts_are_configurable_with_or_without_keys(db_url):
    open_settings = Settings(database_url=db_url, allowed_hosts="tvlars.internal, *.lab.example")
    with TestClient(create_app(open_settings), base_url=LOOPBACK_URL) as c:
        for host, status in [
            ("tvlars.internal:8000", 200),
            ("gpu1.lab.example", 200),
            ("attacker.example", 403),
            ("127.0.0.1", 403),  # the list replaces the default: a name nobody listed is refused
        ]:
            assert c.get("/healthz", headers={"host": host}).status_code == status, host
    with TestClient(create_app(Settings(database_url=db_url, api_keys=KEYS))) as c:  # keys: any Host by default
        assert c.get("/v1/studies", headers={"host": "api.example", **bearer(READ_KEY)}).status_code == 200
    keyed_settings = Settings(database_url=db_url, api_keys=KEYS, allowed_hosts="api.example")
    with TestClient(create_app(keyed_settings)) as c:
        assert c.get("/v1/studies", headers={"host": "api.example", **bearer(READ_KEY)}).status_code == 200
        r = c.get("/v1/studies", headers={"host": "attacker.example", **bearer(READ_KEY)})
        assert r.status_code == 403 and "TVLARS_ALLOWED_HOSTS" in r.json()["detail"]
    with pytest.raises(ValueError, match="wildcard"):
        Settings(database_url=db_url, allowed_hosts="api*.example")


@pytest.mark.parametrize("transport", ["testclient", "httpx"])
def test_without_keys_a_request_that_arrived_on_a_public_address_is_refused(db_url, transport):
    """The app itself checks the address the request arrived on (the ASGI scope's ``server``), so a server started
    without ``tvlars-tune serve``'s own check (``uvicorn --factory service.main:create_app --host 0.0.0.0``) is
    closed too. The Host header is a loopback name throughout: only the address differs."""
    app = create_app(Settings(database_url=db_url))

    def get(base_url: str) -> httpx.Response:
        headers = {"host": "127.0.0.1"}
        if transport == "testclient":
            with TestClient(app, base_url=base_url) as c:
                return c.get("/healthz", headers=headers)

        async def over_asgi() -> httpx.Response:  # httpx's ASGI transport, as this folder's async clients use
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as c:
                return await c.get("/healthz", headers=headers)

        return anyio.run(over_asgi)

    for public in ("http://192.0.2.10:8000", "http://[2001:db8::1]:8000", "http://testserver"):
        r = get(public)
        assert r.status_code == 403, public
        assert "loopback" in r.json()["detail"] and "TVLARS_API_KEYS" in r.json()["detail"], public
    for loopback in ("http://127.0.0.1:8000", "http://127.0.0.2", "http://[::1]:8000"):
        assert get(loopback).status_code == 200, loopback


@pytest.mark.parametrize(
    ("server", "refused"),
    [
        (("127.0.0.1", 8000), False),
        (("::ffff:127.0.0.1", 8000), False),  # IPv4-mapped loopback, as a dual-stack socket reports it
        (("/run/tvlars/api.sock", None), False),  # a Unix socket (uvicorn --uds): reached through the file system
        (("0.0.0.0", 8000), True),
        (("10.1.2.3", 8000), True),
        (("testserver", None), True),  # httpx's ASGI transport on a default port: a name, not a socket's path
        (None, True),  # the server did not say: refused
    ],
)
def test_the_address_check_reads_the_scopes_server(server, refused):
    scope = {"type": "http", "method": "GET", "headers": [(b"host", b"127.0.0.1")], "server": server}
    assert (refusal(scope) is not None) is refused


def test_without_keys_cross_site_writes_are_refused_and_store_nothing(open_client):
    spec = quick_spec("csrf")
    for headers, status in [
        ({"origin": "https://attacker.example"}, 403),
        ({"origin": "null"}, 403),  # a sandboxed frame or a file
        ({"origin": "http://127.0.0.1.attacker.example:8000"}, 403),
    ]:
        r = open_client.post("/v1/studies", json=spec, headers=headers)
        assert r.status_code == status and "Cross-site write refused" in r.json()["detail"], headers
    # a form can post text/plain without asking first: only JSON is taken
    r = open_client.post("/v1/studies", content=b'{"name": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert open_client.get("/v1/studies").json()["total"] == 0

    # this server's own pages (the docs) and pages on this machine may write; a client without Origin too
    first = open_client.post("/v1/studies", json=spec, headers={"origin": "http://127.0.0.1"})
    assert first.status_code == 201, first.text
    study = first.json()["id"]
    for bodyless in ({}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        r = open_client.post(f"/v1/studies/{study}/cancel", headers=bodyless)
        assert r.status_code == 415 and "Content-Type: application/json" in r.json()["detail"], bodyless
    r = open_client.post(f"/v1/studies/{study}/cancel", headers={**JSON, "origin": "https://attacker.example"})
    assert r.status_code == 403
    assert open_client.get(f"/v1/studies/{study}").json()["state"] == "QUEUED"  # nothing of that reached it
    r = open_client.post(f"/v1/studies/{study}/cancel", headers={**JSON, "origin": "http://localhost:3000"})
    assert r.status_code == 202 and r.json()["state"] == "CANCELLED"
    r = open_client.post(f"/v1/studies/{study}/resume", headers=JSON)  # bodyless JSON write: fine
    assert r.status_code == 202 and r.json()["state"] == "QUEUED"


def test_the_client_writes_to_a_server_without_keys(open_client):
    """The Python client (and so the CLI) sends every write as JSON, bodyless cancels and resumes too."""
    api = Client(http_client=open_client)
    study = api.studies.submit(quick_spec("by-client"))
    assert api.studies.cancel(study["id"])["state"] == "CANCELLED"
    assert api.studies.resume(study["id"])["state"] == "QUEUED"
    assert study["owner"] is None  # no keys: no owner


# -- with keys: roles, owners -----------------------------------------------------------------------------------------


def test_roles_read_within_write_within_admin(keyed):
    for key in (READ_KEY, WRITE_KEY, ADMIN_KEY):
        assert keyed.get("/v1/studies", headers=bearer(key)).status_code == 200, key
    r = keyed.post("/v1/studies", json=quick_spec("by-reader"), headers=bearer(READ_KEY))
    assert r.status_code == 403 and "read scope" in r.json()["detail"] and "KEY:write" in r.json()["detail"]
    assert keyed.post("/v1/studies", json=quick_spec("by-admin"), headers=bearer(ADMIN_KEY)).status_code == 201
    with pytest.raises(ValueError, match="read, write or admin"):
        Settings(api_keys="some-long-key-123:root")


def test_a_write_key_cancels_and_resumes_only_its_own_studies_an_admin_key_any(keyed):
    study = keyed.post("/v1/studies", json=quick_spec("mine"), headers=bearer(WRITE_KEY)).json()
    path = f"/v1/studies/{study['id']}"
    for action in ("cancel", "resume"):
        r = keyed.post(f"{path}/{action}", headers=bearer(OTHER_KEY))
        assert r.status_code == 403, action
        detail = r.json()["detail"]
        assert "another API key" in detail and "admin key" in detail and f"may {action} it" in detail, detail
    r = keyed.post(f"{path}/cancel", headers=bearer(READ_KEY))
    assert r.status_code == 403 and "read scope" in r.json()["detail"]
    assert keyed.get(path, headers=bearer(READ_KEY)).json()["state"] == "QUEUED"  # none of that changed it

    assert keyed.post(f"{path}/cancel", headers=bearer(WRITE_KEY)).json()["state"] == "CANCELLED"
    assert keyed.post(f"{path}/resume", headers=bearer(ADMIN_KEY)).json()["state"] == "QUEUED"
    assert keyed.post(f"{path}/cancel", headers=bearer(ADMIN_KEY)).json()["state"] == "CANCELLED"
    assert keyed.post(f"{path}/resume", headers=bearer(OTHER_KEY)).status_code == 403  # still not theirs
    assert keyed.post(f"{path}/resume", headers=bearer(WRITE_KEY)).json()["state"] == "QUEUED"


def test_a_write_key_cancels_and_resumes_only_its_own_comparisons_and_their_studies(keyed):
    r = keyed.post("/v1/comparisons", json=SMALL, headers=bearer(WRITE_KEY))
    assert r.status_code == 201, r.text
    comparison = r.json()
    path = f"/v1/comparisons/{comparison['id']}"
    (one_study, *_) = keyed.get("/v1/studies", headers=bearer(READ_KEY)).json()["items"]
    assert one_study["owner"] == comparison["owner"]  # its studies are its submitter's
    assert keyed.post(f"/v1/studies/{one_study['id']}/cancel", headers=bearer(OTHER_KEY)).status_code == 403
    r = keyed.post(f"{path}/cancel", headers=bearer(OTHER_KEY))
    assert r.status_code == 403 and "This comparison was submitted with another API key" in r.json()["detail"]
    assert keyed.get(path, headers=bearer(READ_KEY)).json()["state"] == "QUEUED"
    assert keyed.post(f"{path}/cancel", headers=bearer(WRITE_KEY)).json()["state"] == "CANCELLED"
    assert keyed.post(f"{path}/resume", headers=bearer(OTHER_KEY)).status_code == 403
    assert keyed.post(f"{path}/resume", headers=bearer(ADMIN_KEY)).json()["state"] == "QUEUED"


def test_owner_is_a_salted_id_the_database_keeps_the_same_for_every_process(db_url):
    settings = Settings(database_url=db_url, api_keys=KEYS)
    with TestClient(create_app(settings), headers=bearer(WRITE_KEY)) as a:
        owner = a.post("/v1/studies", json=quick_spec("first")).json()["owner"]
    with TestClient(create_app(settings), headers=bearer(WRITE_KEY)) as b:  # another process, a restart
        assert b.post("/v1/studies", json=quick_spec("second")).json()["owner"] == owner
        other = b.post("/v1/studies", json=quick_spec("third"), headers=bearer(OTHER_KEY)).json()["owner"]
    with get_engine(db_url).connect() as conn:
        salt = conn.execute(sa.text("SELECT value FROM tvlars_secrets WHERE name = 'owner_salt'")).scalar_one()
    assert len(owner) == 12 and int(owner, 16) >= 0 and other != owner
    assert owner == owner_id(WRITE_KEY, salt) and len(salt) >= 32
    assert owner != hashlib.sha256(WRITE_KEY.encode()).hexdigest()[:12]  # not the bare hash every reader could test
    # TVLARS_OWNER_SALT, where given, is the salt
    given = Settings(database_url=db_url, api_keys=KEYS, owner_salt="a-salt-of-our-own-0123")
    with TestClient(create_app(given), headers=bearer(WRITE_KEY)) as c:
        assert c.post("/v1/studies", json=quick_spec("fourth")).json()["owner"] == owner_id(
            WRITE_KEY, "a-salt-of-our-own-0123"
        )


def test_a_study_stored_with_the_unsalted_owner_is_still_its_keys(keyed, db_url):
    """Studies submitted before owners were salted carry the bare SHA-256 prefix: their key still owns them."""
    study = keyed.post("/v1/studies", json=quick_spec("old"), headers=bearer(WRITE_KEY)).json()
    unsalted = hashlib.sha256(WRITE_KEY.encode()).hexdigest()[:12]
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("UPDATE tvlars_studies SET owner = :o WHERE id = :i"), {"o": unsalted, "i": study["id"]})
    assert keyed.post(f"/v1/studies/{study['id']}/cancel", headers=bearer(OTHER_KEY)).status_code == 403
    assert keyed.post(f"/v1/studies/{study['id']}/cancel", headers=bearer(WRITE_KEY)).status_code == 202


def test_a_study_submitted_without_keys_is_an_admins_to_change_once_keys_are_set(db_url):
    with TestClient(create_app(Settings(database_url=db_url)), base_url=LOOPBACK_URL) as c:
        study = c.post("/v1/studies", json=quick_spec("before-keys")).json()
    assert study["owner"] is None
    with TestClient(create_app(Settings(database_url=db_url, api_keys=KEYS))) as c:
        r = c.post(f"/v1/studies/{study['id']}/cancel", headers=bearer(WRITE_KEY))
        assert r.status_code == 403 and "has no owner" in r.json()["detail"] and "KEY:admin" in r.json()["detail"]
        assert c.post(f"/v1/studies/{study['id']}/cancel", headers=bearer(ADMIN_KEY)).status_code == 202
