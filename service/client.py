"""The Python client of the tvlars-tune REST API (sync, on httpx): what the CLI is built on, and what a notebook or a
pipeline scripts studies with.

    >>> from service.client import Client
    >>> client = Client("http://127.0.0.1:8000", api_key=None)          # doctest: +SKIP
    >>> study = client.studies.submit("mnist1d-quick", name="s1")      # doctest: +SKIP
    >>> study = client.studies.wait(study["id"])                      # doctest: +SKIP
    >>> client.studies.leaderboard(study["id"], limit=3)["items"]     # doctest: +SKIP

Resources return the API's JSON bodies as dicts (the shapes in ``service.api.models`` and ``/docs``). Errors are
a small hierarchy by status, each carrying ``status_code`` and the server's ``detail``. A submit sends an
``Idempotency-Key`` (generated unless given) and reuses it across its own retries, so a retried submit never queues
twice; 503 answers and connection failures are retried with back-off, honouring ``Retry-After``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from .states import StudyState  # the client imports nothing of the server

__all__ = [
    "DEFAULT_URL",
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "Client",
    "Comparisons",
    "ConflictError",
    "NotFoundError",
    "ServiceUnavailableError",
    "Studies",
    "UnprocessableEntityError",
    "describe",
    "retry_delay",
]

DEFAULT_URL = "http://127.0.0.1:8000"
#: Back-off between retries when the server names no ``Retry-After``: from the first value, doubling up to the last;
#: a ``Retry-After`` is honoured up to the last.
BACKOFF_FIRST_S, MAX_DELAY_S = 0.5, 10.0


# -- errors ------------------------------------------------------------------------------------------------------


class APIError(Exception):
    """Any error from the API or on the way to it. ``status_code`` is None when no answer came."""

    status_code: int | None = None

    def __init__(self, message: str, *, detail: Any = None, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.response = response
        if response is not None:
            self.status_code = response.status_code


class APIConnectionError(APIError):
    """The server could not be reached (refused, timed out, or the connection dropped), after the retries."""


class AuthenticationError(APIError):
    """401: no key or an unknown one; 403: a read-only key for a write."""


class NotFoundError(APIError):
    """404: no such study or comparison (or, for a comparison's result and report, not finished yet)."""


class ConflictError(APIError):
    """409: a name taken, an ``Idempotency-Key`` reused with another body, or a state that does not allow it."""


class UnprocessableEntityError(APIError):
    """422: a bad spec or parameter; ``detail`` lists each bad field (``loc``, ``msg``) or says what is wrong."""


class ServiceUnavailableError(APIError):
    """503: the database is unavailable or saturated (after the retries, each after ``Retry-After``)."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    503: ServiceUnavailableError,
}


def describe(detail: Any) -> str:
    """The server's ``detail`` as text: field errors one per line (``field.path: message``)."""
    if isinstance(detail, list):
        return "\n".join(
            f"  {'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" if isinstance(d, dict) else f"  {d}"
            for d in detail
        )
    return str(detail)


def _error(response: httpx.Response) -> APIError:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text
    cls = _BY_STATUS.get(response.status_code, APIError)
    return cls(f"{response.status_code} {describe(detail)}", detail=detail, response=response)


# -- the client --------------------------------------------------------------------------------------------------


class Client:
    """One connection to the API.

    Args:
        base_url (str, optional): the API's address (default: ``http://127.0.0.1:8000``).
        api_key (str, optional): sent as ``Authorization: Bearer KEY`` (default: None, for a server without keys).
        timeout (float, optional): seconds per request (default: 30).
        max_retries (int, optional): retries of a 503 or a failed connection (default: 2).
        http_client (httpx.Client, optional): the transport to use instead of a new one, e.g. starlette's
            ``TestClient(app)`` for the in-process app; ``base_url`` and ``timeout`` are then its own.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_retries = max_retries
        self.studies = Studies(self)
        self.comparisons = Comparisons(self)

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what is not a study or a comparison --------------------------------------------------------------------

    def search_spaces(self) -> list[dict[str, Any]]:
        """The presets a study can start from (``GET /v1/search-spaces``)."""
        return self.request("GET", "/v1/search-spaces")["items"]

    def workloads(self) -> dict[str, Any]:
        """Datasets, models, tasks and optimizers this server can tune, with their options (``GET /v1/workloads``)."""
        return self.request("GET", "/v1/workloads")

    def ready(self) -> bool:
        """Whether the database answers and a worker is alive (``GET /readyz``); False when unreachable."""
        try:
            return self._http.get("/readyz", headers=self._headers).status_code == 200
        except httpx.HTTPError:
            return False

    # -- requests -----------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """One API call: the JSON body (the response itself with ``raw``), or the :class:`APIError` for its status.

        A 503 and a failed connection are retried up to ``max_retries`` times; a request that may have reached the
        server (a read timeout, a dropped connection) only when repeating it is harmless: a GET, or a write carrying
        an ``Idempotency-Key``.
        """
        headers = {**self._headers, **(headers or {})}
        if method != "GET" and json is None:  # a server without keys takes only JSON writes, bodyless ones too
            headers.setdefault("Content-Type", "application/json")
        repeatable = method == "GET" or "Idempotency-Key" in headers
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as e:
                unsent = isinstance(e, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
                if last or not (unsent or repeatable):
                    raise APIConnectionError(f"cannot reach {self.base_url}: {e}") from e
                time.sleep(retry_delay(attempt))
                continue
            if response.status_code == 503 and not last:
                time.sleep(retry_delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response if raw else response.json()
        raise AssertionError("unreachable: the last attempt returns or raises")


def retry_delay(attempt: int, retry_after: str | None = None) -> float:
    """Seconds before retry ``attempt + 1``: the server's ``Retry-After`` (seconds) if it gave one, else back-off
    doubling from ``BACKOFF_FIRST_S``; never more than ``MAX_DELAY_S``."""
    if retry_after is not None:
        try:
            return min(MAX_DELAY_S, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: rare enough to treat as absent
    return min(MAX_DELAY_S, BACKOFF_FIRST_S * 2**attempt)


# -- resources ---------------------------------------------------------------------------------------------------


def _body(
    spec_or_preset: str | Path | Mapping[str, Any], name: str | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A submit's body from a preset's name, a spec file (YAML or JSON) or a spec as a dict."""
    if isinstance(spec_or_preset, Path):
        import yaml  # JSON is YAML too

        body: dict[str, Any] = yaml.safe_load(spec_or_preset.read_text())
    elif isinstance(spec_or_preset, str):
        body = {"preset": spec_or_preset}
    else:
        body = json.loads(json.dumps(dict(spec_or_preset)))  # a deep copy: the caller's dict is left as it was
    if overrides:
        from search_spaces import merge

        body = merge(body, dict(overrides))
    if name:
        body["name"] = name
    return body


Progress = Callable[[dict[str, Any]], None]


class _Resource:
    """What studies and comparisons share: submit, read, list, cancel, resume, wait."""

    path: str
    poll_s: float = 1.0

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(
        self,
        spec_or_preset: str | Path | Mapping[str, Any],
        *,
        name: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue one from a preset's name, a spec file (YAML or JSON) or a spec as a dict.

        ``overrides`` are deep-merged into the spec (``{"budget": {"n_trials": 8}}``), ``name`` replaces its name.
        The ``Idempotency-Key`` (generated unless given) makes the client's own retries safe; pass your own to make
        your retries safe too. Returns the resource, ``state`` QUEUED.
        """
        body = _body(spec_or_preset, name, overrides)
        key = idempotency_key or uuid.uuid4().hex
        return self._client.request("POST", self.path, json=body, headers={"Idempotency-Key": key})

    def get(self, id: str) -> dict[str, Any]:
        """One by id: spec, state, progress."""
        return self._client.request("GET", f"{self.path}/{id}")

    def list(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> dict[str, Any]:
        """A page, newest first: ``{"total", "limit", "offset", "items"}``."""
        params = {"limit": limit, "offset": offset, **{k: v for k, v in filters.items() if v is not None}}
        return self._client.request("GET", self.path, params=params)

    def cancel(self, id: str) -> dict[str, Any]:
        """Stop it (finished trials are kept)."""
        return self._client.request("POST", f"{self.path}/{id}/cancel")

    def resume(self, id: str) -> dict[str, Any]:
        """Queue a cancelled or failed one again."""
        return self._client.request("POST", f"{self.path}/{id}/resume")

    def wait(
        self, id: str, *, timeout: float | None = None, on_progress: Progress | None = None, poll_s: float | None = None
    ) -> dict[str, Any]:
        """Poll until it ends (SUCCEEDED, FAILED or CANCELLED) and return it; ``on_progress`` gets each read,
        the last one included. Raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            resource = self.get(id)
            if on_progress is not None:
                on_progress(resource)
            if resource["state"] in StudyState.finished():
                return resource
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{id} still {resource['state']} after {timeout} s")
            time.sleep(self.poll_s if poll_s is None else poll_s)


class Studies(_Resource):
    """``/v1/studies``: one optimizer's search on one workload."""

    path = "/v1/studies"
    poll_s = 1.0

    def list(self, *, limit: int = 50, offset: int = 0, state: str | None = None) -> dict[str, Any]:
        """A page of studies, newest first (``state``: only those in it)."""
        return super().list(limit=limit, offset=offset, state=state)

    def resume(self, id: str, n_trials: int | None = None) -> dict[str, Any]:
        """Queue a cancelled or failed study again, optionally with a larger ``n_trials``."""
        body = {"n_trials": n_trials} if n_trials else None
        return self._client.request("POST", f"{self.path}/{id}/resume", json=body)

    def leaderboard(self, id: str, limit: int = 10, *, include_pruned: bool = False) -> dict[str, Any]:
        """The best trials first: ``{"name", "metric", "direction", "items": [{rank, number, state, value,
        params, epochs, best_val_acc, test_acc_at_best_val, ...}]}``."""
        params = {"limit": limit, "include_pruned": include_pruned}
        return self._client.request("GET", f"{self.path}/{id}/leaderboard", params=params)

    def trials(
        self, id: str, *, state: str | None = None, limit: int = 100, offset: int = 0, curves: bool = False
    ) -> dict[str, Any]:
        """A page of trials by number (``state``: COMPLETE, PRUNED, FAIL, RUNNING; ``curves``: every curve)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, "curves": curves}
        if state is not None:
            params["state"] = state
        return self._client.request("GET", f"{self.path}/{id}/trials", params=params)


class Comparisons(_Resource):
    """``/v1/comparisons``: optimizers × batch sizes on one workload under one budget, re-runs, verdicts."""

    path = "/v1/comparisons"
    poll_s = 2.0

    def list(self, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """A page of comparisons, newest first."""
        return super().list(limit=limit, offset=offset)

    def plan(
        self,
        spec_or_preset: str | Path | Mapping[str, Any],
        *,
        name: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        workers: int = 1,
    ) -> dict[str, Any]:
        """The comparison's plan, nothing stored or queued (``dry_run``): per arm × batch size the studies, trials,
        epochs and optimizer steps as ``[min, max]``, the wall time for ``workers`` workers and each verdict's MDD
        (see :mod:`service.comparisons.plan`)."""
        body = {**_body(spec_or_preset, name, overrides), "dry_run": True}
        return self._client.request("POST", self.path, json=body, params={"workers": workers})

    def result(self, id: str) -> dict[str, Any]:
        """A finished comparison's result: the JSON its report is drawn from (404 until it SUCCEEDED)."""
        return self._client.request("GET", f"{self.path}/{id}/result")

    def report(self, id: str) -> str:
        """A finished comparison's report: one self-contained HTML page."""
        return self._client.request("GET", f"{self.path}/{id}/report", raw=True).text
