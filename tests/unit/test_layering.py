"""Dependencies point one way (service → search_spaces → tvlars), the API process never loads Ray, no module is
part of an import cycle, and no trainer module outgrows one reading."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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


#: What the client must work without: the server's packages (and the trainer's).
SERVER_PACKAGES = ("sqlalchemy", "fastapi", "starlette", "ray", "optuna", "alembic", "uvicorn", "psycopg", "torch")
_CLIENT_ALONE = f"""
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_PACKAGES!r}:
            raise ImportError(f"blocked: {{name}} (the client must not need it)")
        return None

sys.meta_path.insert(0, Blocked())
import httpx
from service.client import Client

study = {{"id": "s1", "name": "n", "state": "SUCCEEDED", "progress": {{}}, "error": None}}
def answer(request):
    return httpx.Response(201 if request.method == "POST" else 200, json=study)

http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://api.test")
client = Client(api_key="k", http_client=http)
client.studies.submit("mnist1d-quick", name="s", overrides={{"budget": {{"n_trials": 2}}}})
print(json.dumps(client.studies.wait("s1", poll_s=0.01)["state"]))
"""


def test_the_client_works_without_the_server_packages():
    out = subprocess.run([sys.executable, "-c", _CLIENT_ALONE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == '"SUCCEEDED"'


# -- no import cycles among the project's modules -----------------------------------------------------------------

PACKAGES = ("tvlars", "search_spaces", "service")
#: The trainer's modules stay small enough to read whole: split one by concern before it passes this.
MAX_TRAINER_LINES = 400


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at the top or inside a function, a class or an ``if TYPE_CHECKING:`` block (a
    dependency a type checker follows is a dependency: two modules that name each other's types belong together)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module → the project modules it imports, read with ``ast`` from the source under ``root``.

    ``from .x import name`` is an edge to module ``x.name`` where that is a module, else to ``x`` (a package's
    ``__init__`` when ``x`` is a package). A module's own package, which Python imports first, is not an edge: a
    package that re-exports its modules would otherwise be a cycle with each of them.
    """
    files = {_module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""]) if node.level else ""
                full = base.strip(".") if node.level else node.module or ""
                targets = [f"{full}.{a.name}" if f"{full}.{a.name}" in files else full for a in node.names]
            for target in targets:
                while target and target not in files:  # a name inside a module, or a third party's
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``a → b → … → a``) per strongly connected component of more than one module."""
    found = []
    for component in _components(graph):
        start, members = component[0], set(component)
        came_from: dict[str, str | None] = {start: None}
        queue = [start]
        while queue:  # breadth first: the shortest way round through the component's first module
            v = queue.pop(0)
            if start in graph[v]:
                path = [v]
                while (p := came_from[path[-1]]) is not None:
                    path.append(p)
                found.append([*reversed(path), start])
                break
            for w in sorted(graph[v] & members - set(came_from)):
                came_from[w] = v
                queue.append(w)
    return found


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node, each sorted (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycles():
    graph = import_graph(REPO)
    assert len(graph) > 90 and "tvlars.train.loop" in graph["tvlars.train"]  # the walk found the project
    cycles = import_cycles(graph)
    assert cycles == [], "import cycles (break each by moving what both sides need into a module below them):\n" + (
        "\n".join(" → ".join(c) for c in cycles)
    )


def test_the_cycle_check_counts_function_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "tvlars"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import b\n\ndef f():\n    from .sub.b import g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from .. import c\n")
    (pkg / "c.py").write_text("import tvlars.a\nimport numpy\n")
    graph = import_graph(tmp_path, ("tvlars",))
    assert graph == {
        "tvlars": {"tvlars.a"},
        "tvlars.a": {"tvlars.sub.b"},
        "tvlars.sub": set(),
        "tvlars.sub.b": {"tvlars.c"},
        "tvlars.c": {"tvlars.a"},
    }
    assert import_cycles(graph) == [["tvlars.a", "tvlars.sub.b", "tvlars.c", "tvlars.a"]]
    (pkg / "c.py").write_text("import numpy\n")
    assert import_cycles(import_graph(tmp_path, ("tvlars",))) == []
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    assert import_cycles(import_graph(tmp_path, ("tvlars",))) == [["tvlars.a", "tvlars.sub.b", "tvlars.a"]]


def test_no_trainer_module_is_too_long():
    long = {
        str(p.relative_to(REPO)): n
        for p in sorted((REPO / "tvlars" / "train").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_TRAINER_LINES
    }
    assert long == {}, f"split these by concern (at most {MAX_TRAINER_LINES} lines each): {long}"


def test_nothing_outside_the_tests_imports_them():
    """Benchmarks and the packages share their harness through ``service.testing`` and ``tvlars.testing``: a
    benchmark that imported ``tests`` would break when the tests move, and would not run from an installed tree."""
    offenders = []
    for path in sorted(p for top in (*PACKAGES, "benchmarks") for p in (REPO / top).rglob("*.py")):
        for node in _imports(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not getattr(node, "level", 0) and any(n == "tests" or n.startswith("tests.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
