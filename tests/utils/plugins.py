"""Installed plugin packages for the tests: the example (into the running venv) and small fixture distributions.

Plugins are tested as users ship them, as real installed distributions whose entry points ``importlib.metadata``
reads; nothing is faked. The example goes into the test venv, as ``make install`` does (its tests then work with a
plain ``pytest`` too); the fixture packages (a plugin that fails at import, clashing names) would break the venv
for every other test, so they go into a folder of their own that only subprocesses put on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from service.testing.server import REPO

EXAMPLE = REPO / "examples" / "workload-plugin"
EXAMPLE_OPTIMIZER = REPO / "examples" / "optimizer-plugin"
FIXTURE_PACKAGES = REPO / "tests" / "unit" / "service" / "plugins" / "packages"


def pip_install(*paths: Path, target: Path | None = None, editable: bool = False) -> None:
    """``pip install --no-deps --no-build-isolation`` (offline: setuptools comes from the venv)."""
    args = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    if target is not None:
        args += ["--target", str(target)]
    for path in paths:
        args += ["-e", str(path)] if editable else [str(path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(map(str, paths))} failed:\n{done.stdout}\n{done.stderr}")


def ensure_example_plugin() -> None:
    """The example plugins (workloads, optimizer) installed (editable) in this venv, as ``make install`` leaves them."""
    missing = []
    for module, path in (("tvlars_example_workloads", EXAMPLE), ("tvlars_example_optimizers", EXAMPLE_OPTIMIZER)):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(path)
    if not missing:
        return
    pip_install(*missing, editable=True)
    importlib.invalidate_caches()
    from tvlars.data import DATASETS
    from tvlars.models import MODELS
    from tvlars.optim import OPTIMIZERS

    for registry in (DATASETS, MODELS, OPTIMIZERS):
        registry.forget_plugins()


def python_with(path: Path | None, code: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this venv with ``path`` (a ``--target`` folder) on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(path) if path else "", str(REPO)) if p)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO
    )
