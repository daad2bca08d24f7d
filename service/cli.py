"""``tvlars-tune``: serve the API, run workers, submit and watch studies and comparisons, read reports."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import search_spaces

from . import processes
from .client import DEFAULT_URL, APIConnectionError, APIError, Client, Comparisons, Studies, describe
from .core.config import Settings
from .core.loopback import is_loopback
from .states import StudyState

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console(soft_wrap=True)  # URLs and paths stay on one line, whatever the width
err = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="TVLARS_URL", help="The API's base URL")]
KeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="TVLARS_API_KEY", help="Bearer key", show_default=False)
]
SetOpt = Annotated[list[str], typer.Option("--set", help="Override fields, as JSON; repeatable")]
IdempotencyOpt = Annotated[str | None, typer.Option(help="Make a retried submit safe")]
_UNBOUNDED_WIDTH = 1_000
DEFAULT_COMPARISON = "compare-mnist1d-cpu"


# -- the client ------------------------------------------------------------------------------------------------


def _reports_api_errors(command: Callable[..., None]) -> Callable[..., None]:
    """An API error ends the command with its status and the server's detail (exit 1), an unreachable server
    with a hint (exit 2): the CLI is a view, it adds no error handling of its own."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except APIConnectionError as e:
            err.print(f"[red]{e}[/red] (is `tvlars-tune serve` running?)")
            raise typer.Exit(2) from None
        except APIError as e:
            err.print(f"[red]{e.status_code}[/red] {describe(e.detail)}")
            raise typer.Exit(1) from None

    return run


# -- server-side commands ----------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address; only loopback unless API keys are set")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes to start beside the API (0: none)")] = 1,
    api_processes: Annotated[int, typer.Option(help="uvicorn processes serving the API")] = 1,
) -> None:
    """The API, plus worker process(es) running local Ray (or joining RAY_ADDRESS), on TVLARS_DATABASE_URL."""
    settings = Settings()
    if not settings.auth_enabled and not is_loopback(host):
        err.print(f"[red]refusing to bind {host} without API keys[/red]: set TVLARS_API_KEYS, or bind 127.0.0.1")
        raise typer.Exit(2)
    console.print(
        f"tvlars-tune API on http://{host}:{port} (docs at /docs), {workers} worker(s), "
        f"database {processes.safe_url(settings)}"
    )
    processes.run_api(settings, host, port, workers, api_processes)


@app.command()
def worker() -> None:
    """A worker alone: claims queued studies and runs them (several may share one PostgreSQL database)."""
    processes.run_worker(Settings())


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Bind address; only loopback unless API keys are set")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8080,
) -> None:
    """optuna-dashboard on the same storage (TVLARS_DATABASE_URL). With API keys: sign in with any user name and a
    key as the password, read-only. Without: loopback only."""
    settings = Settings()
    if not settings.auth_enabled and not is_loopback(host):
        err.print(
            f"[red]refusing to bind {host} without API keys[/red]: optuna-dashboard has no login of its own. Set "
            "TVLARS_API_KEYS (it then asks for a key as the password, and is read-only), or bind 127.0.0.1"
        )
        raise typer.Exit(2)
    signing_in = "; sign in with any user name and an API key as the password (read-only)" if settings.keys else ""
    console.print(
        f"optuna-dashboard on http://{host}:{port}/dashboard/ (storage {processes.safe_url(settings)}){signing_in}",
        highlight=False,
    )
    processes.run_dashboard(settings, host, port)


# -- client commands ---------------------------------------------------------------------------------------------


def post_spec(
    resource: Studies | Comparisons,
    body: dict[str, Any],
    overrides: list[str],
    name: str | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """A study's or comparison's spec with its ``--set`` overrides (deep-merged, as ``python -m service.engine
    --set``; a bad one exits 2) and ``--name``, submitted."""
    try:
        body = search_spaces.apply_overrides(body, overrides)
    except ValueError as e:
        err.print(f"[red]--set: {e}[/red]")
        raise typer.Exit(2) from None
    return resource.submit(body, name=name, idempotency_key=idempotency_key)


@app.command()
@_reports_api_errors
def submit(
    file: Annotated[Path | None, typer.Argument(help="A study spec (YAML or JSON)", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(help="Start from a preset instead of a file")] = None,
    name: Annotated[str | None, typer.Option(help="Study name (overrides the spec's)")] = None,
    set_: SetOpt = [],  # noqa: B006
    wait: Annotated[bool, typer.Option(help="Show progress until the study ends, then its leaderboard")] = False,
    idempotency_key: IdempotencyOpt = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Submit a study."""
    if bool(file) == bool(preset):
        err.print("[red]give a spec file or --preset[/red]")
        raise typer.Exit(2)
    body: dict[str, Any] = {"preset": preset} if preset else yaml.safe_load(file.read_text())  # type: ignore[union-attr]
    client = Client(url, api_key)
    study = post_spec(client.studies, body, set_, name, idempotency_key)
    console.print(f"study [bold]{study['name']}[/bold] id {study['id']}: {study['state']}")
    if wait:
        study = watch(client, study["id"])
        show_leaderboard(client, study["id"])
        if study["state"] != StudyState.SUCCEEDED:
            raise typer.Exit(1)


@app.command()
@_reports_api_errors
def compare(
    file: Annotated[Path | None, typer.Argument(help="A comparison spec (YAML or JSON)", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(help="A comparison preset (default without FILE)")] = None,
    name: Annotated[str | None, typer.Option(help="Comparison name (overrides the spec's)")] = None,
    set_: SetOpt = [],  # noqa: B006
    wait: Annotated[bool, typer.Option(help="Show progress until it ends, then the verdicts")] = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="Show what it would spend and detect; store and queue nothing")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Workers the plan's wall time assumes")] = 1,
    idempotency_key: IdempotencyOpt = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Compare optimizers fairly: one budget per arm × batch size, re-runs on fresh seeds, verdicts with CIs.
    With --plan: only the plan (spending, wall time, each verdict's minimum detectable difference)."""
    if file and preset:
        err.print("[red]give a spec file or --preset, not both[/red]")
        raise typer.Exit(2)
    body: dict[str, Any] = yaml.safe_load(file.read_text()) if file else {"preset": preset or DEFAULT_COMPARISON}
    client = Client(url, api_key)
    if plan:
        try:
            body = search_spaces.apply_overrides(body, set_)
        except ValueError as e:
            err.print(f"[red]--set: {e}[/red]")
            raise typer.Exit(2) from None
        show_plan(client.comparisons.plan(body, name=name, workers=workers))
        return
    comparison = post_spec(client.comparisons, body, set_, name, idempotency_key)
    console.print(f"comparison [bold]{comparison['name']}[/bold] id {comparison['id']}: {comparison['state']}")
    if wait:
        comparison = watch_comparison(client, comparison["id"])
        show_verdicts(comparison)
        if comparison["state"] != StudyState.SUCCEEDED:
            raise typer.Exit(1)


@app.command()
@_reports_api_errors
def report(
    comparison_id: str,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md and its PNGs")] = Path("report"),
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Write a finished comparison's report as Markdown + PNGs (the same tables and plots as the HTML page)."""
    from .comparisons.report import write_markdown
    from .comparisons.result import result_from_json

    data = Client(url, api_key).comparisons.result(comparison_id)
    path = write_markdown(result_from_json(data), out)
    console.print(f"report written to {path}")


def watch_comparison(client: Client, comparison_id: str, poll_s: float = 2.0) -> dict:
    """A live progress bar (studies finished / total, phase) until the comparison ends."""
    return _watch(
        client.comparisons,
        comparison_id,
        poll_s,
        lambda c: (c["progress"]["finished"], c["progress"]["studies"], f"{c['state']}, {c['phase']}"),
    )


def _span(r: list | None, scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
    if r is None:
        return "-"
    low, high = (fmt.format(x * scale) for x in r)
    return low if low == high else f"{low}–{high}"


def show_plan(p: dict) -> None:
    """A comparison's plan (dry run) as tables: spending per arm × batch size, then each verdict's MDD."""
    out = _whole_lines()
    spend = Table(title=f"{p['name']}: plan (min–max: repeats, extensions and stopping depend on the data)")
    for col in ("arm", "batch size", "studies", "trials", "epochs", "steps"):
        spend.add_column(col, justify="left" if col == "arm" else "right")
    for a in p["arms"]:
        spend.add_row(
            a["arm"], str(a["batch_size"]), _span(a["studies"]), _span(a["trials"]), _span(a["epochs"]),
            _span(a["steps"]),
        )  # fmt: skip
    t = p["totals"]
    spend.add_row("all", "", _span(t["studies"]), _span(t["trials"]), _span(t["epochs"]), _span(t["steps"]))
    out.print(spend)
    wall = _span(p["wall_time_s"], 1 / 60, "{:,.1f}")
    sources = ", ".join(f"bs {bs}: {e['source']}" for bs, e in p["epoch_seconds"].items())
    out.print(f"wall time with {p['workers']} worker(s): {wall} min (epoch times: {sources})")
    mdd = Table(title="smallest difference each verdict detects at 80 % power (MDD, percentage points)")
    for col in ("batch size", "arm", "against", "primary", "alpha", "repeats", "SD (pp)", "from", "MDD (pp)"):
        mdd.add_column(col)
    for v in p["verdicts"]:
        mdd.add_row(
            str(v["batch_size"]), v["arm"], v["against"], "yes" if v["primary"] else "no", f"{v['alpha']:.3g}",
            str(v["n_max"]), "-" if v["sd_pp"] is None else f"{v['sd_pp']:.2f}", v["sd_source"],
            "-" if v["mdd_pp"] is None else f"{v['mdd_pp']:.2f}",
        )  # fmt: skip
    out.print(mdd)
    for note in p["notes"]:
        out.print(f"note: {note}")


def show_verdicts(comparison: dict) -> None:
    """The re-run summary per arm and the verdict per batch size, as tables."""
    arms = Table(title=f"{comparison['name']}: test accuracy at best validation, re-runs (95 % bootstrap CI)")
    for col in ("arm", "batch size", "epochs spent", "seeds", "mean", "95 % CI"):
        arms.add_column(col, justify="left" if col == "arm" else "right")
    for a in comparison["arms"]:
        r = a["rerun"] or {}
        ci = f"[{r['ci_low'] * 100:.2f}, {r['ci_high'] * 100:.2f}]" if r.get("ci_low") is not None else "-"
        mean = f"{r['mean'] * 100:.2f} %" if r else "-"
        arms.add_row(a["label"], str(a["batch_size"]), str(a["epochs_spent"]), str(r.get("n_seeds", "-")), mean, ci)
    out = _whole_lines()
    out.print(arms)
    table = Table(title="verdicts (paired t over tuning repeats; interval and p at the α of the deciding look)")
    for col in ("batch size", "arm", "against", "difference", "interval", "p", "α", "MDD", "look", "family", "verdict"):
        table.add_column(col)
    for bs, rows in sorted(comparison["verdicts"].items(), key=lambda kv: int(kv[0])):
        for v in rows:
            d = v["difference"] or {}
            ci = f"[{d['ci_low'] * 100:+.2f}, {d['ci_high'] * 100:+.2f}]" if d.get("ci_low") is not None else "-"
            mean = f"{d['mean'] * 100:+.2f} pp" if d else "-"
            p = f"{d['p_value']:.3g}" if d.get("p_value") is not None else "-"
            alpha = f"{d['alpha']:.3g}" if d.get("alpha") is not None else "-"
            mdd = f"{d['mdd'] * 100:.2f} pp" if d.get("mdd") is not None else "-"
            look = str(d["look"]) if d.get("look") is not None else (f"- ({d['n']})" if d else "-")
            family = "primary" if v.get("primary", True) else "secondary"
            words = [v["reason"]] if v.get("reason") else []
            words += v.get("notes") or []
            verdict = v["verdict"] + (f" ({'; '.join(words)})" if words else "")
            table.add_row(str(bs), v["arm"], v["against"], mean, ci, p, alpha, mdd, look, family, verdict)
    out.print(table)


@app.command()
@_reports_api_errors
def status(study_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """A study's state, progress and best trial."""
    s = Client(url, api_key).studies.get(study_id)
    p = s["progress"]
    console.print(f"[bold]{s['name']}[/bold] ({s['id']}): {s['state']}" + (f" — {s['error']}" if s["error"] else ""))
    console.print(
        f"  trials: {p['finished']}/{p['n_trials']} finished ({p['complete']} complete, {p['pruned']} pruned), "
        f"{p['failed']} failed, {p['running']} running"
    )
    if s["best"]:
        console.print(f"  best: trial {s['best']['number']} value {s['best']['value']:.4f} {s['best']['params']}")


@app.command()
@_reports_api_errors
def leaderboard(
    study_id: str,
    limit: Annotated[int, typer.Option(help="Rows")] = 10,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """The best trials of a study."""
    show_leaderboard(Client(url, api_key), study_id, limit)


@app.command()
@_reports_api_errors
def cancel(study_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Cancel a study (its finished trials are kept)."""
    s = Client(url, api_key).studies.cancel(study_id)
    console.print(f"{s['name']}: {s['state']}" + (" (cancel requested)" if s["cancel_requested"] else ""))


@app.command()
@_reports_api_errors
def resume(
    study_id: str,
    n_trials: Annotated[int | None, typer.Option(help="Raise the budget")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Queue a cancelled or failed study again (optionally with more trials)."""
    s = Client(url, api_key).studies.resume(study_id, n_trials)
    console.print(f"{s['name']}: {s['state']} (n_trials {s['spec']['budget']['n_trials']})")


@app.command()
@_reports_api_errors
def presets(url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """The presets a study can start from."""
    table = Table("name", "optimizer", "workload", "parameters", "trials", title="search spaces")
    for p in Client(url, api_key).search_spaces():
        w = p["workload"]
        table.add_row(
            p["name"],
            p["optimizer"],
            f"{w['dataset']}/{w['model']} bs{w['batch_size']} x{w['epochs']}",
            ", ".join(p["parameters"]),
            str(p["n_trials"]),
        )
    console.print(table)


@app.command()
@_reports_api_errors
def workloads(url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """What can be tuned here: datasets, models, tasks and optimizers, built in or from installed plugins."""
    listed = Client(url, api_key).workloads()
    table = Table("kind", "name", "from", "options (defaults)", title="workloads")
    for kind in ("datasets", "models", "tasks"):
        for w in listed[kind]:
            options = [f"{k}={v!r}" for k, v in w["options"].items()] + [f"{k} (required)" for k in w["required"]]
            table.add_row(w["kind"], w["name"], w["source"], ", ".join(options) or "-")
    for o in listed["optimizers"]:
        base = "" if o["recipe"] is None else f" ({o['optimizer']} + recipe)"
        table.add_row("optimizer", o["name"] + base, o["source"], ", ".join(o["trial_keys"]))
    console.print(table)
    for b in listed["broken"]:
        err.print(f"[red]broken {b['kind']} {b['name']!r}[/red] ({b['source']}): {b['error']}")


# -- the demo ----------------------------------------------------------------------------------------------------


@app.command()
@_reports_api_errors
def demo(
    port: Annotated[int, typer.Option(help="Port for the demo server (0: any free port)")] = 0,
) -> None:
    """Serve on the embedded default, run the mnist1d-quick study with a progress bar, print its leaderboard."""
    settings = Settings()
    port = port or processes.free_port()
    url = f"http://127.0.0.1:{port}"
    key = settings.keys[0].secret if settings.auth_enabled else None
    console.print(f"starting the API and a worker on {url} (database {processes.safe_url(settings)}) ...")
    with processes.server_subprocess(port) as server:
        client = Client(url, key)
        _wait_ready(client, server, timeout_s=120)
        name = f"mnist1d-quick-{datetime.now():%Y%m%d-%H%M%S}"
        study = client.studies.submit("mnist1d-quick", name=name)
        console.print(f"submitted [bold]{name}[/bold] ({study['id']}): TVLARS on MNIST-1D, TPE + ASHA")
        study = watch(client, study["id"])
        show_leaderboard(client, study["id"])
    prog, storage = _prog(), processes.safe_url(settings)
    console.print(
        "\nLook at every trial's curves in optuna-dashboard:\n"
        f"  {prog} dashboard        # then open http://127.0.0.1:8080/dashboard/  (storage {storage})\n"
        f"Or the REST API: {prog} serve, then GET http://127.0.0.1:8000/v1/studies (docs at /docs)."
    )
    if study["state"] != StudyState.SUCCEEDED:
        raise typer.Exit(1)


def _wait_ready(client: Client, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with console.status("waiting for the API and a worker (Ray starts in a few seconds) ..."):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err.print(f"[red]the server exited[/red]:\n{proc.stderr.read().decode()[-3000:]}")
                raise typer.Exit(1)
            if client.ready():
                return
            time.sleep(0.5)
    err.print("[red]the server did not become ready in time[/red]")
    raise typer.Exit(1)


# -- shared views ------------------------------------------------------------------------------------------------


def _whole_lines() -> Console:
    """A terminal's width is its own; a pipe or file gets whole lines (rich would cut them at 80 columns)."""
    return console if console.is_terminal else Console(width=_UNBOUNDED_WIDTH, soft_wrap=True)


def watch(client: Client, study_id: str, poll_s: float = 1.0) -> dict:
    """A live progress bar (trials finished / n_trials, best so far) until the study ends."""

    def progress(study: dict) -> tuple[int, int, str]:
        p, best = study["progress"], study["best"]["value"] if study["best"] else None
        detail = f"{study['state']}, {p['running']} running, {p['failed']} failed" + (
            f", best {best:.4f}" if best is not None else ""
        )
        return p["finished"], p["n_trials"], detail

    return _watch(client.studies, study_id, poll_s, progress)


def _watch(
    resource: Studies | Comparisons, id: str, poll_s: float, progress: Callable[[dict], tuple[int, int, str]]
) -> dict:
    """A live progress bar until a study or comparison ends: ``progress`` gives (done, total, detail) of a read."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=_whole_lines()) as bar:
        task = None

        def show(current: dict) -> None:
            nonlocal task
            done, total, detail = progress(current)
            if task is None:
                task = bar.add_task(current["name"], total=total, detail="")
            bar.update(task, completed=done, total=total, detail=detail)

        final = resource.wait(id, on_progress=show, poll_s=poll_s)
    console.print(
        f"{final['name']}: [bold]{final['state']}[/bold]" + (f" — {final['error']}" if final["error"] else "")
    )
    return final


def board_columns() -> dict[str, str]:
    """Leaderboard columns beside the objective: validation selects, test is reported (never used to choose)."""
    from .trial_report import SUMMARY_METRICS  # here: the vocabulary loads the trainer (torch), no other view needs it

    return dict(zip(SUMMARY_METRICS, ("best val", "test @ best val", "best test"), strict=True))


def show_leaderboard(client: Client, study_id: str, limit: int = 10) -> None:
    """The top ``limit`` trials, COMPLETE ranked first, then PRUNED ones marked with the epoch they reached."""
    board = client.studies.leaderboard(study_id, limit, include_pruned=True)
    table = Table(
        title=f"{board['name']}: best {board['metric']} ({board['direction']})",
        caption="selected on validation; test is reported beside it, never used to choose",
    )
    columns = board_columns()
    for name in ("rank", "trial", "state", "epochs", board["metric"], *columns.values()):
        table.add_column(name, justify="left" if name == "state" else "right")
    params = sorted({k for row in board["items"] for k in row["params"]})
    for k in params:
        table.add_column(k, justify="right")
    for row in board["items"]:
        pruned = row["state"] != "COMPLETE"
        table.add_row(
            str(row["rank"]),
            str(row["number"]),
            row["state"],
            str(row["epochs"]),
            _fmt(row["value"], 4),
            *(_fmt(row.get(k), 4) for k in columns),
            *(_fmt(row["params"].get(k)) for k in params),
            style="dim" if pruned else None,
        )
    _whole_lines().print(table)


def _fmt(v: Any, digits: int | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if digits else f"{v:.4g}"
    return str(v)


def _prog() -> str:
    """How this command was invoked (``.venv/bin/tvlars-tune`` after ``make demo``), for copy-pasteable hints."""
    argv0 = Path(sys.argv[0])
    return str(argv0) if argv0.name == "tvlars-tune" else "tvlars-tune"


if __name__ == "__main__":
    app()
