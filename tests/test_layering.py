"""Dependencies point one way (service → search_spaces → tvlars), and the API process never loads Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        ("import tvlars, tvlars.train, tvlars.plot", ("service", "search_spaces", "ray", "optuna", "fastapi")),
        ("import search_spaces, search_spaces.spec", ("service", "ray", "optuna", "fastapi")),
        ("import service.main; service.main.create_app", ("ray", "ray.tune")),
    ],
)
def test_imports_stay_in_their_layer(code, forbidden):
    loaded = _modules_after(code)
    assert not [m for m in loaded if m.split(".")[0] in forbidden or m in forbidden], code
