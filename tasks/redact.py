"""Credentials out of text that goes to logs: URLs' userinfo and query values, tokens.

Pure and total: any string in, a string out, never raises; applying it twice changes
nothing more. Used where error details are logged (tasks/failures.py), by the log
pipeline for every string value (runtime/logging.py), and by the HTTP platform adapter
for the agent URL it names in its errors.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "redact", "redact_url"]

MASK = "***"

# A URL: scheme://, then anything up to whitespace, a quote, a parenthesis or a brace.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>(){}]+")
# `Bearer <token>` (an Authorization header quoted in an error).
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\*\*\*)[^\s\"',;]+")
# `password=...`, `"access_token": "..."`, `api_key: ...` outside URLs.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:access_?|refresh_?|api_?|auth_?)?(?:token|key|secret|password|passwd)"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)[^\s\"'&,;}]+"
)
# Matrix access tokens have a recognisable prefix.
_MATRIX_TOKEN = re.compile(r"\bsy[td]_[A-Za-z0-9_=-]+")


def redact_url(url: str) -> str:
    """`url` without its userinfo and with every query value masked; keys stay readable."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rpartition("@")[2]
        query = "&".join(_mask_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # e.g. a bad IPv6 literal: keep only the scheme
        return url.partition("://")[0] + "://" + MASK


def _mask_pair(pair: str) -> str:
    key, sep, _value = pair.partition("=")
    return f"{key}={MASK}" if sep else pair


def redact(text: str) -> str:
    """`text` with credentials masked (see the module docstring)."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + MASK, text)
    return _MATRIX_TOKEN.sub(lambda m: m.group(0)[:4] + MASK, text)
