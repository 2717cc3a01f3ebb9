"""Keep credentials out of logs, metrics, span attributes, health output and exceptions."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_text", "redact_url", "safe_address"]

# scheme://user:password@host  ->  scheme://user:***@host ; also bare password=... pairs.
_USERINFO: Final = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_KEY_VALUE: Final = re.compile(r"(?i)\b(password|passwd|pwd)=([^&\s'\";]+)")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` and its query string removed."""
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
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable>"
    return f"{host}:{port}" if port else host


def redact_text(text: str) -> str:
    """Remove passwords from free text such as a driver's exception message."""
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{match['user']}:***@", text)
    return _KEY_VALUE.sub(lambda match: f"{match.group(1)}=***", text)
