"""What a SQL span says, per OpenTelemetry's database conventions: a low-cardinality query
summary for its name, the statement's text with its literals masked, and a failure's SQLSTATE.

Computed once per distinct statement (the database caches the result), never per call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opentelemetry.semconv.attributes.db_attributes import (
    DB_OPERATION_NAME,
    DB_QUERY_SUMMARY,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS_CODE,
)

from instrumented_clients.db.errors import classify, response_status_code
from instrumented_clients.telemetry.conventions import ERROR_CATEGORY, ERROR_TYPE
from instrumented_clients.telemetry.otel import exception_type

__all__ = ["describe_error", "query_attributes", "sanitize"]

# The table a verb acts on: SELECT/DELETE ... FROM t, INSERT/REPLACE INTO t, UPDATE t,
# MERGE INTO t. A quoted or schema-qualified name is kept as written (it is still bounded).
_IDENT = r"((?:[A-Za-z_][\w$]*|\"[^\"]+\"|`[^`]+`)(?:\.(?:[A-Za-z_][\w$]*|\"[^\"]+\"|`[^`]+`))?)"
_TARGETS = {
    "SELECT": re.compile(r"\bFROM\s+" + _IDENT, re.I),
    "DELETE": re.compile(r"\bFROM\s+" + _IDENT, re.I),
    "INSERT": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "REPLACE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "MERGE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "UPDATE": re.compile(r"^\s*UPDATE\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "TRUNCATE": re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?" + _IDENT, re.I),
}
# Literals a hand-written statement may hold (values, perhaps secrets): strings, numbers.
_LITERALS = re.compile(r"'(?:''|[^'])*'|\b\d+(?:\.\d+)?\b")
_SUMMARY_MAX = 255


def sanitize(sql: str) -> str:
    """The statement with every string and number literal replaced by ``?``: bind parameters
    (``:id``, ``%s``) are kept, so a parameterised statement reads as written."""
    return _LITERALS.sub("?", sql)


def _summary(sql: str, verb: str) -> str:
    pattern = _TARGETS.get(verb)
    match = pattern.search(sql) if pattern is not None else None
    return f"{verb} {match.group(1)}"[:_SUMMARY_MAX] if match else verb


def query_attributes(statement: Any, verb: str, with_text: bool) -> tuple[str | None,
                                                                           dict[str, Any]]:
    """The summary (the span's name; None when the statement is not understood) and the
    attributes of one statement: ``db.operation.name`` only for a known verb, the sanitised
    ``db.query.text`` for SQL given as text when ``with_text``."""
    if verb == "OTHER":
        attributes: dict[str, Any] = {}
        summary = None
    else:
        attributes = {DB_OPERATION_NAME: verb}
        sql = statement if isinstance(statement, str) else getattr(statement, "text", None)
        summary = _summary(sql, verb) if isinstance(sql, str) else verb
        attributes[DB_QUERY_SUMMARY] = summary
    if with_text:
        sql = statement if isinstance(statement, str) else getattr(statement, "text", None)
        if isinstance(sql, str):
            attributes[DB_QUERY_TEXT] = sanitize(sql)
    return summary, attributes


def describe_error(error: BaseException) -> Mapping[str, Any]:
    """A failed SQL span's attributes: ``error.type`` is the SQLSTATE (or the server's error
    number) when the database answered with one, else the exception's class."""
    code = response_status_code(error)
    attributes: dict[str, Any] = {ERROR_CATEGORY: classify(error).value}
    if code is None:
        attributes[ERROR_TYPE] = exception_type(getattr(error, "orig", None) or error)
    else:
        attributes[ERROR_TYPE] = code
        attributes[DB_RESPONSE_STATUS_CODE] = code
    return attributes
