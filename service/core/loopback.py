"""What counts as this machine: loopback addresses and names. A server without API keys answers only these (the
API: :mod:`service.api.doors`; optuna-dashboard: :mod:`service.dashboard`)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_HOSTS", "host_allowed", "host_pattern", "is_loopback", "is_same_site"]

#: The Host names a server without API keys answers by default (TVLARS_ALLOWED_HOSTS widens it).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (127.0.0.0/8, ``::1``, an IPv4-mapped one of those; brackets allowed) or the
    name ``localhost``."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def host_pattern(name: str) -> str:
    """``name`` as it appears in a Host header: an IPv6 literal in brackets (``::1`` → ``[::1]``), lower case."""
    name = name.strip().lower()
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            return f"[{name}]"
    except ValueError:
        pass
    return name


def is_same_site(origin: str, host: str | None) -> bool:
    """A browser's ``Origin`` is this server's own page (its host and port are the request's ``Host``) or a page
    served from this machine (a loopback host). ``null`` (a sandboxed frame, a file) is neither."""
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not hostname:
        return False
    return is_loopback(hostname) or (host is not None and parts.netloc.lower() == host.strip().lower())


def host_allowed(host_header: str | None, patterns: list[str]) -> bool:
    """``host_header``'s host (its port dropped, an IPv6 literal kept in brackets) matches one of ``patterns`` as
    Starlette's ``TrustedHostMiddleware`` matches: equal, or under a leading ``*.``, or the pattern ``*``. For the
    WSGI dashboard; the API uses Starlette's own."""
    header = (host_header or "").strip().lower()
    if not header:
        return False
    host = header[: header.index("]") + 1] if header.startswith("[") and "]" in header else header.split(":")[0]
    return any(p == "*" or host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)
