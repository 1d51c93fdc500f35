"""vidgen_ray.storage against a local folder and real S3, GCS and Azure endpoints (SeaweedFS, the GCS emulator,
Azurite: see s3_server.py, gcs_server.py, azure_server.py).

    .venv/bin/pytest tests/test_storage.py -q
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import threading

import numpy as np
import pyarrow.fs as pafs
import pytest

from vidgen_ray import storage

VIDEO = "moviepy_chaplin.mp4"  # 0.76 MB H.264 MP4 from ../shared/videos


STORES = ["local", pytest.param("s3", marks=pytest.mark.s3), pytest.param("gs", marks=pytest.mark.gcs),
          pytest.param("abfs", marks=pytest.mark.azure)]
_BUCKET_FIXTURE = {"s3": "s3_bucket", "gs": "gcs_bucket", "abfs": "azure_container"}


@pytest.fixture(params=STORES)
def root(request, tmp_path) -> str:
    """An empty location: a local folder, or a fresh bucket on SeaweedFS (S3), the GCS emulator or
    Azurite (a flat-namespace Blob account), each reached through its standard environment variables."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue(_BUCKET_FIXTURE[request.param])


def _random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# --- listing, reading, writing ---------------------------------------------------------------------


def test_list_recursive_with_sizes_and_extension_filter(root):
    files = {"a.mp4": 10, "sub/b.MP4": 20, "sub/deeper/c.webm": 30, "notes.txt": 5}
    for name, n in files.items():
        storage.write_bytes(storage.join(root, name), _random_bytes(n, seed=n))

    entries = storage.list_files(root)
    assert [e.uri for e in entries] == sorted(storage.join(root, n) for n in files)
    assert {e.uri: e.size for e in entries} == {storage.join(root, n): s for n, s in files.items()}
    fs, _ = storage.resolve(root)
    for e in entries:  # uri is usable again; path is what the filesystem takes
        assert storage.read_bytes(e.uri) == _random_bytes(files[e.uri[len(root) + 1 :]], seed=e.size)
        assert fs.get_file_info(e.path).size == e.size

    videos = storage.list_files(root, extensions=[".mp4", "webm"])
    assert [e.uri.rsplit("/", 1)[1] for e in videos] == ["a.mp4", "b.MP4", "c.webm"]
    top = storage.list_files(root, recursive=False)
    assert [e.uri.rsplit("/", 1)[1] for e in top] == ["a.mp4", "notes.txt"]
    assert [e.size for e in storage.list_files(storage.join(root, "sub", "b.MP4"))] == [20]  # a file lists as itself


def test_write_read_round_trip(root):
    uri = storage.join(root, "dir", "x.bin")
    data = _random_bytes(100_000)
    storage.write_bytes(uri, data)
    assert storage.exists(uri) and storage.exists(storage.join(root, "dir"))
    assert storage.size(uri) == len(data)
    assert storage.read_bytes(uri) == data
    storage.write_bytes(uri, b"shorter")  # overwrite
    assert storage.read_bytes(uri) == b"shorter"

    text_uri = storage.join(root, "t.json")
    storage.write_text(text_uri, '{"é": 1}')
    assert storage.read_text(text_uri) == '{"é": 1}'

    copied = storage.join(root, "copy", "x.bin")
    storage.copy(uri, copied)
    assert storage.read_bytes(copied) == b"shorter"

    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(storage.StorageError, match="recursive=True"):
        storage.delete(storage.join(root, "copy"))
    storage.delete(storage.join(root, "copy"), recursive=True)
    assert not storage.exists(copied)
    storage.delete(copied, missing_ok=True)
    assert [e.uri for e in storage.list_files(root)] == [text_uri]


def test_open_input_partial_reads_and_seeks(root):
    data = _random_bytes(3 * 2**20 + 12345, seed=3)
    uri = storage.join(root, "big.bin")
    storage.write_bytes(uri, data)
    with storage.open_input(uri) as f:
        assert f.seekable() and f.size() == len(data)
        assert f.read(10) == data[:10]
        f.seek(2**20 - 5)  # across a block boundary
        assert f.read(100) == data[2**20 - 5 : 2**20 + 95]
        assert f.tell() == 2**20 + 95
        f.seek(-7, io.SEEK_END)
        assert f.read(100) == data[-7:]  # short read at the end
        assert f.read(10) == b""
        f.seek(123)
        f.seek(1000, io.SEEK_CUR)
        assert f.read(2 * 2**20) == data[1123 : 1123 + 2 * 2**20]  # a read spanning several blocks


@pytest.mark.s3
def test_remote_reads_fetch_whole_blocks(s3_bucket):
    """Small sequential reads (FFmpeg asks for 32 KiB) cost one ranged GET per block, not per read."""
    data = _random_bytes(1_000_000, seed=4)
    uri = storage.join(s3_bucket, "seq.bin")
    storage.write_bytes(uri, data)
    fs, path = storage.resolve(uri)
    raw = storage.objects._ObjectFile(fs.open_input_file(path), storage.uris._parse(uri), block_size=256 * 1024, max_blocks=2)
    chunks = []
    while chunk := raw.read(32 * 1024):
        chunks.append(chunk)
    assert b"".join(chunks) == data
    assert raw.requests == 4  # ceil(1_000_000 / 262_144), not 31 reads
    raw.seek(900_000)
    assert raw.read(100) == data[900_000:900_100]  # the last block is still cached
    assert raw.requests == 4
    raw.seek(10)
    assert raw.read(100) == data[10:110]  # the first block was evicted (2 kept): fetched again
    assert raw.requests == 5
    raw.close()


# --- atomic writes ---------------------------------------------------------------------------------


def _leftovers(root: str) -> list[str]:
    """Every name under root, temporary files included (list_files hides them)."""
    local = storage.local_path(root)
    if local is not None:
        return sorted(os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs)
    fs, path = storage.resolve(root)
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)))


def test_failed_write_leaves_nothing_under_the_final_name(root):
    uri = storage.join(root, "out", "model.pt")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.open_output(uri, part_size=5 * 2**20) as f:
            f.write(_random_bytes(12 * 2**20))  # two full parts already uploaded on S3
            raise RuntimeError("boom")
    assert not storage.exists(uri)
    assert [n for n in _leftovers(root) if "model.pt" in n] == []

    storage.write_bytes(uri, b"version 1")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.open_output(uri) as f:
            f.write(b"version 2, half written")
            raise RuntimeError("boom")
    assert storage.read_bytes(uri) == b"version 1"  # the old object stays intact
    assert [n.rsplit("/", 1)[-1] for n in _leftovers(root) if "model.pt" in n] == ["model.pt"]


@pytest.mark.s3
def test_a_write_that_raises_sends_nothing_to_s3(s3_bucket, s3_server):
    # Larger than a part: spooled to a local file, never started as a multipart upload.
    client, bucket = s3_server.client(), s3_bucket[len("s3://") :]
    with pytest.raises(KeyboardInterrupt):
        with storage.open_output(storage.join(s3_bucket, "ckpt.bin"), part_size=5 * 2**20) as f:
            f.write(_random_bytes(11 * 2**20))
            raise KeyboardInterrupt
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


@pytest.mark.s3
def test_multipart_upload_of_a_large_object(s3_bucket, s3_server):
    data = _random_bytes(25 * 2**20, seed=5)
    uri = storage.join(s3_bucket, "videos", "large.bin")
    with storage.open_output(uri) as f:
        for start in range(0, len(data), 2**20):
            f.write(data[start : start + 2**20])
        assert f.tell() == len(data)
    assert storage.size(uri) == len(data)
    assert hashlib.sha256(storage.read_bytes(uri)).hexdigest() == hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with storage.open_input(uri) as f:
        while chunk := f.read(3 * 2**20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    head = s3_server.client().head_object(Bucket=s3_bucket[len("s3://") :], Key="videos/large.bin")
    assert head["ETag"].strip('"').endswith("-4")  # 8 MiB parts: 8 + 8 + 8 + 1


# --- errors that say what to fix -------------------------------------------------------------------


def test_missing_key(root):
    storage.write_bytes(storage.join(root, "present.txt"), b"x")
    missing = storage.join(root, "absent", "clip.mp4")
    for call in (storage.read_bytes, storage.size, storage.open_input, storage.delete, storage.list_files):
        with pytest.raises(storage.StorageNotFoundError) as info:
            call(missing)
        assert isinstance(info.value, FileNotFoundError)
        assert not isinstance(info.value, storage.BucketNotFoundError)
        assert missing in str(info.value) and "does not exist" in str(info.value)
    assert storage.exists(missing) is False
    storage.delete(missing, missing_ok=True)


@pytest.mark.s3
def test_missing_bucket_says_create_it(s3_bucket, s3_server):
    uri = "s3://no-such-bucket-vidgen/videos/a.mp4"
    for call in (storage.read_bytes, storage.list_files, storage.exists, storage.open_input, lambda u: storage.write_bytes(u, b"x")):
        with pytest.raises(storage.BucketNotFoundError) as info:
            call(uri)
        message = str(info.value)
        assert "bucket 'no-such-bucket-vidgen' does not exist" in message
        assert s3_server.endpoint in message and "create it or fix the URI" in message
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-vidgen" not in names  # the write did not create it


@pytest.mark.s3
@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_wrong_credentials_say_which_variables(s3_bucket, monkeypatch, wrong):
    uri = storage.join(s3_bucket, "a.bin")
    storage.write_bytes(uri, b"data")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY" if wrong == "secret" else "AWS_ACCESS_KEY_ID", "not-the-right-one")
    calls = {
        "read": lambda: storage.read_bytes(uri),
        "list": lambda: storage.list_files(s3_bucket),
        "write": lambda: storage.write_bytes(storage.join(s3_bucket, "b.bin"), b"x"),
        "size": lambda: storage.size(uri),
    }
    for name, call in calls.items():
        with pytest.raises(storage.StorageAccessError) as info:
            call()
        assert isinstance(info.value, PermissionError), name
        assert "access denied" in str(info.value) and "AWS_ACCESS_KEY_ID" in str(info.value), name
    monkeypatch.undo()


@pytest.mark.parametrize(
    "uri, suggestion",
    [("s4://bucket/x", "s3://"), ("gcs://bucket/x", "gs://"), ("s3a://bucket/x", "s3://"), ("az://c/x", "abfs://"),
     ("fiel:///tmp/x", "file://"), ("https://host/bucket/x", "AWS_ENDPOINT_URL_S3")],
)
def test_misspelt_scheme_suggests_the_right_one(uri, suggestion):
    with pytest.raises(storage.UnsupportedURIError, match="unsupported URI scheme") as info:
        storage.resolve(uri)
    assert suggestion in str(info.value) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "uri, fix",
    [("s3:/bucket/x", "s3://bucket/x"), ("s3:///x", "has no bucket"), ("file://host/x", "file:///absolute"),
     ("s3://b/x?endpoint=h", "allowed are"), ("abfs://container/x", "AZURE_STORAGE_ACCOUNT_NAME")],
)
def test_malformed_uris_say_how_to_write_them(uri, fix, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(storage.UnsupportedURIError) as info:
        storage.resolve(uri)
    assert fix in str(info.value)


# --- resolving URIs (no network) -------------------------------------------------------------------


@pytest.fixture
def clean_aws_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_resolve_local_paths(tmp_path):
    for uri in (str(tmp_path / "a"), f"file://{tmp_path}/a"):
        fs, path = storage.resolve(uri)
        assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "a")
    assert storage.local_path(f"file://{tmp_path}/a") == str(tmp_path / "a")
    assert storage.join(f"file://{tmp_path}", "b", "c.mp4") == f"file://{tmp_path}/b/c.mp4"


def _client(fs: pafs.FileSystem) -> pafs.FileSystem:
    """The store's own client inside what ``resolve`` hands out."""
    return fs.handler.fs


def test_resolve_s3_endpoint_region_and_cache(clean_aws_env):
    env = clean_aws_env
    fs, path = storage.resolve("s3://bucket/videos/a.mp4")
    # Handed out wrapped (every call keeps the retry policy), around the store's own client.
    assert isinstance(fs, pafs.PyFileSystem) and isinstance(_client(fs), pafs.S3FileSystem) and path == "bucket/videos/a.mp4"

    env.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    env.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    target = storage.uris._parse("s3://bucket/k")
    assert (target.settings.endpoint, target.settings.scheme, target.settings.region) == ("127.0.0.1:9000", "http", "us-east-1")
    outer = storage.filesystem_for("s3://bucket/k")
    fs = _client(outer)
    assert fs.region == "us-east-1"  # a custom endpoint never triggers region lookup at AWS
    assert pickle.loads(pickle.dumps(outer)).equals(outer)  # Ray tasks and Ray Data get it by pickle
    assert _client(storage.filesystem_for("s3://other/k")) is fs  # cached per endpoint and credentials

    env.setenv("AWS_REGION", "eu-west-1")
    env.setenv("AWS_ACCESS_KEY_ID", "k2")
    env.setenv("AWS_SECRET_ACCESS_KEY", "s2")
    fs2 = _client(storage.filesystem_for("s3://bucket/k"))
    assert fs2 is not fs and fs2.region == "eu-west-1"
    env.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert storage.uris._parse("s3://bucket/k").settings.endpoint is None

    uri = "s3://bucket/a?endpoint_override=localhost:7000&scheme=http&region=ap-south-1"
    target = storage.uris._parse(uri)
    assert (target.settings.endpoint, target.settings.scheme, target.settings.region) == ("localhost:7000", "http", "ap-south-1")
    assert storage.join(uri, "b", "c.mp4") == "s3://bucket/a/b/c.mp4?endpoint_override=localhost:7000&scheme=http&region=ap-south-1"
    assert storage.uris._parse(storage.join(uri, "b")).uri() == storage.join(uri, "b")

    env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(storage.StorageAccessError, match="AWS_SECRET_ACCESS_KEY is not set"):
        storage.resolve("s3://bucket/k")


def test_resolve_gcs_and_azure_without_network(clean_aws_env):
    fs, path = storage.resolve("gs://bucket/videos/a.mp4")
    assert isinstance(_client(fs), pafs.GcsFileSystem) and path == "bucket/videos/a.mp4"

    uri = "abfs://container@myaccount.dfs.core.windows.net/videos/a.mp4"
    fs, path = storage.resolve(uri)
    assert isinstance(_client(fs), pafs.AzureFileSystem) and path == "container/videos/a.mp4"
    assert _client(fs).__reduce__()[1][0]["account_name"] == "myaccount"
    assert storage.uris._parse(uri).uri() == uri  # listings give back URIs of the same form

    clean_aws_env.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envaccount")
    clean_aws_env.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")
    fs, path = storage.resolve("abfss://container/x")
    args = _client(fs).__reduce__()[1][0]
    assert (args["account_name"], args["account_key"], path) == ("envaccount", "a2V5", "container/x")
    china = _client(storage.resolve("abfs://c@acct.dfs.core.chinacloudapi.cn/x")[0]).__reduce__()[1][0]
    assert china["dfs_storage_authority"] == ".dfs.core.chinacloudapi.cn"


def test_emulator_and_connection_string_conventions(clean_aws_env):
    env = clean_aws_env
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "AZURE_STORAGE_CONNECTION_STRING",
                 "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        env.delenv(name, raising=False)
    env.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    g = storage.uris._parse("gs://b/k").settings
    assert (g.endpoint, g.scheme) == ("127.0.0.1:9023", "http") and "127.0.0.1:9023" in storage.clients._where(storage.uris._parse("gs://b"))
    env.setenv("STORAGE_EMULATOR_HOST", "ftp://x")
    with pytest.raises(storage.UnsupportedURIError, match="STORAGE_EMULATOR_HOST"):
        storage.resolve("gs://b/k")

    # Azurite's shorthand: its well-known account, key and endpoint; the URI needs no account then.
    env.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    target = storage.uris._parse("abfs://container/videos/a.mp4")
    a = target.settings
    assert (a.account, a.blob_authority, a.scheme, a.account_key) == (
        "devstoreaccount1", "127.0.0.1:10000", "http", storage.uris._AZURITE_KEY)
    assert target.uri() == "abfs://container/videos/a.mp4"  # listings give back the form the user wrote
    args = _client(storage.resolve("abfs://container/x")[0]).__reduce__()[1][0]
    assert (args["blob_storage_authority"], args["blob_storage_scheme"]) == ("127.0.0.1:10000", "http")
    # A connection string speaks for its own account only: another account in the URI does not get its key.
    other = storage.uris._parse("abfs://c@elsewhere.dfs.core.windows.net/x").settings
    assert other.account_key is None and other.blob_authority is None
    env.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=acct;AccountKey")
    with pytest.raises(storage.UnsupportedURIError, match="without '='"):
        storage.resolve("abfs://c/x")


def test_join_keeps_scheme_and_handles_slashes():
    # URIs that carry their endpoint end in a query: names and parents must look past it.
    q = "s3://b/runs/ckpt_2/meta.json?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.basename(q) == "meta.json"
    assert storage.dirname(q) == "s3://b/runs/ckpt_2?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.basename("/data/x/a.mp4") == "a.mp4" and storage.dirname("/data/x/a.mp4") == "/data/x"
    assert storage.join("s3://b/", "x/", "/y.mp4") == "s3://b/x/y.mp4"
    assert storage.join("gs://b/prefix", "") == "gs://b/prefix"
    assert storage.join("/data/run", "ckpt", "meta.json") == "/data/run/ckpt/meta.json"


# --- retries ---------------------------------------------------------------------------------------


class _Flaky:
    def __init__(self, errors: list[BaseException]) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_errors_are_retried_with_backoff_within_the_time_budget(monkeypatch):
    sleeps: list[float] = []
    flaky = _Flaky([
        OSError("When reading 'k' in bucket 'b': AWS Error SLOW_DOWN during GetObject operation: reduce your rate"),
        ConnectionResetError("Connection reset by peer"),
    ])
    assert storage.with_retries(flaky, base_delay=0.1, max_delay=0.15, sleep=sleeps.append) == "ok"
    assert flaky.calls == 3
    assert len(sleeps) == 2 and 0.05 <= sleeps[0] <= 0.1 and 0.075 <= sleeps[1] <= 0.15  # upper half, capped

    # A fake clock: the waits add up until the next one would pass the budget, then the error surfaces.
    now = [0.0]
    always = _Flaky([TimeoutError("timed out")] * 100)
    with pytest.raises(TimeoutError) as info:
        storage.with_retries(always, seconds=10, sleep=lambda d: now.__setitem__(0, now[0] + d), clock=lambda: now[0],
                             what="reading s3://b/k")
    note = "".join(info.value.__notes__)
    assert 6 <= always.calls <= 9 and now[0] <= 10 and "VIDGEN_STORAGE_RETRY_S=10" in note, (always.calls, now, note)
    # The budget comes from the environment; 0 tries once.
    monkeypatch.setenv("VIDGEN_STORAGE_RETRY_S", "0")
    once = _Flaky([TimeoutError("timed out")] * 3)
    with pytest.raises(TimeoutError):
        storage.with_retries(once, sleep=lambda d: pytest.fail("must not sleep"))
    assert once.calls == 1
    monkeypatch.setenv("VIDGEN_STORAGE_RETRY_S", "soon")
    with pytest.raises(storage.UnsupportedURIError, match="VIDGEN_STORAGE_RETRY_S"):
        storage.retry_seconds()


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError("Path does not exist 'b/k'"), storage.StorageAccessError("access denied"),
     OSError("AWS Error ACCESS_DENIED during HeadObject operation: No response body."),
     OSError("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation")],
)
def test_permanent_errors_are_not_retried(error):
    flaky = _Flaky([error])
    with pytest.raises(type(error)):
        storage.with_retries(flaky, sleep=lambda s: pytest.fail("must not sleep"))
    assert flaky.calls == 1


class _SlowDownHandler(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that always answers 503 SlowDown."""

    def _reply(self) -> None:
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _reply

    def log_message(self, *args) -> None:
        pass


@pytest.mark.s3
def test_real_errors_are_classified(s3_bucket, s3_server):
    """pyarrow's own error texts: 503/SlowDown and refused connections are transient; a missing
    key, a missing bucket and a bad signature are not."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowDownHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slow = pafs.S3FileSystem(access_key="a", secret_key="b", region="us-east-1", scheme="http",
                                 endpoint_override=f"127.0.0.1:{server.server_port}")
        with pytest.raises(OSError) as busy:
            slow.get_file_info(pafs.FileSelector("bucket/prefix"))
    finally:
        server.shutdown()
    assert storage.is_transient(busy.value), busy.value

    good = storage.filesystem_for(s3_bucket)
    bucket = s3_bucket[len("s3://") :]
    bad = pafs.S3FileSystem(access_key=s3_server.access_key, secret_key="wrong", region="us-east-1",
                            endpoint_override=s3_server.endpoint)
    permanent = []
    for call in (lambda: good.open_input_stream(f"{bucket}/missing"),
                 lambda: good.get_file_info(pafs.FileSelector("no-such-bucket-vidgen/x")),
                 lambda: bad.get_file_info(pafs.FileSelector(bucket))):
        with pytest.raises(OSError) as info:
            call()
        permanent.append(info.value)
    assert [storage.is_transient(e) for e in permanent] == [False, False, False], permanent


# --- PyAV through open_input -----------------------------------------------------------------------


@pytest.mark.s3
def test_pyav_decodes_a_video_from_s3(s3_bucket, shared_videos):
    import av

    local = shared_videos / VIDEO
    uri = storage.join(s3_bucket, "clips", VIDEO)
    storage.copy(str(local), uri)
    assert storage.size(uri) == local.stat().st_size

    def decode(source) -> tuple[list[np.ndarray], np.ndarray]:
        with av.open(source) as container:
            stream = container.streams.video[0]
            first = [f.to_ndarray(format="rgb24") for _, f in zip(range(5), container.decode(stream))]
            container.seek(int(2.0 / stream.time_base), stream=stream)  # random access: back to a keyframe
            after_seek = next(container.decode(stream)).to_ndarray(format="rgb24")
        return first, after_seek

    remote_first, remote_seek = decode(storage.open_input(uri))
    local_first, local_seek = decode(str(local))
    assert len(remote_first) == 5
    assert all(np.array_equal(a, b) for a, b in zip(remote_first, local_first))
    assert np.array_equal(remote_seek, local_seek)
