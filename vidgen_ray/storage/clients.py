"""The store clients (pyarrow filesystems, boto3 for S3 uploads), cached per settings and set not to retry
on their own; and the translation of what they raise into errors that say what to fix."""

from __future__ import annotations

import datetime
import sys
import threading
from typing import Callable, TypeVar

import pyarrow.fs as pafs

from .errors import (
    _ACCESS_PATTERNS,
    _NO_BUCKET_PATTERNS,
    _NOT_FOUND_PATTERNS,
    _REGION_PATTERNS,
    BucketNotFoundError,
    StorageAccessError,
    StorageError,
    StorageNotFoundError,
    is_transient,
    with_retries,
)
from .uris import _AzureSettings, _GcsSettings, _S3Settings, _Target

T = TypeVar("T")


# Filesystems, cached per settings (so per scheme, endpoint, region and credentials)

_FS_CACHE: dict[tuple, pafs.FileSystem] = {}
_GCS_CLIENT_RETRY = datetime.timedelta(seconds=1)  # 0 would make no attempt at all
_FS_LOCK = threading.Lock()
_LOCAL_FS = pafs.LocalFileSystem()


def _make_filesystem(target: _Target) -> pafs.FileSystem:
    """The client for ``target``'s store, with its own retries off: ``with_retries`` is the one policy."""
    if target.scheme == "file":
        return _LOCAL_FS
    if target.scheme == "s3":
        s = target.settings
        assert isinstance(s, _S3Settings)
        return pafs.S3FileSystem(
            access_key=s.access_key,
            secret_key=s.secret_key,
            session_token=s.session_token if s.access_key else None,
            region=s.region,
            endpoint_override=s.endpoint,
            scheme=s.scheme,
            # Requests to a bucket that does not exist must fail, not create it.
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
            # One retry policy (with_retries): the AWS SDK's own would try each call 3 times under it.
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
    if target.scheme == "gs":
        g = target.settings
        assert isinstance(g, _GcsSettings)
        # The Google client's own retry policy runs up to 15 minutes per call by default: with_retries is
        # the one policy here, so the client gives up after its first second.
        gcs: dict = {"retry_time_limit": _GCS_CLIENT_RETRY}
        if g.project:
            gcs["project_id"] = g.project
        if g.endpoint:  # an emulator takes no credentials; bucket creation still wants a project
            gcs.update(anonymous=True, endpoint_override=g.endpoint, scheme=g.scheme, project_id=g.project or "vidgen")
        return pafs.GcsFileSystem(**gcs)
    a = target.settings
    assert isinstance(a, _AzureSettings)
    kwargs: dict = {"account_name": a.account}
    if a.account_key:
        kwargs["account_key"] = a.account_key
    elif a.sas_token:
        kwargs["sas_token"] = a.sas_token
    if a.blob_authority:  # Azurite or a private endpoint: the account is the URL's first path segment
        kwargs.update(blob_storage_authority=a.blob_authority, dfs_storage_authority=a.blob_authority,
                      blob_storage_scheme=a.scheme, dfs_storage_scheme=a.scheme)
    elif a.host_suffix != "dfs.core.windows.net":  # sovereign clouds: core.chinacloudapi.cn, ...
        tail = a.host_suffix.split(".", 1)[-1]
        kwargs.update(blob_storage_authority=f".blob.{tail}", dfs_storage_authority=f".dfs.{tail}")
    return pafs.AzureFileSystem(**kwargs)


def _filesystem(target: _Target) -> pafs.FileSystem:
    key = (target.scheme, target.settings)
    with _FS_LOCK:
        fs = _FS_CACHE.get(key)
        if fs is None:
            fs = _FS_CACHE[key] = _make_filesystem(target)
        return fs


_BOTO_CLIENTS: dict[_S3Settings, object] = {}


def _s3_client(settings: _S3Settings):
    """A boto3 client with the same endpoint, region and credentials as the pyarrow filesystem."""
    with _FS_LOCK:
        client = _BOTO_CLIENTS.get(settings)
        if client is not None:
            return client
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},  # one retry policy: with_retries
        connect_timeout=10,
        read_timeout=120,
        # S3-compatible servers differ in checksum support; AWS accepts either.
        request_checksum_calculation="when_required" if settings.endpoint else "when_supported",
        response_checksum_validation="when_required" if settings.endpoint else "when_supported",
        s3={"addressing_style": "path"} if settings.endpoint else None,
    )
    explicit = settings.access_key is not None
    session = boto3.session.Session(profile_name=None if explicit else settings.profile)
    client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url(),
        region_name=settings.region,
        aws_access_key_id=settings.access_key if explicit else None,
        aws_secret_access_key=settings.secret_key if explicit else None,
        aws_session_token=settings.session_token if explicit else None,
        config=config,
    )
    with _FS_LOCK:
        return _BOTO_CLIENTS.setdefault(settings, client)


def _credentials_hint(target: _Target) -> str:
    if target.scheme == "s3":
        return (
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (or AWS_PROFILE and ~/.aws/credentials, "
            "or the instance profile) and that this identity may access the bucket"
        )
    if target.scheme == "gs":
        return ("check GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`) and the bucket's IAM, "
                "or STORAGE_EMULATOR_HOST for an emulator")
    if target.scheme == "abfs":
        return (
            "check AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_TOKEN, or the Azure identity (AZURE_CLIENT_ID / "
            "AZURE_TENANT_ID / AZURE_CLIENT_SECRET, managed identity, az login) and its role on the container"
        )
    return "check the file permissions"


def _where(target: _Target) -> str:
    if target.scheme == "s3":
        assert isinstance(target.settings, _S3Settings)
        return f"endpoint {target.settings.describe_endpoint()}"
    if target.scheme in ("abfs", "gs"):
        assert isinstance(target.settings, (_AzureSettings, _GcsSettings))
        return target.settings.describe_endpoint()
    return "the local file system"


def _bucket_missing(target: _Target) -> bool:
    """Whether the bucket/container of an object-store target does not exist (one HEAD/list)."""
    if target.scheme == "file" or not target.bucket:
        return False
    try:
        return _filesystem(target).get_file_info(target.bucket).type == pafs.FileType.NotFound
    except Exception:  # noqa: BLE001 - only used to pick the better message
        return False


def _bucket_error(target: _Target, uri: str) -> BucketNotFoundError:
    kind = "container" if target.scheme == "abfs" else "bucket"
    return BucketNotFoundError(
        f"{kind} '{target.bucket}' does not exist at {_where(target)} (for {uri}): create it or fix the URI"
        + (" / AWS_ENDPOINT_URL_S3" if target.scheme == "s3" else "")
    )


def _botocore_client_error_types() -> tuple[type, ...]:
    """botocore's ClientError if botocore is loaded (it is only imported for S3 writes)."""
    module = sys.modules.get("botocore.exceptions")
    return (module.ClientError,) if module is not None else ()


def _translate(exc: BaseException, target: _Target, action: str) -> BaseException:
    """Turn a raw pyarrow/boto/OS error into a StorageError that says what to fix."""
    if isinstance(exc, StorageError):
        return exc
    uri = target.uri()
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _botocore_client_error_types()):
        code = exc.response.get("Error", {}).get("Code", "")  # type: ignore[attr-defined]
        text = f"{text} [{code}]"
    if _NO_BUCKET_PATTERNS.search(text):
        return _bucket_error(target, uri)
    if _ACCESS_PATTERNS.search(text) or isinstance(exc, PermissionError):
        if target.scheme == "file":
            return StorageAccessError(f"permission denied {action} {uri}: {_credentials_hint(target)} ({exc})")
        return StorageAccessError(
            f"access denied {action} {uri} at {_where(target)}: {_credentials_hint(target)}. Cause: {exc}"
        )
    if _REGION_PATTERNS.search(text):
        return StorageError(f"{action} {uri}: the bucket lives in another region: set AWS_REGION to its region. Cause: {exc}")
    if isinstance(exc, FileNotFoundError) or _NOT_FOUND_PATTERNS.search(text):
        if _bucket_missing(target):
            return _bucket_error(target, uri)
        return StorageNotFoundError(f"{uri} does not exist ({action}): check the path; list its parent to see what is there")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"{uri} is a directory, not a file ({action}): pass a file URI or use list_files")
    if is_transient(exc):
        hint = (
            "check that the server is running and AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL point to it"
            if target.scheme == "s3"
            else "check the network and try again"
        )
        retried = " ".join(getattr(exc, "__notes__", [])) or "not retried"
        return StorageError(
            f"{action} {uri} failed at {_where(target)} with a transient error that did not go away ({retried}): "
            f"{hint}. Cause: {exc}"
        )
    return StorageError(f"{action} {uri} failed at {_where(target)}: {exc}")


def _translated(target: _Target, action: str, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` with storage errors translated. Used around storage calls only, never around the
    caller's code inside ``open_output``, whose own errors pass through untouched."""

    def call(*args):
        try:
            return fn(*args)
        except StorageError:
            raise
        except Exception as exc:
            raise _translate(exc, target, action) from exc

    return call


def _run(target: _Target, action: str, fn: Callable[[], T], retries: bool = True) -> T:
    """Run ``fn`` with retries on transient errors and translate what finally escapes."""
    call = (lambda: with_retries(fn, what=f"{action} {target.uri()}")) if retries else fn
    return _translated(target, action, call)()
