"""The doors of a real served process: the API served by plain ``uvicorn --factory`` without keys refuses what
arrives on a public address (``serve``'s own check is not on that path). The dashboard's doors:
tests/unit/service/test_served_doors.py."""

from __future__ import annotations

import socket
import sys

import httpx
import pytest

from service.testing.server import free_port
from tests.unit.service.test_served_doors import env_for, served


def public_address() -> str | None:
    """One of this machine's non-loopback IPv4 addresses (the one a packet out would leave from), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.integration
def test_uvicorn_factory_without_keys_refuses_what_arrives_on_a_public_address(tmp_path):
    address = public_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", "0.0.0.0"]
    url = f"http://127.0.0.1:{port}"
    with served([*args, "--port", str(port)], env_for(f"sqlite:///{tmp_path / 'f.db'}", ""), tmp_path / "u.log", url):
        assert httpx.get(f"{url}/v1/studies").status_code == 200
        public = httpx.get(f"http://{address}:{port}/v1/studies", headers={"Host": "127.0.0.1"})
        assert public.status_code == 403
        assert f"arrived on {address}" in public.json()["detail"] and "TVLARS_API_KEYS" in public.json()["detail"]
