"""A slice of the soak (``benchmarks/soak.py``) for ``make test``: the same processes and faults, compressed into
about a minute and a half (36 s of faults: SIGKILLs, two PostgreSQL restarts, one SIGSTOP past the lease, random
cancels and resumes; then the drain). Every invariant the soak checks from storage must hold, and each kind of fault
must have been injected. The full run is ``python benchmarks/soak.py`` (60 minutes); ``--quick`` runs in ``make
bench``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from service.testing.pg import unavailable_reason
from service.testing.server import REPO, service_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SLICE = ["--quick", "--minutes", "0.6", "--kill-every", "12", "--drain-s", "60", "--seed", "1"]


@pytest.mark.timeout(420)
def test_a_slice_of_the_soak_holds_every_invariant(tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"private PostgreSQL: {reason}")
    env = service_env("unused")  # PYTHONPATH of this checkout; the soak starts its own database and Ray
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "benchmarks/soak.py", *SLICE, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    print(proc.stdout[-6000:])
    assert (tmp_path / "soak.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "soak.json").read_text())
    assert out["invariants"] and all(out["invariants"].values()), out["violations"]
    assert {kind: out["faults"].get(kind, 0) >= 1 for kind in ("kill", "pg_restart", "sigstop")} == {
        "kill": True,
        "pg_restart": True,
        "sigstop": True,
    }, out["fault_log"]
    assert out["counts"]["plain_studies_submitted"] > 0 and out["counts"]["comparisons_submitted"] > 0
    assert proc.returncode == 0, proc.stdout[-3000:]
