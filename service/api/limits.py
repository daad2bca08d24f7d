"""Limits on what a request may ask: its body's size (413, whether it declares a length or streams chunked) and JSON
nesting depth (422), both applied before anything parses it; and, once a spec is valid, whether one of its trials
fits in memory and in some node's resources (422 at submit rather than a study that fails or waits later).

The body is read here, as it arrives, up to ``max_bytes``: a body that grows past the limit is answered 413 as soon
as the byte that crosses it arrives, before the route (and FastAPI's body parsing, which would turn any error
raised while reading into a 400) sees it. A body within the limit is handed on unchanged.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_spaces.memory import host_memory_bytes, trial_memory
from search_spaces.spec import StudySpec

__all__ = [
    "MAX_JSON_DEPTH",
    "BodyLimits",
    "check_resources",
    "check_trial_memory",
    "json_depth",
    "trial_memory_error",
]

#: The deepest nesting of arrays and objects a JSON body may have. A spec is 4 levels deep (spec → search_space →
#: param → choices); a value in ``fixed`` or ``enqueue`` adds a few. Deep nesting only costs: Python's parser and
#: every later copy recurse once per level.
MAX_JSON_DEPTH = 32

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(body: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside strings in ``body`` (0 for a scalar), without parsing it."""
    brackets = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b'""', body)).replace(b'""', b"")
    return max(accumulate(_STEP[c] for c in brackets), default=0)


class BodyLimits:
    """413 for a body over ``max_bytes`` (declared or streamed), 422 for JSON nested deeper than ``max_depth``."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, 413, f"Request body larger than {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, 413, f"Request body larger than {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _is_json(scope) and json_depth(body) > self.max_depth:
            await _answer(send, 422, f"Request body nested deeper than {self.max_depth} levels of arrays/objects")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server's receive does

        await self.app(scope, replay, send)


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"application/json")
    return b"json" in content_type.lower()


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- what one trial of a spec would need: checked at submit ---------------------------------------------------------


def trial_memory_error(spec: StudySpec, max_trial_gb: float | None) -> str | None:
    """Why one trial of ``spec`` cannot fit (its estimated host memory over ``max_trial_gb`` GiB, or over this
    host's memory when that is None), else None. The estimate takes the larger of the search space's two corners."""
    limit = max_trial_gb * 2**30 if max_trial_gb is not None else host_memory_bytes()
    if limit is None:
        return None
    worst = None
    for corner in (spec.lower_corner(), spec.upper_corner()):
        estimate = trial_memory(spec.trial_config(corner), on_gpu=spec.resources.gpu > 0)
        if estimate is not None and (worst is None or estimate.total_bytes > worst.total_bytes):
            worst = estimate
    if worst is None or worst.total_bytes <= limit:
        return None
    where = f"TVLARS_MAX_TRIAL_GB ({max_trial_gb:g} GiB)" if max_trial_gb is not None else "this host's memory"
    return (
        f"one trial of study {spec.name!r} needs {worst.describe()}: more than {where} ({limit / 2**30:.3g} GiB). "
        "Use a smaller model, batch size (or micro_batch_size) or dataset"
    )


def check_trial_memory(spec: StudySpec, max_trial_gb: float | None) -> None:
    """422 (RequestValidationError at ``body.workload``) if one trial of ``spec`` cannot fit."""
    message = trial_memory_error(spec, max_trial_gb)
    if message is not None:
        raise RequestValidationError([{"loc": ("body", "workload"), "msg": message, "type": "trial_memory"}])


def check_resources(spec: StudySpec) -> None:
    """422 at ``body.resources`` if this process sees a Ray cluster and no node of it offers one trial's resources.
    The API never starts or waits on Ray: where Ray is not already up in this process, the worker checks at claim."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    from ..engine.ray_setup import resources_unavailable

    message = resources_unavailable(spec)
    if message is not None:
        raise RequestValidationError([{"loc": ("body", "resources"), "msg": message, "type": "resources"}])
