"""What ``resolve`` hands to code outside this package (Ray Train, Ray Data, Tune): a pyarrow filesystem
whose every call keeps this package's retry policy, block-cached reads and spooled uploads."""

from __future__ import annotations

from typing import Callable, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from .clients import _LOCAL_FS, _filesystem, _run
from .errors import StorageError
from .objects import DEFAULT_READ_BLOCK, _move, _ObjectFile, _SpooledUpload
from .uris import _parse, _Target

T = TypeVar("T")


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
