"""Storage errors, and the one retry policy: what counts as transient, and how long it is retried
(VIDGEN_STORAGE_RETRY_S)."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Callable, TypeVar

from vidgen_ray.errors import UserError

log = logging.getLogger("vidgen_ray.storage")
T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to fix."""


class StorageNotFoundError(StorageError, UserError, FileNotFoundError):
    """The file/object (or its bucket) does not exist."""


class BucketNotFoundError(StorageNotFoundError):
    """The bucket/container itself does not exist."""


class StorageAccessError(StorageError, UserError, PermissionError):
    """Credentials are missing, wrong, expired, or lack permission."""


class UnsupportedURIError(StorageError, UserError, ValueError):
    """The URI cannot be parsed (unknown or misspelt scheme, missing bucket, bad query)."""


# Retries and error translation

# Substrings of pyarrow ("AWS Error SLOW_DOWN during ...", "AWS Error UNKNOWN (HTTP status 503)"),
# botocore ("An error occurred (SlowDown) ...") and socket errors that mean "try again".
_TRANSIENT_PATTERNS = re.compile(
    r"NETWORK_CONNECTION|curlCode|SLOW_DOWN|SlowDown|THROTTL|Throttl|TooManyRequests|SERVICE_UNAVAILABLE|"
    r"ServiceUnavailable|INTERNAL_FAILURE|InternalError|REQUEST_TIMEOUT|RequestTimeout|"
    r"HTTP status (?:5\d\d|429)|status code:? (?:5\d\d|429)|Connection reset|connection was closed|"
    r"Connection was closed|Broken pipe|timed out|Timeout was reached|Could not connect|Couldn't connect|"
    r"UNAVAILABLE|DEADLINE_EXCEEDED|ServerBusy|OperationTimedOut|\(5\d\d\)|Could not connect to the endpoint"
)
_ACCESS_PATTERNS = re.compile(
    r"ACCESS_DENIED|AccessDenied|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|INVALID_ACCESS_KEY_ID|"
    r"InvalidAccessKeyId|EXPIRED_TOKEN|ExpiredToken|InvalidToken|InvalidClientTokenId|UNRECOGNIZED_CLIENT|"
    r"NoCredentialsError|Unable to locate credentials|PERMISSION_DENIED|UNAUTHENTICATED|AuthorizationFailure|"
    r"AuthenticationFailed|HTTP status 403|\(403\)|Forbidden"
)
_NO_BUCKET_PATTERNS = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|ContainerNotFound|The specified bucket does not exist")
_NOT_FOUND_PATTERNS = re.compile(r"NO_SUCH_KEY|NoSuchKey|\(404\)|BlobNotFound|PathNotFound|No such file")
_REGION_PATTERNS = re.compile(
    r"PERMANENT_REDIRECT|PermanentRedirect|AuthorizationHeaderMalformed|HTTP status 301|wrong region"
)


def _is_botocore_transient(exc: BaseException) -> bool | None:
    """True/False for botocore exceptions, None for anything else (botocore is only imported if in use)."""
    if not type(exc).__module__.startswith(("botocore", "urllib3", "s3transfer", "boto3")):
        return None
    if type(exc).__module__.startswith("boto3"):  # S3UploadFailedError: the managed upload's ClientError, as text
        return bool(_TRANSIENT_PATTERNS.search(str(exc)))
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or bool(_TRANSIENT_PATTERNS.search(code))
    transient_types = (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ReadTimeoutError, bx.ConnectTimeoutError)
    return isinstance(exc, transient_types) or bool(_TRANSIENT_PATTERNS.search(str(exc)))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` can help: timeouts, connection resets, 5xx, SlowDown, throttling.
    Never NotFound, AccessDenied, a wrong URI, or anything already translated."""
    permanent = (StorageError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError)
    if isinstance(exc, permanent):
        return False
    boto = _is_botocore_transient(exc)
    if boto is not None:
        return boto
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError):
        text = str(exc)
        if _ACCESS_PATTERNS.search(text) or _NO_BUCKET_PATTERNS.search(text) or _NOT_FOUND_PATTERNS.search(text):
            return False
        return bool(_TRANSIENT_PATTERNS.search(text))
    return False


RETRY_ENV = "VIDGEN_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 60.0  # rides out an endpoint restart or a throttling burst; a longer outage fails


def retry_seconds() -> float:
    """How long transient errors are retried, from VIDGEN_STORAGE_RETRY_S (seconds; 0 = try once)."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise UnsupportedURIError(f"{RETRY_ENV}={raw!r} must be a number of seconds >= 0 (default {DEFAULT_RETRY_S:g})")
    return value


def with_retries(
    fn: Callable[[], T],
    *,
    seconds: float | None = None,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    what: str = "storage operation",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn()``; on a transient error wait and try again until ``seconds`` (default: ``retry_seconds()``)
    have passed since the first call. The waits double from ``base_delay`` up to ``max_delay``, each drawn
    from its upper half (equal jitter: spread out, yet never near zero, so an outage of a few seconds is
    waited out in a bounded number of calls). Other errors propagate at once. The last error gets a note
    saying how many attempts were made over how long.

    This is the one retry policy: the clients underneath are configured not to retry on their own
    (pyarrow's S3 and GCS clients, boto3); only the Azure SDK inside pyarrow keeps its built-in few
    retries (about 6 s), which pyarrow does not expose."""
    budget = retry_seconds() if seconds is None else seconds
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            elapsed = clock() - start
            cap = min(max_delay, base_delay * 2 ** (attempt - 1))
            delay = random.uniform(cap / 2, cap)
            if elapsed + delay > budget:
                exc.add_note(f"{what}: gave up after {attempt} attempt(s) over {elapsed:.1f} s of transient errors "
                             f"({RETRY_ENV}={budget:g})")
                raise
            log.warning("%s: transient error (attempt %d, %.1f s of %g), retrying in %.2fs: %s",
                        what, attempt, elapsed, budget, delay, exc)
            sleep(delay)
