"""Retrying transient failures: one policy for every service ``apply`` talks to.

Azure Resource Manager throttles with 429 + ``Retry-After``, the Kubernetes API server
answers 429/503 while it is busy or being upgraded, and CI networks drop connections.
None of these mean the request was wrong, so they are retried with exponential backoff
(or after the server's ``Retry-After``), and only after the attempts run out does
``apply`` stop, naming the resource and the last cause. Everything else (400, 403, 404,
409, 422) is permanent and stops at once: retrying it would only hide the message.

The Azure SDK clients get the same numbers through :class:`RetrySettings` (azure-core's
own retry policy does the work there); the Kubernetes calls and the few raw HTTP loops
use :func:`call_with_retry`.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .scrub import scrub

LOG = logging.getLogger("ai4ec.apply")

#: Status codes that say "try again later", not "this request is wrong".
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How often and how patiently to retry.

    Attributes:
        attempts: total tries per request, the first included.
        backoff: delay before the first retry without ``Retry-After``; it doubles each
            time, with jitter.
        max_delay: upper bound of one computed delay.
        max_retry_after: upper bound of one server-requested delay; a server asking for
            more than this is treated as asking for this.
        sleep: how to wait (tests pass a recorder).
    """

    attempts: int = 6
    backoff: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        base = min(self.backoff * (2.0 ** (retry - 1)), self.max_delay)
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


class TransientError(Exception):
    """A failure worth retrying, with the server's requested delay when it gave one."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed transiently; ``cause`` is the last failure."""

    def __init__(self, what: str, attempts: int, cause: str) -> None:
        super().__init__(f"{what}: still failing after {attempts} attempts: {cause}")
        self.what = what
        self.attempts = attempts
        self.cause = cause


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def call_with_retry(
    what: str,
    fn: Callable[[], T],
    settings: RetrySettings,
    notify: Callable[[str], None] | None = None,
) -> T:
    """Run ``fn``, retrying while it raises :class:`TransientError`.

    Args:
        what: the request in words ("PATCH Deployment ns/name"), for messages.
        fn: the call; it raises :class:`TransientError` for retryable failures and
            anything else for permanent ones (which propagate unchanged).
        settings: attempts and delays.
        notify: told about each retry (progress output); also logged.

    Raises:
        RetriesExhausted: the last attempt failed transiently too.
    """
    for attempt in range(1, settings.attempts + 1):
        try:
            return fn()
        except TransientError as exc:
            if attempt == settings.attempts:
                raise RetriesExhausted(what, attempt, scrub(exc.cause)) from None
            wait = settings.delay(attempt, exc.retry_after)
            message = scrub(
                f"{what}: {exc.cause}; retrying in {wait:.1f}s "
                f"(attempt {attempt + 1} of {settings.attempts})"
            )
            LOG.warning("%s", message)
            if notify is not None:
                notify(message)
            settings.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
