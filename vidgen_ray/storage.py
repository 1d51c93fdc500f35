"""Object storage: one way to turn a URI into a pyarrow FileSystem + path, and safe I/O on top of it.

    python -c "from vidgen_ray import storage; print(storage.list_files('../shared/videos', ['.mp4'])[:2])"
    AWS_ENDPOINT_URL_S3=http://127.0.0.1:8333 python -c "from vidgen_ray import storage; print(storage.list_files('s3://bucket/videos/'))"

URIs (everything else is rejected with a suggestion):

    /abs/path, rel/path, file:///abs/path          the local file system
    s3://bucket/key[?endpoint_override=host:port&scheme=http&region=...]
    gs://bucket/key                                 Google Cloud Storage
    abfs://container@account.dfs.core.windows.net/key   (also abfss://; or abfs://container/key with
                                                    AZURE_STORAGE_ACCOUNT_NAME set)

Configuration follows each cloud's standard conventions, so the same code runs on a laptop against
SeaweedFS/MinIO and on a cluster against the real service:

- S3 credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else AWS_PROFILE and
  the shared config files, else the instance profile (the AWS SDK's default chain). Endpoint:
  AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL (ignored when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true),
  or ``?endpoint_override=`` in the URI. Region: AWS_REGION, then AWS_DEFAULT_REGION; with a custom
  endpoint it defaults to us-east-1 so that nothing asks AWS where a bucket lives (needs internet).
- GCS: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server);
  GOOGLE_CLOUD_PROJECT. An emulator: STORAGE_EMULATOR_HOST=http://host:port (no credentials).
- Azure: AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, else AZURE_STORAGE_CONNECTION_STRING
  (AccountName, AccountKey or SharedAccessSignature, and BlobEndpoint for Azurite or a private
  endpoint; ``UseDevelopmentStorage=true`` is Azurite's default), else DefaultAzureCredential
  (AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, managed identity, az login).

Guarantees:

- Writes are atomic: nothing half-written ever appears under the final name. Local files go to a
  temporary file in the same folder and are renamed with ``os.replace``. Object-store writes are
  spooled locally and uploaded at the end: S3 with boto3's managed upload (one PUT, or a multipart
  upload it aborts on error; pyarrow's S3 output stream cannot be aborted from Python and completes the
  upload with whatever was written even when the writer raised), GCS/Azure under a temporary name,
  then moved into place.
- Transient errors (timeouts, refused or reset connections, 5xx, SlowDown/throttling) are retried with
  exponential backoff for up to VIDGEN_STORAGE_RETRY_S seconds (default 60): one policy, the clients'
  own retries switched off under it. NotFound and AccessDenied never are retried; an outage longer than
  the policy fails naming the endpoint and how long it was retried.
- Every failure becomes a ``StorageError`` whose message names the URI and what to fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import io
import logging
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import parse_qsl

import fsspec.spec
import pyarrow as pa
import pyarrow.fs as pafs

from vidgen_ray.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

SUPPORTED_SCHEMES = ("file", "s3", "gs", "abfs", "abfss")
# Names people type for the schemes above. Anything else gets a difflib suggestion.
_SCHEME_ALIASES = {
    "s3a": "s3", "s3n": "s3", "aws": "s3",
    "gcs": "gs", "google": "gs", "gcp": "gs",
    "az": "abfs", "azure": "abfs", "adl": "abfs", "wasb": "abfs", "wasbs": "abfs",
    "local": "file",
}
# Temporary names written by this module; listings never show them.
TMP_MARKER = ".vidgen-tmp-"
DEFAULT_PART_SIZE = 8 * 2**20  # S3 multipart part size; S3 wants >= 5 MiB for every part but the last
DEFAULT_READ_BLOCK = 4 * 2**20  # remote reads fetch aligned blocks of this size (one ranged GET each)


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class FileEntry:
    """One listed file. ``uri`` can be passed back to every function here; ``path`` is what the
    pyarrow FileSystem from ``resolve`` takes."""

    uri: str
    path: str
    size: int


# ---------------------------------------------------------------------------------------------------
# URI parsing: one frozen description per location, hashable so filesystems can be cached by it
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _S3Settings:
    endpoint: str | None  # host[:port] or None for AWS itself
    scheme: str  # "http" | "https"
    region: str | None
    access_key: str | None  # None: the SDK's default chain (profile, instance profile) decides
    secret_key: str | None = field(repr=False)  # secrets stay out of reprs, tracebacks and logs
    session_token: str | None = field(repr=False)
    profile: str | None  # only part of the cache key: the SDK reads AWS_PROFILE itself
    query: str  # the URI's own query string, re-attached to every URI built from this location

    def endpoint_url(self) -> str | None:
        return f"{self.scheme}://{self.endpoint}" if self.endpoint else None

    def describe_endpoint(self) -> str:
        return self.endpoint_url() or f"AWS S3 (region {self.region or 'from the AWS config'})"


@dataclass(frozen=True)
class _GcsSettings:
    endpoint: str | None  # host[:port] of an emulator (STORAGE_EMULATOR_HOST), None for Google itself
    scheme: str  # "http" | "https"
    project: str | None  # GOOGLE_CLOUD_PROJECT: only creating buckets needs it

    def describe_endpoint(self) -> str:
        return f"the GCS endpoint {self.scheme}://{self.endpoint}" if self.endpoint else "Google Cloud Storage"


@dataclass(frozen=True)
class _AzureSettings:
    account: str
    host_suffix: str  # "dfs.core.windows.net" style: what follows "<account>." in the URI
    account_key: str | None = field(repr=False)
    sas_token: str | None = field(repr=False)
    # A blob endpoint other than <account>.blob.<suffix>: an emulator (Azurite) or a private endpoint,
    # from AZURE_STORAGE_CONNECTION_STRING's BlobEndpoint; its host[:port] and scheme.
    blob_authority: str | None = None
    scheme: str = "https"

    def describe_endpoint(self) -> str:
        where = f"{self.scheme}://{self.blob_authority}" if self.blob_authority else f"{self.account}.{self.host_suffix}"
        return f"storage account {self.account} ({where})"


@dataclass(frozen=True)
class _Target:
    """Where a URI points: the scheme, the settings that pick the filesystem, and the fs path."""

    scheme: str  # "file" | "s3" | "gs" | "abfs"
    path: str  # what the pyarrow filesystem takes ("bucket/key", "/abs/path", "container/key")
    settings: _S3Settings | _GcsSettings | _AzureSettings | None = None
    uri_style: str = ""  # local: "" (plain path) or "file://"; abfs: "abfs" or "abfss"
    short: bool = False  # abfs://container/key: the account came from the environment, not the URI

    @property
    def bucket(self) -> str:
        return "" if self.scheme == "file" else self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        return "" if self.scheme == "file" else (self.path.split("/", 1) + [""])[1]

    def with_path(self, path: str) -> "_Target":
        return dataclasses.replace(self, path=path)

    def uri(self, path: str | None = None) -> str:
        """The URI of ``path`` (default: this target's) in the same style the user wrote."""
        path = self.path if path is None else path
        if self.scheme == "file":
            return ("file://" + path) if self.uri_style == "file://" else path
        if self.scheme == "s3":
            assert isinstance(self.settings, _S3Settings)
            return f"s3://{path}" + (f"?{self.settings.query}" if self.settings.query else "")
        if self.scheme == "gs":
            return f"gs://{path}"
        assert isinstance(self.settings, _AzureSettings)
        container, _, rest = path.partition("/")
        if self.short:
            return f"{self.uri_style}://{path}"
        host = f"{self.settings.account}.{self.settings.host_suffix}"
        return f"{self.uri_style}://{container}@{host}/{rest}"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _split_scheme(uri: str) -> tuple[str, str]:
    """("s3", "bucket/key?q") for "s3://bucket/key?q"; ("", uri) for plain paths."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", uri)
    if not m or len(m.group(1)) == 1:  # no scheme, or a Windows drive letter ("C:\\...")
        return "", uri
    return m.group(1).lower(), m.group(2)


def _scheme_error(uri: str, scheme: str) -> UnsupportedURIError:
    close = difflib.get_close_matches(scheme, SUPPORTED_SCHEMES, n=1, cutoff=0.5)
    suggestion = _SCHEME_ALIASES.get(scheme) or (close[0] if close else None)
    hint = f"did you mean '{suggestion}://'? " if suggestion else ""
    if scheme in ("http", "https"):
        hint = "for an S3-compatible server use s3://bucket/key with AWS_ENDPOINT_URL_S3=<that server>. "
    return UnsupportedURIError(
        f"unsupported URI scheme '{scheme}://' in {uri!r}: {hint}"
        f"supported are local paths, file://, s3://, gs://, abfs:// (abfss://)"
    )


def _s3_settings(uri: str, query: str) -> _S3Settings:
    allowed = {"endpoint_override", "scheme", "region"}
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UnsupportedURIError(f"unknown query parameter(s) {unknown} in {uri!r}: allowed are {sorted(allowed)}")
    endpoint, scheme = params.get("endpoint_override"), params.get("scheme")
    if endpoint is None and (_env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") or "").lower() != "true":
        endpoint = _env("AWS_ENDPOINT_URL_S3") or _env("AWS_ENDPOINT_URL")
    if endpoint:
        m = re.match(r"^(?:(https?)://)?([^/?#]+)/?$", endpoint)
        if not m:
            raise UnsupportedURIError(
                f"S3 endpoint {endpoint!r} (for {uri!r}) is not 'http(s)://host[:port]': fix AWS_ENDPOINT_URL_S3 / "
                "AWS_ENDPOINT_URL or ?endpoint_override="
            )
        scheme = scheme or m.group(1) or "https"
        endpoint = m.group(2)
    scheme = (scheme or "https").lower()
    if scheme not in ("http", "https"):
        raise UnsupportedURIError(f"S3 scheme {scheme!r} in {uri!r} must be http or https")
    access_key, secret_key = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if bool(access_key) != bool(secret_key):
        missing = "AWS_SECRET_ACCESS_KEY" if access_key else "AWS_ACCESS_KEY_ID"
        raise StorageAccessError(
            f"{missing} is not set but its partner is (for {uri}): set both, or neither to use AWS_PROFILE"
        )
    region = params.get("region") or _env("AWS_REGION") or _env("AWS_DEFAULT_REGION")
    if region is None and endpoint:
        region = "us-east-1"  # custom servers ignore it; leaving it empty makes the SDK ask AWS
    return _S3Settings(
        endpoint=endpoint,
        scheme=scheme,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=_env("AWS_SESSION_TOKEN"),
        profile=_env("AWS_PROFILE"),
        query=query,
    )


# Azurite's well-known development account (`UseDevelopmentStorage=true`), as every Azure SDK spells it out.
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azure_connection_string() -> dict[str, str]:
    """AZURE_STORAGE_CONNECTION_STRING as a dict (``Key=value;...``, the Azure SDKs' and Azurite's
    convention); ``UseDevelopmentStorage=true`` expands to Azurite's default account and endpoint."""
    raw = _env("AZURE_STORAGE_CONNECTION_STRING")
    if not raw:
        return {}
    fields = {}
    for part in raw.split(";"):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise UnsupportedURIError(
                    f"AZURE_STORAGE_CONNECTION_STRING has {key.strip()!r} without '=': write Key=value;Key=value "
                    "(AccountName, AccountKey, SharedAccessSignature, BlobEndpoint, ...)"
                )
            fields[key.strip()] = value.strip()
    if fields.get("UseDevelopmentStorage", "").lower() == "true":
        fields = {"AccountName": _AZURITE_ACCOUNT, "AccountKey": _AZURITE_KEY,
                  "BlobEndpoint": f"http://127.0.0.1:10000/{_AZURITE_ACCOUNT}", **fields}
    return fields


def _azure_target(uri: str, scheme: str, rest: str) -> _Target:
    conn = _azure_connection_string()
    host, _, key = rest.partition("/")
    if "@" in host:
        container, _, fqdn = host.partition("@")
        account, _, suffix = fqdn.partition(".")
        suffix = suffix or "dfs.core.windows.net"
    else:
        container, suffix = host, "dfs.core.windows.net"
        account = _env("AZURE_STORAGE_ACCOUNT_NAME") or conn.get("AccountName")
        if not account:
            raise UnsupportedURIError(
                f"no Azure storage account in {uri!r}: write abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/path, "
                "or set AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_CONNECTION_STRING"
            )
    if not container or not account:
        raise UnsupportedURIError(
            f"{uri!r} needs a container and an account: abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/path"
        )
    # The connection string speaks for its own account only.
    conn = conn if conn.get("AccountName", account) == account else {}
    authority, endpoint_scheme = None, "https"
    if conn.get("BlobEndpoint"):
        m = re.match(r"^(https?)://([^/?#]+)(/[^?#]*)?$", conn["BlobEndpoint"])
        if not m:
            raise UnsupportedURIError(
                f"BlobEndpoint {conn['BlobEndpoint']!r} in AZURE_STORAGE_CONNECTION_STRING is not http(s)://host[:port][/account]"
            )
        endpoint_scheme, authority = m.group(1), m.group(2)
    settings = _AzureSettings(
        account=account,
        host_suffix=suffix,
        account_key=_env("AZURE_STORAGE_ACCOUNT_KEY") or conn.get("AccountKey"),
        sas_token=_env("AZURE_STORAGE_SAS_TOKEN") or conn.get("SharedAccessSignature"),
        blob_authority=authority,
        scheme=endpoint_scheme,
    )
    return _Target("abfs", _join_key(container, key), settings, uri_style=scheme, short="@" not in host)


def _gcs_settings() -> _GcsSettings:
    """STORAGE_EMULATOR_HOST (``http://host:port``, the Google Cloud client libraries' convention for
    an emulator) or Google itself; GOOGLE_CLOUD_PROJECT for bucket creation."""
    project = _env("GOOGLE_CLOUD_PROJECT") or _env("CLOUDSDK_CORE_PROJECT")
    emulator = _env("STORAGE_EMULATOR_HOST")
    if not emulator:
        return _GcsSettings(None, "https", project)
    m = re.match(r"^(?:(https?)://)?([^/?#]+)/?$", emulator)
    if not m:
        raise UnsupportedURIError(f"STORAGE_EMULATOR_HOST={emulator!r} is not http(s)://host[:port]")
    return _GcsSettings(m.group(2), m.group(1) or "http", project)


def _join_key(bucket: str, key: str) -> str:
    key = key.strip("/")
    return f"{bucket}/{key}" if key else bucket


def _parse(uri: str) -> _Target:
    if not isinstance(uri, (str, os.PathLike)):
        raise UnsupportedURIError(f"expected a URI string, got {type(uri).__name__}: {uri!r}")
    uri = os.fspath(uri)
    if not uri:
        raise UnsupportedURIError("empty URI: pass a local path or s3://, gs://, abfs:// URI")
    scheme, rest = _split_scheme(uri)
    if scheme == "":
        return _Target("file", os.path.abspath(os.path.expanduser(uri)))
    if scheme not in SUPPORTED_SCHEMES:
        raise _scheme_error(uri, scheme)
    if not rest.startswith("//"):
        raise UnsupportedURIError(f"{uri!r} is missing '//': write {scheme}://{rest.lstrip('/')}")
    rest = rest[2:]
    if scheme == "file":
        host, sep, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise UnsupportedURIError(f"{uri!r} names host {host!r}: file URIs are file:///absolute/path")
        return _Target("file", os.path.abspath("/" + path), uri_style="file://")
    rest, _, query = rest.partition("?")
    if scheme in ("abfs", "abfss"):
        return _azure_target(uri, scheme, rest)
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UnsupportedURIError(f"{uri!r} has no bucket: write {scheme}://BUCKET/path")
    if scheme == "gs":
        if query:
            raise UnsupportedURIError(f"query parameters are not supported for gs:// URIs ({uri!r})")
        return _Target("gs", _join_key(bucket, key), _gcs_settings())
    return _Target("s3", _join_key(bucket, key), _s3_settings(uri, query))


# ---------------------------------------------------------------------------------------------------
# Filesystems, cached per settings (so per scheme, endpoint, region and credentials)
# ---------------------------------------------------------------------------------------------------

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


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """URI -> (pyarrow FileSystem, path that filesystem takes), for code outside this module: Ray
    Train's checkpoint upload and snapshots, Ray Data's writes, Tune. An object store comes wrapped in
    ``_RetryingHandler``, so every call the caller makes keeps this module's retry policy, block-cached
    reads and spooled uploads. It pickles (Ray tasks and ``filesystem=`` arguments take it): the store's
    settings travel, explicit AWS_* keys from the environment with them; profile and instance-profile
    credentials are looked up again where it is unpickled."""
    target = _parse(uri)
    if target.scheme == "file":
        return _LOCAL_FS, target.path
    return pafs.PyFileSystem(_RetryingHandler(target.with_path(target.bucket))), target.path


def filesystem_for(uri: str) -> pafs.FileSystem:
    return resolve(uri)[0]


def local_path(uri: str) -> str | None:
    """The local path of a local URI (plain path or file://), None for object storage."""
    target = _parse(uri)
    return target.path if target.scheme == "file" else None


def _without_query(uri: str) -> tuple[str, str]:
    """("s3://b/k", "?endpoint_override=...") for an object-store URI with a query; (uri, "") otherwise."""
    uri = os.fspath(uri)
    scheme, _ = _split_scheme(uri)
    if scheme not in ("", "file") and "?" in uri:
        head, query = uri.split("?", 1)
        return head, "?" + query
    return uri, ""


def basename(uri: str) -> str:
    """The last path segment: basename("s3://b/x/m.parquet?region=r") == "m.parquet"."""
    return _without_query(uri)[0].rstrip("/").rsplit("/", 1)[-1]


def dirname(uri: str) -> str:
    """The parent, keeping scheme and query: dirname("s3://b/x/m.json?region=r") == "s3://b/x?region=r"."""
    head, query = _without_query(uri)
    return head.rstrip("/").rsplit("/", 1)[0] + query


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI, keeping its scheme and query: join("s3://b/x?region=r", "y") ==
    "s3://b/x/y?region=r"."""
    base = os.fspath(base)
    scheme, _ = _split_scheme(base)
    query = ""
    if scheme not in ("", "file") and "?" in base:
        base, query = base.split("?", 1)
    pieces = [p.strip("/") for p in (os.fspath(p) for p in parts) if p.strip("/")]
    if not pieces:
        out = base
    elif base.endswith("/"):
        out = base + "/".join(pieces)
    else:
        out = base + "/" + "/".join(pieces)
    return out + (f"?{query}" if query else "")


# ---------------------------------------------------------------------------------------------------
# Retries and error translation
# ---------------------------------------------------------------------------------------------------

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
    raw = _env(RETRY_ENV)
    if raw is None:
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


# ---------------------------------------------------------------------------------------------------
# Listing and metadata
# ---------------------------------------------------------------------------------------------------


def _normalise_extensions(extensions: Iterable[str] | None) -> tuple[str, ...] | None:
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def list_files(uri: str, extensions: Iterable[str] | None = None, recursive: bool = True) -> list[FileEntry]:
    """Files (not directories) under ``uri``, sorted by URI, with sizes. ``extensions`` filters by
    suffix, case-insensitively (".mp4" or "mp4"). A file URI lists as itself. A location with
    nothing under it raises StorageNotFoundError (an empty existing local folder gives [])."""
    target = _parse(uri)
    fs = _filesystem(target)
    exts = _normalise_extensions(extensions)

    def infos() -> list[pafs.FileInfo]:
        info = fs.get_file_info(target.path)
        if info.type == pafs.FileType.File:
            return [info]
        if info.type == pafs.FileType.NotFound and target.scheme == "file":
            raise FileNotFoundError(target.path)
        # Object stores: a prefix "exists" only through its objects, so always list.
        return fs.get_file_info(pafs.FileSelector(target.path, recursive=recursive, allow_not_found=False))

    entries = []
    for info in _run(target, "listing", infos):
        if info.type != pafs.FileType.File or TMP_MARKER in info.base_name:
            continue
        if exts is not None and not info.base_name.lower().endswith(exts):
            continue
        entries.append(FileEntry(uri=target.uri(info.path), path=info.path, size=int(info.size)))
    entries.sort(key=lambda e: e.uri)
    return entries


def _info(target: _Target, action: str) -> pafs.FileInfo:
    return _run(target, action, lambda: _filesystem(target).get_file_info(target.path))


def exists(uri: str) -> bool:
    """Whether a file or a non-empty prefix/folder exists. A missing bucket is an error (the URI is
    wrong), not False."""
    target = _parse(uri)
    if target.scheme == "file":
        return os.path.exists(target.path)
    if _info(target, "checking").type != pafs.FileType.NotFound:
        return True
    if _bucket_missing(target):
        raise _bucket_error(target, target.uri())
    return False


def size(uri: str) -> int:
    """Size in bytes of one file."""
    target = _parse(uri)
    info = _info(target, "getting the size of")
    if info.type == pafs.FileType.File:
        return int(info.size)
    if info.type == pafs.FileType.Directory:
        raise _translate(IsADirectoryError(target.path), target, "getting the size of")
    raise _translate(FileNotFoundError(target.path), target, "getting the size of")


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


class _ObjectFile(fsspec.spec.AbstractBufferedFile):
    """A remote object read through fsspec's block cache: aligned ``block_size`` ranged GETs, the last
    ``max_blocks`` kept. Readers such as FFmpeg ask for 32 KiB at a time; on an object store each would
    be one GET with tens of milliseconds of latency, and they seek back to the index (moov atom) often."""

    def __init__(self, native: pa.NativeFile, target: _Target, block_size: int, max_blocks: int = 4) -> None:
        self._native, self._target = native, target
        self.requests = 0  # ranged GETs made, for tests and benchmarks
        super().__init__(None, target.uri(), mode="rb", block_size=block_size, cache_type="blockcache",
                         cache_options={"maxblocks": max_blocks}, size=native.size())

    def _fetch_range(self, start: int, end: int) -> bytes:
        self.requests += 1
        return _run(self._target, "reading", lambda: self._native.read_at(end - start, start))

    def close(self) -> None:
        super().close()
        self._native.close()


def open_input(uri: str, block_size: int = DEFAULT_READ_BLOCK) -> pa.NativeFile:
    """A seekable, streaming input file (pyarrow NativeFile): ``av.open(open_input(uri))``,
    ``pq.read_table(open_input(uri))``. Local files are native OS files; remote objects are read in
    ``block_size`` ranged GETs (see ``_ObjectFile``), never downloaded whole up front."""
    target = _parse(uri)
    fs = _filesystem(target)
    native = _run(target, "opening", lambda: fs.open_input_file(target.path))
    if target.scheme == "file":
        return native
    return pa.PythonFile(_ObjectFile(native, target, block_size), mode="r")


def read_bytes(uri: str) -> bytes:
    target = _parse(uri)
    if target.scheme == "file":
        def read_local() -> bytes:
            with open(target.path, "rb") as f:
                return f.read()

        return _run(target, "reading", read_local, retries=False)
    fs = _filesystem(target)

    def read() -> bytes:
        with fs.open_input_stream(target.path) as f:  # one GET for the whole object
            return f.read()

    return _run(target, "reading", read)


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


# ---------------------------------------------------------------------------------------------------
# Atomic writing
# ---------------------------------------------------------------------------------------------------


def _tmp_name(final_path: str) -> str:
    head, _, base = final_path.rpartition("/")
    return f"{head}/.{base}{TMP_MARKER}{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def _open_local_output(target: _Target) -> Iterator[io.BufferedWriter]:
    final = target.path
    tmp = _tmp_name(final)

    def create() -> io.BufferedWriter:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        # os.open with 0o666 keeps the umask (mkstemp would leave the file 0600 after the rename).
        return os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")

    def commit() -> None:
        if not f.closed:  # the caller may have closed it already
            f.flush()
            os.fsync(f.fileno())
            f.close()
        os.replace(tmp, final)

    def discard() -> None:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)

    f = _translated(target, "opening for writing", create)()
    try:
        yield f
    except BaseException:
        discard()
        raise
    try:
        _translated(target, "writing", commit)()
    except BaseException:
        discard()
        raise


class _AtomicObjectWriter:
    """What ``open_output`` yields for object stores: a write-only, non-seekable stream.

    ``close()`` only ends writing; the object appears under its name when the ``open_output``
    block exits without an exception (so a library that closes the stream it was given still works,
    and a crash mid-way never publishes a partial object)."""

    def __init__(self, sink: Callable[[memoryview], None]) -> None:
        self._sink, self._pos, self._closed = sink, 0, False

    def write(self, data) -> int:
        if self._closed:
            raise ValueError("write to a closed storage writer")
        view = memoryview(data).cast("B")
        self._sink(view)
        self._pos += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


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


def _move(fs: pafs.FileSystem, src: str, dst: str) -> None:
    """Rename where the store can (Azure with a hierarchical namespace), else copy and delete."""
    try:
        fs.move(src, dst)
    except NotImplementedError:  # pyarrow's ArrowNotImplementedError: GCS, flat-namespace Azure
        fs.copy_file(src, dst)
        fs.delete_file(src)


class _SpooledUpload(io.RawIOBase):
    """A write-only object: the bytes go to a local spool (memory up to ``part_size``, then a temporary
    file) and ``commit()`` uploads them in one retried call. pyarrow's output streams commit whatever was
    written when closed or garbage-collected, so writing straight to them could publish half an object;
    a spool also lets a failed upload start over from its first byte. ``close()`` commits (the stream
    contract of pyarrow's filesystems); ``open_output`` commits only when its block exits cleanly."""

    def __init__(self, target: _Target, part_size: int = DEFAULT_PART_SIZE) -> None:
        super().__init__()
        if not target.key:
            raise UnsupportedURIError(f"{target.uri()} names a bucket, not an object: add a key")
        self.target, self.part_size = target, part_size
        self.spool = tempfile.SpooledTemporaryFile(max_size=part_size)
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = self.spool.write(data)
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def commit(self) -> None:
        upload = _s3_upload if self.target.scheme == "s3" else _upload_via_temporary_object
        _run(self.target, "uploading", lambda: upload(self.target, self.spool, self.part_size))

    def discard(self) -> None:
        self.spool.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.commit()
        finally:
            self.discard()
            super().close()


@contextlib.contextmanager
def _open_object_output(target: _Target, part_size: int) -> Iterator[_AtomicObjectWriter]:
    upload = _SpooledUpload(target, part_size)
    try:
        yield _AtomicObjectWriter(upload.write)
        upload.commit()
    finally:
        upload.discard()


class _RetryingHandler(pafs.FileSystemHandler):
    """What ``resolve`` hands out for an object store (inside ``pyarrow.fs.PyFileSystem``): each call
    goes to the store's client through ``with_retries`` with errors translated, input files read through
    the block cache (``_ObjectFile``), output streams spooled and uploaded on close (``_SpooledUpload``),
    so Ray's own calls (checkpoint uploads, the checkpoint manager's snapshot, Ray Data's parquet writes)
    ride out an outage as this module's do. Pickles as its target: the client is made again on arrival."""

    def __init__(self, target: _Target) -> None:
        self.target = target

    def __reduce__(self):
        return (_RetryingHandler, (self.target,))

    def __eq__(self, other) -> bool:
        return isinstance(other, _RetryingHandler) and (other.target.scheme, other.target.settings) == (
            self.target.scheme, self.target.settings)

    def __ne__(self, other) -> bool:
        return not self == other

    @property
    def fs(self) -> pafs.FileSystem:
        return _filesystem(self.target)

    def _call(self, action: str, path: str, fn: Callable[[], T]) -> T:
        return _run(self.target.with_path(path), action, fn)

    def get_type_name(self) -> str:
        return f"vidgen-{self.fs.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return [self._call("checking", p, lambda p=p: self.fs.get_file_info(p)) for p in paths]

    def get_file_info_selector(self, selector):
        return self._call("listing", selector.base_dir, lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._call("creating the folder", path, lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._call("deleting", path, lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._call("deleting", path, lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        raise StorageError(f"refusing to delete everything in {self.target.uri()}: name a folder inside it")

    def delete_file(self, path: str) -> None:
        self._call("deleting", path, lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._call("moving", src, lambda: _move(self.fs, src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._call("copying", src, lambda: self.fs.copy_file(src, dest))

    def open_input_stream(self, path: str):
        return self.open_input_file(path)

    def open_input_file(self, path: str):
        target = self.target.with_path(path)
        native = _run(target, "opening", lambda: self.fs.open_input_file(path))
        return pa.PythonFile(_ObjectFile(native, target, DEFAULT_READ_BLOCK), mode="r")

    def open_output_stream(self, path: str, metadata=None):
        return pa.PythonFile(_SpooledUpload(self.target.with_path(path)), mode="w")

    def open_append_stream(self, path: str, metadata=None):
        raise StorageError(f"appending to {self.target.uri(path)}: object stores cannot append; write a new object")


def _s3_upload(target: _Target, spool, part_size: int) -> None:
    """boto3's managed upload: one PUT, or a multipart upload of ``part_size`` parts (3 at a time) that
    it aborts itself if a part fails, so the object appears whole or not at all."""
    from boto3.s3.transfer import TransferConfig

    assert isinstance(target.settings, _S3Settings)
    spool.seek(0)
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=3)
    _s3_client(target.settings).upload_fileobj(_KeptOpen(spool), target.bucket, target.key, Config=config)


class _KeptOpen(io.RawIOBase):
    """A read view of a spool that ignores ``close()``: boto3's managed upload closes the file it was
    given when an attempt fails, and the retry must read the spool again."""

    def __init__(self, f) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def readinto(self, buffer) -> int:
        data = self._f.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        pass


def _upload_via_temporary_object(target: _Target, spool, part_size: int) -> None:
    """GCS and Azure: write ``.<name>.vidgen-tmp-*`` next to the target, then move it into place (a copy
    and a delete where the store cannot rename). The final name only ever sees a complete object; a
    crash between the two can leave the temporary object behind (listings skip it)."""
    fs = _filesystem(target)
    tmp = _tmp_name(target.path)
    spool.seek(0)
    try:
        with fs.open_output_stream(tmp) as out:
            while chunk := spool.read(part_size):
                out.write(chunk)
        _move(fs, tmp, target.path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise


@contextlib.contextmanager
def open_output(uri: str, part_size: int = DEFAULT_PART_SIZE) -> Iterator:
    """Atomic write: the object/file appears under ``uri`` only when the block exits without an
    exception; on an exception nothing does (local temporary files are removed; object stores never
    see the bytes). Local files yield a real (seekable) file; object stores a write-only stream whose
    bytes are spooled locally and uploaded at the end (``_open_object_output``). Missing local parent
    folders are created."""
    target = _parse(uri)
    if target.scheme == "file":
        with _open_local_output(target) as f:
            yield f
    else:
        with _open_object_output(target, part_size) as f:
            yield f


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` atomically (see ``open_output``)."""
    with open_output(uri) as f:
        f.write(data)


def write_text(uri: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


# ---------------------------------------------------------------------------------------------------
# Folders, deletion, copies
# ---------------------------------------------------------------------------------------------------


def makedirs(uri: str) -> None:
    """Create a local folder (and parents). Object stores have no folders: S3 and GCS need nothing
    (creating marker objects would only clutter listings); Azure creates a real directory."""
    target = _parse(uri)
    if target.scheme == "file":
        _run(target, "creating the folder", lambda: os.makedirs(target.path, exist_ok=True), retries=False)
    elif target.scheme == "abfs":
        fs = _filesystem(target)
        _run(target, "creating the folder", lambda: fs.create_dir(target.path, recursive=True))


def delete(uri: str, recursive: bool = False, missing_ok: bool = False) -> None:
    """Delete a file, or with ``recursive=True`` everything under a folder/prefix. Never deletes a
    bucket itself (only its contents)."""
    target = _parse(uri)
    fs = _filesystem(target)
    info = _info(target, "deleting")
    if info.type == pafs.FileType.NotFound:
        if missing_ok and not _bucket_missing(target):
            return
        raise _translate(FileNotFoundError(target.path), target, "deleting")
    if info.type == pafs.FileType.File:
        _run(target, "deleting", lambda: fs.delete_file(target.path))
        return
    if not recursive:
        raise StorageError(f"{target.uri()} is a folder/prefix: pass recursive=True to delete everything under it")
    if target.scheme == "file":
        _run(target, "deleting", lambda: fs.delete_dir(target.path))
        return

    def delete_prefix() -> None:
        if target.scheme == "s3":
            fs.delete_dir_contents(target.path, missing_dir_ok=True)  # batched: 1,000 keys a request
        else:
            # GCS's and flat Azure's "folders" exist only through their objects; pyarrow's delete_dir
            # wants a folder marker that object writes never make, so delete what the listing shows.
            for info in fs.get_file_info(pafs.FileSelector(target.path, recursive=True, allow_not_found=True)):
                if info.type == pafs.FileType.File:
                    fs.delete_file(info.path)
        if target.key:  # a folder marker or (Azure with a hierarchical namespace) a real directory, if any
            with contextlib.suppress(OSError):
                fs.delete_dir(target.path)

    _run(target, "deleting", delete_prefix)


def copy(src: str, dst: str, chunk_size: int = DEFAULT_PART_SIZE) -> None:
    """Copy one file. Within one S3 endpoint the copy happens server-side (boto3's managed copy,
    multipart for large objects); otherwise it streams through this process. Atomic like writes."""
    source, dest = _parse(src), _parse(dst)
    if source.scheme == dest.scheme == "s3" and source.settings == dest.settings:
        size(src)  # a clear error for a missing source before the copy starts
        copy_source = {"Bucket": source.bucket, "Key": source.key}
        client = _translated(dest, "copying to", _s3_client)(dest.settings)
        _run(dest, "copying to", lambda: client.copy(copy_source, dest.bucket, dest.key))
        return
    fs = _filesystem(source)
    with _run(source, "opening", lambda: fs.open_input_stream(source.path)) as reader, open_output(dst) as writer:
        while chunk := _run(source, "reading", lambda: reader.read(chunk_size), retries=False):
            writer.write(chunk)
