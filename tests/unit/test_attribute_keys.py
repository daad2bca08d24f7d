"""Each Optuna attribute key is spelled once, in service/trial_report.py, and each metric name once, in
tvlars/train/metrics.py: no other module writes one as a string literal (they use ``TrialAttr`` / ``StudyAttr`` and
``Metric``), so a key cannot drift between writer and readers."""

from __future__ import annotations

import ast
from pathlib import Path

from service.trial_report import StudyAttr, TrialAttr
from tvlars.train.metrics import Metric

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "service"
KEYS = {k.value for k in (*TrialAttr, *StudyAttr)}
METRICS = {m.value for m in Metric}
#: Where literals are allowed: the vocabularies themselves and migrations (table columns, frozen history).
EXEMPT = (SERVICE / "trial_report.py", SERVICE / "migrations", REPO / "tvlars" / "train" / "metrics.py")
#: The same word with another meaning, where it is not an attribute key or a metric: (file, or folder ending in
#: "/", literal) → what it is there.
OTHER_MEANINGS = {
    ("service/cli.py", "spec"): "the study resource's REST field",
    ("service/cli.py", "epoch_seconds"): "a field of a comparison's plan (seconds per epoch at each batch size)",
    ("service/client.py", "curves"): "the trials route's query parameter",
    ("service/engine/__main__.py", "spec"): "the command line's positional argument",
    ("service/engine/searcher.py", "epoch"): "a field of a trial's checkpoint and PBT lineage attrs",
    ("service/engine/trainable.py", "epoch"): "a field of the checkpoint's meta file and of the trainer's state",
    ("service/comparisons/report.py", "lr"): "the learning rate hyperparameter (a trial config key)",
    ("service/optuna_queries.py", "step"): "a column of Optuna's intermediate values table",
    ("service/testing/specs.py", "lr"): "the learning rate hyperparameter of the tests' study spec",
    ("service/testing/specs.py", "val_acc"): "the tests' study spec's objective, JSON as a user writes it",
    ("search_spaces/", "lr"): "the learning rate hyperparameter (a trial config key)",
    ("search_spaces/spec.py", "device"): "a trial config key",
    ("tvlars/optim/", "lr"): "a param group's learning rate (torch's optimizer vocabulary)",
    ("tvlars/optim/", "step"): "an optimizer's step count in its state (torch's optimizer vocabulary)",
    ("tvlars/schedules.py", "lr"): "a param group's learning rate",
    ("tvlars/testing/", "lr"): "a param group's learning rate in the optimizer cases (torch's optimizer vocabulary)",
    ("tvlars/train/loop.py", "lr"): "a param group's learning rate",
    ("tvlars/train/state.py", "step"): "an optimizer's step count in its param groups",
    ("tvlars/train/state.py", "epoch"): "the saved state's layout (read back by weights_only: plain str keys)",
    ("tvlars/train/state.py", "wall_seconds"): "the saved state's layout (read back by weights_only: plain str keys)",
}


def literals(source: str, words: set[str]) -> list[tuple[int, str]]:
    """(line, literal) of each string constant among ``words``, docstrings and ``__all__`` aside."""
    tree = ast.parse(source)
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skipped.add(id(first.value))
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skipped.update(id(c) for c in ast.walk(node.value))  # names of Python objects
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in words and id(node) not in skipped
    ]


def key_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of each string constant that is an attribute key, docstrings aside."""
    return literals(source, KEYS)


def _other_meaning(name: str, literal: str) -> tuple[str, str] | None:
    return next(
        (
            (where, word)
            for where, word in OTHER_MEANINGS
            if word == literal and (name == where or (where.endswith("/") and name.startswith(where)))
        ),
        None,
    )


def _scan(folders: tuple[Path, ...], words: set[str]) -> tuple[list[str], set[tuple[str, str]]]:
    found, other = [], set()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            if any(path == e or e in path.parents for e in EXEMPT):
                continue
            name = str(path.relative_to(REPO))
            for line, literal in literals(path.read_text(), words):
                meaning = _other_meaning(name, literal)
                if meaning is not None:
                    other.add(meaning)
                else:
                    found.append(f"{name}:{line}: {literal!r}")
    return found, other


def test_no_attribute_key_is_a_string_literal_outside_trial_report():
    assert len(list(SERVICE.rglob("*.py"))) > 30  # the walk found the service
    found, _ = _scan((SERVICE,), KEYS - METRICS)
    assert found == [], "use service.trial_report's TrialAttr / StudyAttr:\n" + "\n".join(found)


def test_no_metric_name_is_a_string_literal_outside_the_vocabulary():
    found, _ = _scan((REPO / "tvlars", REPO / "search_spaces", SERVICE), METRICS)
    assert found == [], "use tvlars.train.metrics.Metric (or TrialAttr for a stored attribute):\n" + "\n".join(found)


def test_every_other_meaning_is_still_needed():
    _, other = _scan((REPO / "tvlars", REPO / "search_spaces", SERVICE), KEYS | METRICS)
    assert other == set(OTHER_MEANINGS)  # an entry no longer needed goes


def test_the_check_sees_a_key_in_code_but_not_in_a_docstring():
    source = '"""fail_kind: a docstring may name it."""\ntrial.set_user_attr("fail_kind", f"{x} curves")\n'
    assert key_literals(source) == [(2, "fail_kind")]
    assert key_literals('d = {"spec": 1}\nd["best_val_acc"]\n') == [(1, "spec"), (2, "best_val_acc")]
    assert literals('__all__ = ["phi"]\nrow["phi"]\n', METRICS) == [(2, "phi")]


def test_stored_summary_attrs_are_named_after_their_metrics():
    # one word for one number: the attr a trial's summary is stored under is the metric's name
    for attr in (TrialAttr.BEST_VAL_ACC, TrialAttr.TEST_ACC_AT_BEST_VAL, TrialAttr.BEST_TEST_ACC, TrialAttr.DEVICE):
        assert attr == Metric(attr.value) and type(attr.value) is str
