"""Keep secrets out of everything ``apply`` prints or logs.

``apply`` handles bearer tokens, kubeconfig credentials, and error messages from Azure and
Kubernetes that may echo URLs with function keys (``?code=``), SAS signatures or
connection strings. Two layers protect the output:

* known values: every token the credential hands out and every credential read from a
  kubeconfig is registered with :func:`register`, and replaced wherever it appears;
* shapes: patterns that look like secrets (``Bearer ...``, JWTs, ``code=``/``sig=``
  query parameters, ``AccountKey=``, passwords in URLs) are masked even when their value
  was never seen, since an error message can quote a key ``apply`` never held.

:func:`scrub` is applied to every line ``apply`` prints, and :func:`scrubbed_logging`
wraps the log-record factory for the duration of a run, so third-party loggers (the
Azure SDK, urllib3, the Kubernetes client) are cleaned at the source: a handler added by
anyone (pytest's caplog, a CI log shipper) only ever sees scrubbed records.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MASK = "***"

#: (pattern, replacement) pairs, applied in order.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # JSON Web Tokens (Entra ID access tokens, service-account tokens).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    # Keys in query strings: function keys, SAS signatures, tokens.
    (
        re.compile(
            r"(?i)([?&;](?:code|sig|key|token|access_token|client_secret|password|secret"
            r"|subscription-key|api-key)=)[^&#\s\"'<>]+"
        ),
        rf"\1{MASK}",
    ),
    # Connection-string fields.
    (
        re.compile(
            r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd"
            r"|ClientSecret)=([^;\s\"']+)"
        ),
        rf"\1={MASK}",
    ),
    # user:password@ in URLs (rediss://:key@host, https://user:pw@host).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]+)@"), rf"\1\2:{MASK}@"),
    # "key": "value" / key=value for header and kubeconfig field names that hold secrets.
    (
        re.compile(
            r"(?i)(\"?(?:x-functions-key|ocp-apim-subscription-key|authorization"
            r"|client-key-data|client-certificate-data|access[_-]token|refresh[_-]token"
            r"|id[_-]token|password)\"?\s*[:=]\s*\"?)([^\"\s,}]+)"
        ),
        rf"\1{MASK}",
    ),
)

_known: set[str] = set()
_lock = threading.Lock()
#: Values shorter than this are not registered: masking "true" or a port number
#: everywhere would make output unreadable and protects nothing.
_MIN_SECRET = 8


def register(*values: str | None) -> None:
    """Remember secret values so that :func:`scrub` masks them wherever they appear."""
    with _lock:
        for v in values:
            if v and len(v) >= _MIN_SECRET:
                _known.add(v)


def scrub(text: str) -> str:
    """``text`` with every known secret and every secret-looking value masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def scrub_any(value: Any) -> str:
    """``str(value)``, scrubbed (for exceptions and other objects)."""
    return scrub(str(value))


_FORMATTER = logging.Formatter()


@contextmanager
def scrubbed_logging() -> Iterator[None]:
    """Scrub every log record created while the block runs, whichever logger made it.

    The log-record factory is process-wide, so this reaches records of libraries that
    log directly (urllib3 connection messages, azure-core's HTTP logging policy) before
    any handler or filter sees them. The previous factory is restored on exit.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # A traceback is text too: an exception's message or a local in a frame line
        # can hold a token. Handlers format ``exc_text`` when it is set, so it is
        # formatted (and scrubbed) here, once, before any handler sees the record.
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to fix
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)
