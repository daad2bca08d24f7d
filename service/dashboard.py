"""optuna-dashboard on the service's storage, behind the doors the API has.

Without API keys it is bound to loopback (``tvlars-tune dashboard`` refuses another address), answers only
loopback Host names (TVLARS_ALLOWED_HOSTS widens them) and refuses a write whose ``Origin`` is another site's.
With keys it asks for HTTP Basic auth, any user name and a configured key as the password (what a browser can
send; every role may read), and is read-only: every method but GET and HEAD is a 405, so no one deletes or edits a
study through it (optuna-dashboard serves ``DELETE /api/studies/{id}`` and has no login of its own). ``/healthz``
answers ``ok`` to anyone, for probes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Iterable
from typing import Any

from .core.config import ApiKey, Settings
from .core.loopback import host_allowed, is_same_site

__all__ = ["DashboardGuard", "READ_METHODS", "dashboard_app"]

#: What a read-only dashboard answers; anything else is a 405.
READ_METHODS = ("GET", "HEAD")
REALM = "tvlars-tune dashboard"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class DashboardGuard:
    """WSGI middleware around optuna-dashboard: the Host check, then Basic auth and read-only with keys, or the
    cross-site write check without."""

    def __init__(self, app: WSGIApp, settings: Settings) -> None:
        self.app = app
        self.keys: list[ApiKey] = settings.keys
        self.host_patterns = settings.host_patterns

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, host = environ.get("REQUEST_METHOD", "GET"), environ.get("HTTP_HOST")
        if environ.get("PATH_INFO") == "/healthz":
            return _answer(start_response, "200 OK", {"status": "ok"})
        if self.host_patterns is not None and not host_allowed(host, self.host_patterns):
            return _answer(
                start_response,
                "403 Forbidden",
                f"Host {host!r} is refused: this dashboard answers only {', '.join(self.host_patterns)} "
                "(TVLARS_ALLOWED_HOSTS; without API keys, loopback names only). Use http://127.0.0.1:PORT.",
            )
        if self.keys:
            if not self.authenticated(environ.get("HTTP_AUTHORIZATION")):
                return _answer(
                    start_response,
                    "401 Unauthorized",
                    "Sign in with any user name and an API key (TVLARS_API_KEYS) as the password",
                    [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')],
                )
            if method not in READ_METHODS:
                return _answer(
                    start_response,
                    "405 Method Not Allowed",
                    f"This dashboard is read-only ({method} refused): change studies through the tvlars-tune API "
                    "(cancel, resume) with a write key",
                    [("Allow", ", ".join(READ_METHODS))],
                )
        elif method not in (*READ_METHODS, "OPTIONS"):
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and not is_same_site(origin, host):
                return _answer(
                    start_response,
                    "403 Forbidden",
                    f"Cross-site write refused: Origin {origin!r} is neither this dashboard nor this machine",
                )
        return self.app(environ, start_response)

    def authenticated(self, authorization: str | None) -> bool:
        """``Basic base64(user:password)`` whose password is a configured key (the user name is not read)."""
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, colon, password = decoded.partition(":")
        if not colon or not password:
            return False
        match = False
        for key in self.keys:  # every key compared, each in constant time
            match |= hmac.compare_digest(key.secret.encode(), password.encode())
        return match


def dashboard_app(settings: Settings) -> WSGIApp:
    """optuna-dashboard's WSGI app on TVLARS_DATABASE_URL, guarded (:class:`DashboardGuard`)."""
    from optuna_dashboard import wsgi

    from .core.db import normalize_url

    return DashboardGuard(wsgi(normalize_url(settings.database_url)), settings)


def _answer(
    start_response: Callable[..., Any],
    status: str,
    detail: str | dict[str, str],
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    """A JSON answer, as the API's: ``{"detail": ...}`` for a refusal."""
    body = json.dumps(detail if isinstance(detail, dict) else {"detail": detail}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or [])])
    return [body]
