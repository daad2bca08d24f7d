"""The doors of an API without keys: it answers only requests that arrived on a loopback address, that name a
loopback Host (a page that rebinds its own DNS name to 127.0.0.1 is refused), and writes that no page of another
site can send (CSRF). With keys, only the Host check remains, and only where TVLARS_ALLOWED_HOSTS names hosts.

The address is the ASGI scope's ``server`` (the socket the request arrived on), so the app refuses a public
address however it was served: ``tvlars-tune serve`` refuses to bind one, ``uvicorn --factory
service.main:create_app --host 0.0.0.0`` is refused here, request by request.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.loopback import is_loopback, is_same_site

__all__ = ["AllowedHosts", "LoopbackOnly", "SAFE_METHODS"]

#: Methods that change nothing: no content type or Origin is asked of them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HOST_ALLOWED = "tvlars.host_allowed"


class AllowedHosts:
    """Only requests whose ``Host`` matches ``patterns``: Starlette's ``TrustedHostMiddleware`` decides, and a
    refusal is a 403 that says how to reach the server or open it (its own answer is a bare 400)."""

    def __init__(self, app: ASGIApp, patterns: list[str], open_server: bool) -> None:
        self.app = app
        self.patterns = patterns
        self.open_server = open_server
        self.check = TrustedHostMiddleware(_mark_allowed, allowed_hosts=patterns, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.check(scope, receive, _discard)
            if not scope.pop(_HOST_ALLOWED, False):
                await _refuse(scope, receive, send, 403, self.refusal(Headers(scope=scope).get("host")))
                return
        await self.app(scope, receive, send)

    def refusal(self, host: str | None) -> str:
        said = f"Host {host!r}" if host else "A request without a Host header"
        allowed = ", ".join(self.patterns)
        if self.open_server:
            return (
                f"{said} is refused: without API keys this server answers only loopback names ({allowed}). "
                "Use http://127.0.0.1:PORT, or add the name to TVLARS_ALLOWED_HOSTS, or set TVLARS_API_KEYS."
            )
        return f"{said} is refused: this server answers only {allowed} (TVLARS_ALLOWED_HOSTS)."


class LoopbackOnly:
    """An API without keys: 403 for a request that arrived on a non-loopback address or a write whose ``Origin``
    is another site's; 415 for a write not sent as JSON (no page of another site can send one without asking first:
    a bodyless POST needs ``Content-Type: application/json`` too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = refusal(scope)
            if refused is not None:
                await _refuse(scope, receive, send, *refused)
                return
        await self.app(scope, receive, send)


def refusal(scope: Scope) -> tuple[int, str] | None:
    """Why a server without keys refuses this request (status, detail), or None."""
    server = scope.get("server")
    # a Unix socket (a path, no port) is reached only through the file system; an unknown address is refused
    unix_socket = server is not None and server[1] is None and "/" in str(server[0])
    if server is None or not (unix_socket or is_loopback(str(server[0]))):
        where = "an unknown address" if server is None else f"{server[0]}"
        return 403, (
            f"This server has no API keys, so it answers only on a loopback address; this request arrived on {where}. "
            "Connect to 127.0.0.1, or set TVLARS_API_KEYS to serve other addresses."
        )
    if scope["method"] in SAFE_METHODS:
        return None
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is not None and not is_same_site(origin, headers.get("host")):
        return 403, (
            f"Cross-site write refused: Origin {origin!r} is neither this server nor this machine. Without API keys "
            "the API takes writes only from its own pages, loopback pages and clients that send no Origin; set "
            "TVLARS_API_KEYS to take writes from anywhere, each with a Bearer key."
        )
    if not _is_json(headers.get("content-type")):
        return 415, (
            "Without API keys a write must be sent as JSON: send 'Content-Type: application/json', with an empty body "
            "too (curl: --json '{}'), or set TVLARS_API_KEYS."
        )
    return None


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _mark_allowed(scope: Scope, receive: Receive, send: Send) -> None:
    scope[_HOST_ALLOWED] = True


async def _discard(message: Message) -> None:
    """Where TrustedHostMiddleware's own refusal goes: :class:`AllowedHosts` answers instead."""


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
