"""Listing, reading (block-cached ranged reads) and atomic writing (local temp file + rename; object
stores spooled locally and uploaded whole), folders, deletion and copies."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import fsspec.spec
import pyarrow as pa
import pyarrow.fs as pafs

from .clients import _filesystem, _run, _s3_client, _translate, _translated, _bucket_missing, _bucket_error
from .errors import StorageError, UnsupportedURIError
from .uris import _parse, _S3Settings, _Target


# Temporary names written by this module; listings never show them.
TMP_MARKER = ".vidgen-tmp-"
DEFAULT_PART_SIZE = 8 * 2**20  # S3 multipart part size; S3 wants >= 5 MiB for every part but the last
DEFAULT_READ_BLOCK = 4 * 2**20  # remote reads fetch aligned blocks of this size (one ranged GET each)


@dataclass(frozen=True)
class FileEntry:
    """One listed file. ``uri`` can be passed back to every function here; ``path`` is what the
    pyarrow FileSystem from ``resolve`` takes."""

    uri: str
    path: str
    size: int


# Listing and metadata


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


# Reading


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


# Atomic writing


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


# Folders, deletion, copies


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
