"""The trial report round trip without Ray running: the real trainable (``train_trial``, training MNIST-1D for a few
epochs) writes its reports, the real searcher records them in a real Optuna storage, and what lands in the trial's
attributes is what was reported. Only Tune's session calls (``tune.report``, ``tune.get_checkpoint``) are taken
over, to hand the reports from one side to the other as Tune would."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from optuna.trial import TrialState

from search_spaces.spec import StudySpec
from service.engine import trainable
from service.engine.factories import build_distributions
from service.engine.records import create_or_load
from service.engine.searcher import OptunaStudySearcher
from service.testing.specs import quick_spec
from service.trial_report import SUMMARY_METRICS, EpochReport, FailKind, TrialAttr


class TuneSession:
    """Stands in for Tune's session: collects what the trial reports, keeps each checkpoint folder it persists."""

    def __init__(self, monkeypatch, keep: Path) -> None:
        self.results: list[dict] = []
        self.checkpoints: dict[int, str] = {}
        self.keep = keep
        monkeypatch.setattr(trainable.tune, "report", self.report)
        monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)

    def report(self, metrics: dict, checkpoint=None) -> None:
        self.results.append(metrics)
        if checkpoint is not None:  # Tune persists it before report returns; the trainable then deletes its folder
            target = self.keep / f"{len(self.results)}-epoch-{metrics['epoch']}"
            shutil.copytree(checkpoint.path, target)
            self.checkpoints[metrics["epoch"]] = str(target)


@pytest.fixture
def searcher(tmp_path) -> OptunaStudySearcher:
    spec = StudySpec.model_validate(quick_spec("report-round-trip", workload={"epochs": 3}))
    study, _ = create_or_load(f"sqlite:///{tmp_path / 'optuna.db'}", spec, resume=False)
    return OptunaStudySearcher(
        study, spec, build_distributions(spec), n_finished=0, n_errors=0, should_stop=lambda: None
    )


def test_what_the_trainable_reports_is_what_the_searcher_records(searcher, monkeypatch, tmp_path):
    session = TuneSession(monkeypatch, tmp_path)
    config = searcher.suggest("ray-1")
    trainable.train_trial(config)
    reports = [EpochReport.from_result(r) for r in session.results]
    assert [r.epoch for r in reports] == [1, 2, 3] and [r.final for r in reports] == [False, False, True]
    assert len({r.attempt for r in reports}) == 1 and reports[0].hostname == socket.gethostname()
    assert reports[0].error is None and reports[0].resumed_from_epoch is None and reports[0].cloned_from is None

    for result in session.results[:-1]:
        searcher.on_trial_result("ray-1", result)
    searcher.on_trial_complete("ray-1", session.results[-1])

    (trial,) = searcher.study.get_trials()
    last = reports[-1]
    assert trial.state == TrialState.COMPLETE and trial.value == last.metrics["val_acc"]
    assert trial.intermediate_values == {r.epoch: r.metrics["val_acc"] for r in reports}
    curves = trial.user_attrs[TrialAttr.CURVES]
    assert curves["epoch"] == [1, 2, 3] and curves["test_acc"] == [r.metrics["test_acc"] for r in reports]
    assert {k: trial.user_attrs[k] for k in SUMMARY_METRICS} == {k: last.metrics[k] for k in SUMMARY_METRICS}
    assert trial.user_attrs[TrialAttr.EPOCHS_RUN] == 3 and trial.user_attrs[TrialAttr.DIVERGED] is False
    assert trial.user_attrs[TrialAttr.WALL_SECONDS] == last.wall_seconds
    assert trial.user_attrs[TrialAttr.HOSTNAME] == socket.gethostname()
    assert trial.user_attrs[TrialAttr.CHECKPOINT] is None and TrialAttr.RESTARTS not in trial.user_attrs


def test_a_restarted_trial_keeps_its_epochs_up_to_the_checkpoint(searcher, monkeypatch, tmp_path):
    """Killed after epoch 2, restarted from the checkpoint of epoch 1: epochs 2 and 3 are the new run's."""
    session = TuneSession(monkeypatch, tmp_path)
    config = searcher.suggest("ray-1")
    trainable.train_trial(config)
    first = session.results[:2]  # what the driver saw before the kill
    for result in first:
        searcher.on_trial_result("ray-1", result)
    session.results.clear()
    trainable.train_trial({**config, "restore": session.checkpoints[1]})
    again = [EpochReport.from_result(r) for r in session.results]
    assert [r.epoch for r in again] == [2, 3] and {r.resumed_from_epoch for r in again} == {1}
    assert [row["epoch"] for row in again[0].restored_history] == [1] and again[1].restored_history is None
    for result in session.results[:-1]:
        searcher.on_trial_result("ray-1", result)
    searcher.on_trial_complete("ray-1", session.results[-1])

    (trial,) = searcher.study.get_trials()
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs[TrialAttr.RESTARTS] == 1 and trial.user_attrs[TrialAttr.RESUMED_FROM_EPOCH] == 1
    curve = trial.user_attrs[TrialAttr.CURVES]["val_acc"]
    assert curve == [first[0]["val_acc"], *(r.metrics["val_acc"] for r in again)]


def test_a_failing_trial_reports_its_error_and_is_recorded_fail(searcher, monkeypatch, tmp_path):
    session = TuneSession(monkeypatch, tmp_path)
    config = searcher.suggest("ray-1")
    config["trial"]["micro_batch_size"] = 7  # does not divide the batch: the trainer raises
    trainable.train_trial(config)
    (result,) = session.results
    report = EpochReport.from_result(result)
    assert report.final and "micro_batch_size" in report.error and "Traceback" in report.traceback
    searcher.on_trial_complete("ray-1", result)
    (trial,) = searcher.study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs[TrialAttr.FAIL_KIND] == FailKind.ERROR
    assert trial.user_attrs[TrialAttr.FAIL_REASON] == report.error


def test_a_clones_facts_survive_tunes_flattening():
    """Tune flattens nested dicts in a result: the clone's params travel as JSON text and come back as a dict."""
    report = EpochReport(4, {"val_acc": 0.5}, attempt="a1", resumed_from_epoch=3, cloned_from="t2",
                         new_params={"lr": 2.0, "lam": 1e-4})  # fmt: skip
    result = report.to_result()
    assert isinstance(result["params"], str) and all(not isinstance(v, dict) for v in result.values())
    assert EpochReport.from_result(result) == report
    assert EpochReport.from_result({**result, "training_iteration": 4}).metrics["training_iteration"] == 4
