"""The example plugin's study spec validates and its trial trains, in process (through the real server, worker,
engine and Ray: tests/integration/service/plugins/test_example_study.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from search_spaces.spec import StudySpec
from tests.utils.plugins import EXAMPLE

SPEC = yaml.safe_load((EXAMPLE / "study.yaml").read_text())


def test_the_example_spec_is_valid_and_its_trial_trains(example_plugin):
    from tvlars.train import run

    spec = StudySpec.model_validate(SPEC)
    config = spec.trial_config({"lr": 2.0, "lam": 1e-3}) | {"epochs": 2, "num_threads": 1}
    result = run(config)
    assert result["epochs_run"] == 2 and 0.0 <= result["val_acc"] <= 1.0
    assert Path(EXAMPLE / "README.md").is_file()
