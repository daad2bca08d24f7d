"""The CLI without a server: ``serve`` refuses a public bind without keys (the CLI against a live server:
tests/integration/service/test_cli_dashboard.py)."""

from __future__ import annotations

import subprocess
import sys

from service.testing.server import REPO, service_env


def test_serve_refuses_a_public_bind_without_keys():
    env = {**service_env("sqlite://"), "TVLARS_API_KEYS": ""}
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--workers", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "refusing to bind 0.0.0.0 without API keys" in out.stderr
