"""What a task message must look like before Celery's consumer touches it.

Celery's consumer trusts what arrives: a header or body of the wrong shape or
type raises from deep inside its strategy or ``Request`` (``KeyError: 'id'``,
``not enough values to unpack``, ``unhashable type``...), nothing there catches
it, the consumer's blueprint stops and the worker exits; the message goes back
to the queue and kills the next worker too. So every message is checked here
against Celery's protocol 2 (``celery.app.amqp.as_task_v2``, JSON only) first,
and one that does not fit is dead-lettered with the reason (fleet.worker.consumer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from celery.utils.time import maybe_iso8601

#: The ``reason`` label of ``fleet_messages_rejected_total``: a bounded set.
REASONS = ("content_type", "undecodable", "headers", "body", "unknown_task", "invalid", "error")

JSON = "application/json"
UTF8 = frozenset({"utf-8", "utf8"})  # kombu decodes JSON as UTF-8 whatever the encoding says
EMBED_LISTS = ("callbacks", "errbacks", "chain")  # lists of signatures (dicts)
EMBED_KEYS = frozenset({*EMBED_LISTS, "chord"})  # chord: one signature (a dict)
#: How deep lists and objects may nest in the body or the headers. The pool pickles them to its
#: children from the worker's event loop, outside any per-message guard, and pickle recurses per
#: level: JSON nested ~900 deep decodes but does not pickle, and stopped the worker.
MAX_NESTING = 100


class MessageRejected(Exception):
    """Why a message was dead-lettered: ``reason`` (one of REASONS) and a human detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _moment(value: Any) -> bool:
    """An ISO 8601 string Celery and fleet.worker.parking can parse and turn into a timestamp.

    Not empty: Celery's ``Request`` parses "" to None, then fails making it aware.
    """
    if not isinstance(value, str) or not value:
        return False
    try:
        moment = maybe_iso8601(value)
        (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _time_limits(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(limit is None or _number(limit) for limit in value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


#: Protocol-2 headers Celery reads in the worker's main process or the pool child, and what each may hold.
#: ``None`` is allowed (Celery's own producer sends it for unset ones) but for NOT_NULL. Other headers pass.
HEADER_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "lang": ("a string", lambda v: isinstance(v, str)),
    "shadow": ("a string", lambda v: isinstance(v, str)),
    "eta": ("an ISO 8601 date-time", _moment),
    "expires": ("an ISO 8601 date-time", _moment),
    "group": ("a string", lambda v: isinstance(v, str)),
    "group_index": ("a count", _count),
    "retries": ("a count", _count),
    "timelimit": ("a [hard, soft] pair of seconds", _time_limits),
    "root_id": ("a string", lambda v: isinstance(v, str)),
    "parent_id": ("a string", lambda v: isinstance(v, str)),
    "argsrepr": ("a string", lambda v: isinstance(v, str)),
    "kwargsrepr": ("a string", lambda v: isinstance(v, str)),
    "origin": ("a string", lambda v: isinstance(v, str)),
    "ignore_result": ("a boolean", lambda v: isinstance(v, bool)),
    "replaced_task_nesting": ("a count", _count),
    "stamped_headers": ("a list of strings", _strings),
    "stamps": ("a table", lambda v: isinstance(v, dict)),
}


#: Counts Celery does arithmetic on (a retry, the retry after a lost worker) without a None check; absent is 0.
NOT_NULL = frozenset({"retries", "replaced_task_nesting"})


def _too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether lists and objects nest deeper than ``limit`` in ``value``.

    Level by level, iteratively (the point is a value too deep to recurse on), and only
    containers are carried to the next level: scalars, most of any message, are looked at
    once (28 -> 20 µs for the check of a whole Celery message, in process).
    """
    level = [value] if isinstance(value, list | dict) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        deeper = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, list | dict):
                    deeper.append(child)
        level, depth = deeper, depth + 1
    return False


def _clip(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def check_headers(headers: Any) -> MessageRejected | None:
    """The protocol-2 headers' problem, or None. The task name is checked against the registry later."""
    if not isinstance(headers, Mapping):
        return MessageRejected("headers", f"headers are {type(headers).__name__}, not a table")
    for required in ("id", "task"):
        value = headers.get(required)
        if not isinstance(value, str) or not value:
            problem = "missing" if required not in headers else f"{_clip(value)}, not a non-empty string"
            return MessageRejected("headers", f"header {required!r} is {problem} (not a Celery protocol 2 task)")
    if _too_deep(headers):
        return MessageRejected("headers", f"headers nest deeper than {MAX_NESTING} levels")
    for name, (expected, valid) in HEADER_CHECKS.items():
        value = headers.get(name)
        if (value is not None or (name in NOT_NULL and name in headers)) and not valid(value):
            return MessageRejected("headers", f"header {name!r} is {_clip(value)}, not {expected}")
    return None


def check_body(body: Any) -> MessageRejected | None:
    """The decoded body's problem, or None: it must be ``[args, kwargs, embed]``."""
    if not isinstance(body, list) or len(body) != 3:
        return MessageRejected("body", f"body is {_clip(body)}, not [args, kwargs, embed]")
    if _too_deep(body):
        return MessageRejected("body", f"body nests deeper than {MAX_NESTING} levels")
    args, kwargs, embed = body
    if not isinstance(args, list):
        return MessageRejected("body", f"args are {_clip(args)}, not a list")
    if not isinstance(kwargs, dict):
        return MessageRejected("body", f"kwargs are {_clip(kwargs)}, not an object")
    if embed is None:
        return None
    if not isinstance(embed, dict):
        return MessageRejected("body", f"embed is {_clip(embed)}, not an object")
    if extra := set(embed) - EMBED_KEYS:
        return MessageRejected("body", f"embed has unknown keys {sorted(extra)!r}")
    for key in EMBED_LISTS:
        value = embed.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(sig, dict) for sig in value)):
            return MessageRejected("body", f"embed {key!r} is {_clip(value)}, not a list of signatures")
    chord = embed.get("chord")
    if chord is not None and not isinstance(chord, dict):
        return MessageRejected("body", f"embed 'chord' is {_clip(chord)}, not a signature")
    return None


def check_message(message: Any) -> MessageRejected | None:
    """Why Celery must not see ``message`` (a kombu Message), or None if it is a well-formed task.

    Decodes the body in the worker's main process; Celery does that anyway for every
    message (``'args' in message.payload`` in its strategy), and kombu caches it.
    """
    rejection = check_headers(message.headers)
    if rejection is not None:
        return rejection
    if message.content_type != JSON:
        return MessageRejected("content_type", f"content type {_clip(message.content_type)}; only {JSON} is accepted")
    encoding = message.content_encoding
    if encoding and encoding.lower() not in UTF8:
        return MessageRejected("content_type", f"content encoding {_clip(encoding)}; JSON is UTF-8")
    try:
        body = message.decode()
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the body is not JSON
        return MessageRejected("undecodable", f"{type(exc).__name__}: {_clip(str(exc), 200)}")
    return check_body(body)
