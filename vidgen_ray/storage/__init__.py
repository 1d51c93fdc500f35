"""Object storage: one way to turn a URI into a pyarrow FileSystem + path, and safe I/O on top of it.

Inside: ``uris`` (parsing and the environment conventions), ``errors`` (errors and the retry policy),
``clients`` (cached clients and error translation), ``objects`` (list, read, write, delete), ``handler``
(the filesystem ``resolve`` hands to Ray). Callers use this package's names only.

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

from .errors import (
    DEFAULT_RETRY_S,
    RETRY_ENV,
    BucketNotFoundError,
    StorageAccessError,
    StorageError,
    StorageNotFoundError,
    UnsupportedURIError,
    is_transient,
    retry_seconds,
    with_retries,
)
from .handler import filesystem_for, resolve
from .objects import (
    DEFAULT_PART_SIZE,
    DEFAULT_READ_BLOCK,
    TMP_MARKER,
    FileEntry,
    copy,
    delete,
    exists,
    list_files,
    makedirs,
    open_input,
    open_output,
    read_bytes,
    read_text,
    size,
    write_bytes,
    write_text,
)
from .uris import SUPPORTED_SCHEMES, basename, dirname, join, local_path

__all__ = [
    "BucketNotFoundError", "DEFAULT_PART_SIZE", "DEFAULT_READ_BLOCK", "DEFAULT_RETRY_S", "FileEntry", "RETRY_ENV",
    "SUPPORTED_SCHEMES", "StorageAccessError", "StorageError", "StorageNotFoundError", "TMP_MARKER",
    "UnsupportedURIError", "basename", "copy", "delete", "dirname", "exists", "filesystem_for", "is_transient",
    "join", "list_files", "local_path", "makedirs", "open_input", "open_output", "read_bytes", "read_text",
    "resolve", "retry_seconds", "size", "with_retries", "write_bytes", "write_text",
]
