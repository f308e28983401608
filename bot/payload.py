"""Validating JSON bodies against pydantic models, with errors that name the field.

Every channel that takes JSON it defines itself (REST, web chat, memory) answers a bad body the
same way: malformed JSON or a schema violation is :class:`~bot.errors.PayloadInvalid` (HTTP 400)
naming the dotted field, and text over the configured size is
:class:`~bot.errors.PayloadTooLarge` (HTTP 413). Platform payloads (Slack, Telegram, Discord,
Bot Framework) are translated by plain functions marked :func:`rejects_malformed`: a value of
an unexpected type or shape deep inside one is a 400, not a 500 that the platform would retry
(Telegram redelivers a failed update before any later one).
"""

from __future__ import annotations

import functools
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError

from bot.errors import PayloadInvalid, PayloadTooLarge, SwitchboardError

ModelT = TypeVar("ModelT", bound=BaseModel)
P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

SHAPE_ERRORS = (TypeError, AttributeError, ValueError, LookupError)
"""What reading a payload of an unexpected shape raises in translation code (a number where a
string was expected, a list where an object was: ``TypeError``, ``AttributeError``; pydantic's
``ValidationError`` is a ``ValueError``; a missing key or index: ``LookupError``)."""


def rejects_malformed(platform: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function that translates a verified ``platform`` payload.

    The errors of :data:`SHAPE_ERRORS` it raises become :class:`~bot.errors.PayloadInvalid`
    (HTTP 400), logged as ``payload.malformed`` with the error's type and the line that raised
    it (never the payload: it holds message text). Switchboard's own errors pass unchanged.

    Args:
        platform: the platform's name in the error message and the log (``"slack"``...).
    """

    def decorate(translate: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(translate)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return translate(*args, **kwargs)
            except SwitchboardError:
                raise
            except SHAPE_ERRORS as exc:
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                log.warning(
                    "payload.malformed",
                    extra={
                        "platform": platform,
                        "error": type(exc).__name__,
                        "at": f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}",
                    },
                )
                raise PayloadInvalid(
                    f"malformed {platform} payload: a field has an unexpected type or shape"
                ) from exc

        return guarded

    return decorate


def decode_json(data: bytes) -> Any:
    """Decode ``data`` as UTF-8 JSON (RFC 8259) into Python values (dict, list, str...).

    Raises:
        PayloadInvalid: the bytes are not UTF-8 JSON (HTTP 400).
    """
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadInvalid(f"malformed JSON: {exc}") from exc


def parse_json_model(model: type[ModelT], data: bytes, *, what: str = "body") -> ModelT:
    """Decode ``data`` (UTF-8 JSON, RFC 8259) and validate it as ``model``.

    Args:
        model: the pydantic model of the body.
        data: the raw bytes.
        what: how error messages call the body when no field can be named.

    Raises:
        PayloadInvalid: malformed JSON (``field`` None) or a schema violation (``field`` is the
            dotted path of the first error, e.g. ``user.id``).
    """
    doc = decode_json(data)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or None
        raise PayloadInvalid(f"{loc or what}: {err['msg']}", field=loc) from exc


def check_text_bytes(text: str, limit_bytes: int, *, field: str = "text") -> None:
    """Refuse ``text`` longer than ``limit_bytes`` once encoded as UTF-8.

    Raises:
        PayloadTooLarge: over the limit (HTTP 413), naming ``field``.
    """
    size = len(text.encode("utf-8"))
    if size > limit_bytes:
        raise PayloadTooLarge(
            f"{field} is {size} bytes; the limit is {limit_bytes}",
            limit_bytes=limit_bytes,
            field=field,
        )


OWN_BODY_LIMIT = "switchboard_own_body_limit"
"""The attribute :func:`bounds_own_body` sets on a handler."""

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def bounds_own_body(handler: HandlerT) -> HandlerT:
    """Mark an HTTP handler that reads and bounds its request body itself (file uploads).

    The server's body cap (``max_body_bytes``, :func:`bot.server.body_limit_middleware`) lets
    requests routed to a marked handler through, whatever their ``Content-Length``: the handler
    must stream the body and stop at its own limit. Works on functions and on methods (decorate
    the method in the class body).

    Returns:
        ``handler`` itself.
    """
    setattr(handler, OWN_BODY_LIMIT, True)
    return handler
