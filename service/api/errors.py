"""How the routes answer errors: the responses every route may give (documented so clients and schema checks know
them), per-resource 404/409 descriptions, and a request body's validation errors as a 422 with each field's location
under ``body``. The exceptions themselves become responses in :func:`service.main.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from search_spaces.spec import non_finite_path

__all__ = ["COMMON_RESPONSES", "Responses", "conflict", "not_found", "validate_body"]

Responses = dict[int | str, dict[str, Any]]

#: What any route may answer besides its own codes.
COMMON_RESPONSES: Responses = {
    400: {"description": "The body is not valid JSON"},
    401: {"description": "Missing or invalid API key"},
    403: {
        "description": "The API key's role does not allow this; without keys: a Host, address or cross-site write "
        "this server refuses (the detail says what to do)"
    },
    413: {"description": "The body is too large"},
    415: {"description": "Without API keys: a write not sent as JSON (Content-Type: application/json)"},
    503: {"description": "The database is unavailable"},
}


def not_found(description: str) -> Responses:
    return {404: {"description": description}}


def conflict(description: str) -> Responses:
    return {409: {"description": description}}


Spec = TypeVar("Spec", bound=BaseModel)


def validate_body(model: type[Spec], body: dict[str, Any], resolve: Callable[[dict[str, Any]], dict[str, Any]]) -> Spec:
    """``body`` with its preset resolved by ``resolve`` (a KeyError: no such preset), validated as ``model``; either
    error is a 422 (RequestValidationError) with each field's location under ``body``."""
    try:
        data = resolve(body)
    except KeyError as e:
        raise RequestValidationError([{"loc": ("body", "preset"), "msg": str(e), "type": "value_error"}]) from None
    where = non_finite_path(data)
    if where is not None:  # before validation: its location is the field's own, and nothing deep-copies it first
        msg = "NaN and ±Infinity are not JSON numbers; a spec may not hold them"
        raise RequestValidationError([{"loc": ("body", *where), "msg": msg, "type": "finite_number"}])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = [
            {"loc": ("body", *e_["loc"]), "msg": e_["msg"], "type": e_["type"]}
            for e_ in e.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None
