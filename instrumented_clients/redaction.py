"""Keep credentials out of logs, metrics, span attributes, health output and exceptions."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["describe_error", "error_text", "redact_text", "redact_url", "safe_address"]

# scheme://user:password@host  ->  scheme://user:***@host. The password runs to the LAST "@" of
# the URL (unencoded "@" and "/" do occur in real passwords), never past whitespace or a quote.
_USERINFO: Final = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s'\"]*):[^\s'\"]*@"
)
# password=..., password: ..., "password": "...", PWD='...' (DSNs, JSON, driver messages).
_KEY_VALUE: Final = re.compile(
    r"""(?i)\b(?P<key>password|passwd|pwd)(?P<sep>["']?\s*[=:]\s*)"""
    r"""(?:"[^"]*"|'[^']*'|[^&\s'",;]+)"""
)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` and its query string removed."""
    if "://" not in url:
        # ``user:secret@host:5672`` would parse as scheme "user"; treat it as bare userinfo.
        if "@" in url:
            userinfo, _, rest = url.rpartition("@")
            user = userinfo.split(":", 1)[0]
            return f"{user}:***@{rest}" if ":" in userinfo else url
        return redact_text(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def safe_address(url: str) -> str:
    """``host:port`` of a URL, for span attributes and health output (no user, no password)."""
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def redact_text(text: str) -> str:
    """Remove passwords from free text such as a driver's exception message."""
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{match['user']}:***@", text)
    return _KEY_VALUE.sub(lambda match: f"{match['key']}{match['sep']}***", text)


def error_text(error: BaseException) -> str:
    """An exception's message, redacted and never empty for a failure that has anything to say.

    Several of pika's connection errors print as nothing (their ``__str__`` is empty for one
    argument): their arguments speak instead, else a TLS verification failure they carry, else
    their cause.
    """
    # Imported here: the resilience package itself imports this module.
    from instrumented_clients.resilience.errors import tls_verification_failure

    text = str(error).strip() or "; ".join(str(arg) or repr(arg) for arg in error.args)
    if not text and (tls := tls_verification_failure(error)) is not None:
        text = f"{type(error).__name__}: TLS certificate verification failed: {tls}"
    if not text:
        cause = error.__cause__ or error.__context__
        text = type(error).__name__ + (
            f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        )
    return redact_text(text)


def describe_error(error: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message`` for health output and tables: redacted, bounded."""
    text = error_text(error)
    first_line = text.splitlines()[0] if text else ""
    name = type(error).__name__
    described = first_line if first_line.startswith(name) else f"{name}: {first_line}"
    return described if len(described) <= limit else described[: limit - 1] + "…"
