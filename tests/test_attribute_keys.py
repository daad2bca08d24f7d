"""Each Optuna attribute key is spelled once, in service/trial_report.py: no other module of the service writes one
as a string literal (they use ``TrialAttr`` / ``StudyAttr``), so a key cannot drift between writer and readers."""

from __future__ import annotations

import ast
from pathlib import Path

from service.trial_report import StudyAttr, TrialAttr

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "service"
KEYS = {k.value for k in (*TrialAttr, *StudyAttr)}
#: Where literals are allowed: the vocabulary itself; migrations (table columns, frozen history); and, temporarily,
#: service/comparisons/ (it takes these constants once the comparison rework has landed).
EXEMPT = (SERVICE / "trial_report.py", SERVICE / "migrations", SERVICE / "comparisons")
#: The same word with another meaning, where it is not an attribute key: (file, literal) → what it is there.
OTHER_MEANINGS = {
    ("service/cli.py", "spec"): "the study resource's REST field",
    ("service/client.py", "curves"): "the trials route's query parameter",
    ("service/engine/__main__.py", "spec"): "the command line's positional argument",
}


def key_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of each string constant that is an attribute key, docstrings aside."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in KEYS and id(node) not in docstrings
    ]


def test_no_attribute_key_is_a_string_literal_outside_trial_report():
    files = [p for p in SERVICE.rglob("*.py") if not any(p == e or e in p.parents for e in EXEMPT)]
    assert len(files) > 30  # the walk found the service
    found, other = [], set()
    for path in files:
        name = str(path.relative_to(REPO))
        for line, literal in key_literals(path.read_text()):
            if (name, literal) in OTHER_MEANINGS:
                other.add((name, literal))
            else:
                found.append(f"{name}:{line}: {literal!r}")
    assert found == [], "use service.trial_report's TrialAttr / StudyAttr:\n" + "\n".join(found)
    assert other == set(OTHER_MEANINGS)  # an entry no longer needed goes


def test_the_check_sees_a_key_in_code_but_not_in_a_docstring():
    source = '"""fail_kind: a docstring may name it."""\ntrial.set_user_attr("fail_kind", f"{x} curves")\n'
    assert key_literals(source) == [(2, "fail_kind")]
    assert key_literals('d = {"spec": 1}\nd["best_val_acc"]\n') == [(1, "spec"), (2, "best_val_acc")]
