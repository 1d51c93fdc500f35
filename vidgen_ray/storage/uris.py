"""URIs: one frozen description per location (scheme, bucket/key, and the endpoint and credentials the
clouds' own environment variables give), hashable so clients can be cached by it; join/basename/dirname
that keep a URI's scheme and query."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from .errors import StorageAccessError, UnsupportedURIError


SUPPORTED_SCHEMES = ("file", "s3", "gs", "abfs", "abfss")
# Names people type for the schemes above. Anything else gets a difflib suggestion.
_SCHEME_ALIASES = {
    "s3a": "s3", "s3n": "s3", "aws": "s3",
    "gcs": "gs", "google": "gs", "gcp": "gs",
    "az": "abfs", "azure": "abfs", "adl": "abfs", "wasb": "abfs", "wasbs": "abfs",
    "local": "file",
}

# URI parsing: one frozen description per location, hashable so filesystems can be cached by it


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
